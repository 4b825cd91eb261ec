"""dask's preload module for workers that run augmentations: `dask worker ... --preload pipelines.augment.worker`
imports Beam's runner modules, torch and transformers' BERT modules as each worker starts (`pipelines.dask_worker`)."""

from pipelines import dask_worker


def dask_setup(worker) -> None:
    """dask's preload hook, called once in each worker process as it starts."""
    dask_worker.setup(worker, "pipelines.augment")
