"""`AllLeavesDaskRunner`: what `--runner=DaskRunner` means. It translates a Beam pipeline into one dask graph
(`pipelines.dask_translation`, where the module docstring says how) and runs it on a dask.distributed cluster: the
one `--dask_client_address` names (connected, and its workers warmed, while the command starts), or with
`--local_workers` a cluster of this machine's processes that the command starts and stops (`pipelines.local_cluster`).
"""

import uuid
from typing import Optional, Sequence

from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunner, DaskRunnerResult
from apache_beam.runners.dask.overrides import dask_overrides
from apache_beam.runners.runner import PipelineState

from pipelines import dask_partitions as tasks
from pipelines import local_cluster
from pipelines.dask_translation import _Translator
from pipelines.runners import names_a_cluster


class AllLeavesDaskRunner(DaskRunner):
    """Runs a pipeline on a dask.distributed cluster (module docstring): the one `--dask_client_address` names, or,
    with `local_workers`, a cluster of that many single-threaded worker processes of this machine, started for the
    run and stopped at its end."""

    def __init__(self, local_workers: Optional[int] = None, worker_modules: Sequence[str] = (), options=None):
        super().__init__()
        # The local cluster the entry point started, else one started now, in the background: its workers start while
        # the command loads the tokenizer or model, claims the output and builds the pipeline.
        self._cluster_start = local_cluster.start(local_workers, worker_modules) if local_workers else None
        # A cluster the options name: connected by the entry point as the command started, else now, in the
        # background, and its workers import the pipeline's modules while the command checks its resources (a
        # shell-started worker otherwise imports them at its first tasks). Only a named one: a Client without an
        # address starts a cluster of its own, which a command that stops on a bad input must not have started.
        kwargs = _client_kwargs(options)[0] if options is not None and not local_workers else {}
        self._client_start = local_cluster.client_start(kwargs, worker_modules) if names_a_cluster(kwargs) else None

    def run_pipeline(self, pipeline, options):
        import dask.distributed as ddist
        dask_options, bag_kwargs = _client_kwargs(options)
        cluster = None
        if self._cluster_start is not None:
            cluster = self._cluster_start.take()
            client = ddist.Client(cluster)
        elif self._client_start is not None and self._client_start.kwargs == dask_options:
            client = self._client_start.take()
        else:
            client = ddist.Client(**dask_options)
        pipeline.replace_all(dask_overrides())
        threads = sum(client.nthreads().values()) or 1
        # A Reshuffle cuts into more than twice the cluster's threads: dask then places those pieces as root tasks,
        # spread over the workers, instead of on the one worker that holds the reshuffled partition (its work items
        # are small: what follows a piece runs where the piece is).
        partitions = bag_kwargs.get("npartitions")
        translator = _Translator(partitions=partitions or 2 * threads, spread=partitions or 4 * threads,
                                 root_spread=partitions or 16 * threads, run_id=uuid.uuid4().hex)
        pipeline.visit(translator)
        futures = client.compute(translator.leaves())
        return _ClosingDaskRunnerResult(client, futures, translator.run_id, cluster)


def _client_kwargs(options):
    """(the dask Client's keyword arguments, the bag options) of a run's options."""
    dask_options = options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
    bag_kwargs = DaskOptions._extract_bag_kwargs(dask_options)
    return dask_options, bag_kwargs


class _ClosingDaskRunnerResult(DaskRunnerResult):
    """Waits for every leaf without bringing its data to the client; then releases the workers' DoFns of the run
    and closes the client it opened (and the local cluster it started), so that nothing outlives the run."""

    def __init__(self, client, futures, run_id: str, cluster=None):
        super().__init__(client, futures)
        self.run_id = run_id
        self.cluster = cluster

    def wait_until_finish(self, duration=None):
        import dask.distributed as ddist
        try:
            ddist.wait(self.futures, timeout=None if duration is None else duration / 1000)
            for future in self.futures:
                if future.status == "error":
                    future.result()  # raises the task's exception
            self._state = PipelineState.DONE
        except ddist.TimeoutError:
            return self._state
        except BaseException:
            self._state = PipelineState.FAILED
            raise
        finally:
            if self._state != PipelineState.RUNNING:
                self._release()
        return self._state

    def _release(self) -> None:
        try:
            self.client.run(tasks.forget_run, self.run_id)
        except Exception:  # a worker gone: its DoFns went with it
            pass
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
