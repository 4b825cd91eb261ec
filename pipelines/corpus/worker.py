"""dask's preload module for workers that build corpora: `dask worker ... --preload pipelines.corpus.worker` imports
Beam's runner modules and the corpus's DoFn modules as each worker starts (`pipelines.dask_worker`)."""

from pipelines import dask_worker


def dask_setup(server) -> None:
    """dask's preload hook, called once in each worker, nanny or scheduler as it starts (`pipelines.dask_worker`)."""
    dask_worker.setup(server, "pipelines.corpus")
