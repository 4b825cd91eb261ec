"""Console-script entry points (`tinybert-augment`, `tinybert-corpus`), light until they run.

Beam's import logs a warning through the root logger, which configures logging on the spot and prints a stray
line before the pipeline's own logging is set up. An entry point parks a NullHandler on the root logger first, so
that nothing prints until `cli.configure_logging` replaces it. A `--local_workers` cluster is started before the
pipeline is imported (`pipelines.local_cluster`).
"""

import importlib
import logging
import sys
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


def augment(argv: Optional[List[str]] = None) -> None:
    _run("pipelines.augment", argv)


def corpus(argv: Optional[List[str]] = None) -> None:
    _run("pipelines.corpus", argv)
