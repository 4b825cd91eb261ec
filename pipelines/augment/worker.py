"""dask's preload module for workers that run augmentations: `dask worker ... --preload pipelines.augment.worker`
imports Beam's runner modules, torch and transformers' BERT modules as each worker starts (`pipelines.dask_worker`)."""

from pipelines import dask_worker


def dask_setup(server) -> None:
    """dask's preload hook, called once in each worker, nanny or scheduler as it starts (`pipelines.dask_worker`)."""
    dask_worker.setup(server, "pipelines.augment")
