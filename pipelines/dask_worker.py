"""dask's preload modules for the workers of our Dask runner, and what every `--local_workers` worker runs as it
starts (`pipelines.local_cluster`, whose fork server imports this module first).

`dask worker ... --preload pipelines.dask_worker` makes a worker import Beam's runner modules as it starts, instead
of at its first task; `--preload pipelines.augment.worker` and `--preload pipelines.corpus.worker` (either or both)
also import that pipeline's worker modules (`local_cluster.WORKER_MODULES`: for the augmentation, torch and
transformers' BERT modules, about 5 s of CPU that a fresh worker otherwise spends at the start of a run, competing
with the command's own start). A module each, not an option: the dask CLI hands a preload's options to it only where
the scheduler's address is given before them, not with `--scheduler-file`.

Beam's import logs a warning through the root logger, which would print it from every worker: a NullHandler is
parked there first, as the entry points do (pipelines.entry). A failed task reaches the launcher, which prints its
one line: the worker does not also log it with its traceback (unless TINYBERT_TRACEBACK=1).
"""

import importlib
import logging
import os
from typing import Optional

from pipelines.entry import quiet_root_logger
from pipelines.local_cluster import WORKER_MODULES

# Imported first by the local cluster's fork server too (pipelines.local_cluster), before it imports Beam.
quiet_root_logger()
_SET_UP = set()  # ids of the workers set up in this process (a process runs one)


def dask_setup(worker) -> None:
    """dask's preload hook, called once in each worker process as it starts."""
    setup(worker)


def setup(worker, pipeline: Optional[str] = None) -> None:
    """The worker's set-up (once per process, whichever preloads ask), then `pipeline`'s worker modules."""
    if id(worker) not in _SET_UP:
        _SET_UP.add(id(worker))
        quiet_root_logger()
        if not os.environ.get("TINYBERT_TRACEBACK"):
            logging.getLogger("distributed.worker").addFilter(_NoFailedTaskLog())
        import pipelines.dask_partitions  # noqa: F401  (Beam's runner modules: the heavy part of a first task)
    for module in WORKER_MODULES.get(pipeline, ()):
        importlib.import_module(module)


class _NoFailedTaskLog(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Compute Failed")
