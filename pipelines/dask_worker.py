"""dask's preload module for the workers of a `--local_workers` cluster (`pipelines.dask_runner`).

A worker imports what its tasks need when it starts, while the launcher builds the pipeline, instead of at its
first task. Beam's import logs a warning through the root logger, which would print it from every worker: a
NullHandler is parked there first, as the entry points do (pipelines.entry).
"""

import logging


def dask_setup(worker) -> None:
    """dask's preload hook, called once in each worker process as it starts."""
    del worker
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    import pipelines.dask_partitions  # noqa: F401  (Beam's runner modules: the heavy part of a first task)
