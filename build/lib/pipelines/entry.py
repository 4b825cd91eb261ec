"""Console-script entry points (`tinybert-augment`, `tinybert-corpus`), light until they run.

Beam's import logs a warning through the root logger, which configures logging on the spot and prints a stray
line before the pipeline's own logging is set up. An entry point parks a NullHandler on the root logger first, so
that nothing prints until `cli.configure_logging` replaces it.
"""

import importlib
import logging
from typing import List, Optional


def _run(module: str, argv: Optional[List[str]]) -> None:
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    importlib.import_module(module).main(argv)


def augment(argv: Optional[List[str]] = None) -> None:
    _run("pipelines.augment", argv)


def corpus(argv: Optional[List[str]] = None) -> None:
    _run("pipelines.corpus", argv)
