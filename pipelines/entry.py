"""Console-script entry points (`tinybert-augment`, `tinybert-corpus`), light until they run.

Beam's import logs a warning through the root logger, which configures logging on the spot and prints a stray
line before the pipeline's own logging is set up. An entry point parks a NullHandler on the root logger first, so
that nothing prints until `cli.configure_logging` replaces it. A `--local_workers` cluster is started before the
pipeline is imported (`pipelines.local_cluster`). A command that finished exits without the interpreter's teardown
(`_exit_finished`).
"""

import atexit
import importlib
import logging
import os
import sys
import threading
from typing import List, Optional

from pipelines import local_cluster


def quiet_root_logger() -> None:
    """A NullHandler on the root logger unless it has a handler: Beam's import then prints nothing (module docstring).
    Also called by `python -m pipelines.demo_assets` and in every `--local_workers` worker (`pipelines.dask_worker`)."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())


def _run(module: str, argv: Optional[List[str]]) -> None:
    quiet_root_logger()
    # A --local_workers cluster starts now, its workers importing while this process imports the pipeline.
    local_cluster.start_early(sys.argv[1:] if argv is None else argv, module)
    importlib.import_module(module).main(argv)
    if argv is None:  # a command line (console script or `python -m`), not a call from Python
        _exit_finished()


def _exit_finished() -> None:
    """Ends a command that finished: its outputs are written and closed, its workers stopped. The exit handlers run
    and the standard streams are flushed as at any exit, then the process ends without the interpreter's teardown
    of every module and object it still holds (Beam's, the graph's, the tokenizer's): 0.4 s of every corpus run on
    the 2-core machine of docs/scaling.md, on every runner. Where a thread that is not a daemon still runs, the
    process exits the usual way, which waits for it."""
    if any(thread is not threading.main_thread() and not thread.daemon and thread.is_alive()
           for thread in threading.enumerate()):
        return
    atexit._run_exitfuncs()  # pylint: disable=protected-access
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to write there
            pass
    os._exit(0)


def augment(argv: Optional[List[str]] = None) -> None:
    _run("pipelines.augment", argv)


def corpus(argv: Optional[List[str]] = None) -> None:
    _run("pipelines.corpus", argv)
