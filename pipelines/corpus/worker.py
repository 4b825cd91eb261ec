"""dask's preload module for workers that build corpora: `dask worker ... --preload pipelines.corpus.worker` imports
Beam's runner modules and the corpus's DoFn modules as each worker starts (`pipelines.dask_worker`)."""

from pipelines import dask_worker


def dask_setup(worker) -> None:
    """dask's preload hook, called once in each worker process as it starts."""
    dask_worker.setup(worker, "pipelines.corpus")
