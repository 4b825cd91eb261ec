"""dask's preload module for the workers of a `--local_workers` cluster (`pipelines.dask_runner`), and the first module
its fork server imports.

A worker imports what its tasks need when it starts, while the launcher builds the pipeline, instead of at its
first task. Beam's import logs a warning through the root logger, which would print it from every worker: a
NullHandler is parked there first, as the entry points do (pipelines.entry). A failed task reaches the launcher,
which prints its one line: the worker does not also log it with its traceback (unless TINYBERT_TRACEBACK=1).
"""

import logging
import os

from pipelines.entry import quiet_root_logger

# Imported first by the local cluster's fork server too (pipelines.local_cluster), before it imports Beam.
quiet_root_logger()


def dask_setup(worker) -> None:
    """dask's preload hook, called once in each worker process as it starts."""
    del worker
    quiet_root_logger()
    if not os.environ.get("TINYBERT_TRACEBACK"):
        logging.getLogger("distributed.worker").addFilter(_NoFailedTaskLog())
    import pipelines.dask_partitions  # noqa: F401  (Beam's runner modules: the heavy part of a first task)


class _NoFailedTaskLog(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Compute Failed")
