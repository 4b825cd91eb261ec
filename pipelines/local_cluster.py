"""The cluster of a Dask run, started or connected in the background as early as the command knows it
(`pipelines.dask_runner`): the `--local_workers N` cluster (N single-threaded dask worker processes of this machine,
stopped at the end of the run), or a Client of the cluster that `--dask_client_address` (or `--dask_scheduler_file`)
names, whose workers are then asked to import the pipeline's modules.

Beam-free, so that the entry point can start either before it imports the pipeline (Beam's import is a second of a
run's serial start-up, 2.5 s passed before the runner connected): `start_early(argv, pipeline)` reads the command
line, and the runner's `start()` / `client_start()` take what it started when they ask for the same. What nobody
takes (the command stopped on a bad option or input) is closed when the process exits.
"""

import atexit
import functools
import importlib
import logging
import threading
from typing import Any, Callable, Dict, Optional, Sequence

from contract.options import raw_value

# Every spelling of `--runner` that means our Dask runner (pipelines.runners).
DASK_RUNNER_NAMES = ("daskrunner", "dask", "apache_beam.runners.dask.dask_runner.daskrunner")
# The Client keyword of each option that names a running cluster, as Beam's DaskOptions gives them.
_CLUSTER_FLAGS = (("--dask_client_address", "address"), ("--dask_scheduler_file", "scheduler_file"))

# The DoFn modules each pipeline's workers import as they start (through the fork server, below).
WORKER_MODULES = {
    "pipelines.corpus": ("pipelines.corpus.read", "pipelines.corpus.transforms"),
    # transformers' BERT modules: 2.2 s of a worker's first masked-LM task, before the model's 0.1-0.5 s load
    "pipelines.augment": ("pipelines.augment.transforms", "pipelines.augment.scoring",
                          "transformers.models.auto.modeling_auto", "transformers.models.bert.modeling_bert"),
}
_EARLY: dict = {}  # {"workers": N, "modules": (...), "start": ClusterStart} or {"client": ClientStart} of start_early


def start_early(argv: Sequence[str], pipeline: str) -> None:
    """Starts the cluster of a command line's `--local_workers N` (or `=N`), if it has one with a number >= 1; else,
    with `--runner=DaskRunner` (any spelling) and a cluster's address or scheduler file, connects to that cluster.
    Anything else is left to the command's own option parsing."""
    modules = WORKER_MODULES.get(pipeline, ())
    value = raw_value(argv, "--local_workers")
    if value is not None:
        if value.isdigit() and int(value) >= 1:
            _EARLY.update(workers=int(value), modules=modules, start=ClusterStart(int(value), modules))
        return
    runner = raw_value(argv, "--runner")
    kwargs = {name: value for flag, name in _CLUSTER_FLAGS if (value := raw_value(argv, flag))}
    if runner is not None and runner.lower() in DASK_RUNNER_NAMES and kwargs:
        _EARLY.update(client=ClientStart(kwargs, modules))


def start(workers: int, worker_modules: Sequence[str]) -> "ClusterStart":
    """The cluster the entry point started for this size and pipeline, else one started now."""
    early, early_workers, early_modules = (_EARLY.pop(name, None) for name in ("start", "workers", "modules"))
    if early is not None and early_workers == workers and tuple(early_modules) == tuple(worker_modules):
        return early
    return ClusterStart(workers, worker_modules)


def client_start(kwargs: Dict[str, Any], modules: Sequence[str]) -> "ClientStart":
    """The connection the entry point started to the cluster `kwargs` name, for these modules, else one started
    now."""
    early = _EARLY.pop("client", None)
    if early is not None and early.kwargs == kwargs and early.modules == tuple(modules):
        return early
    return ClientStart(kwargs, modules)


class BackgroundStart:
    """`start()` run in a daemon thread from construction on; `take()` waits for its result and raises its error. A
    result nobody took (the command stopped on a bad option or input after choosing its runner) is closed when the
    process exits; without `wait_at_exit`, only if it is there by then (a Client still trying an address that does
    not answer does not hold the exit for dask's connect timeout)."""

    def __init__(self, start: Callable[[], Any], name: str, *, wait_at_exit: bool = True):
        self._wait_at_exit = wait_at_exit
        self._value = None
        self._error: Optional[BaseException] = None
        self._taken = False
        self._thread = threading.Thread(target=self._run, args=(start,), name=name, daemon=True)
        self._thread.start()
        atexit.register(self._close_untaken)

    def _run(self, start: Callable[[], Any]) -> None:
        try:
            self._value = start()
        except BaseException as error:  # raised by take(), in the command's thread
            self._error = error

    def take(self):
        self._thread.join()
        self._taken = True
        if self._error is not None:
            raise self._error
        return self._value

    def _close_untaken(self) -> None:
        if self._taken or (not self._wait_at_exit and self._thread.is_alive()):
            return
        self._thread.join()
        if self._value is not None:
            self._value.close()


class ClientStart(BackgroundStart):
    """A Client of the cluster that `kwargs` name, connected in the background, and on each of the cluster's workers
    a task (fire and forget) that imports `modules`."""

    def __init__(self, kwargs: Dict[str, Any], modules: Sequence[str]):
        self.kwargs = dict(kwargs)
        self.modules = tuple(modules)
        super().__init__(functools.partial(_connect, self.kwargs, self.modules), "dask-client", wait_at_exit=False)


def _connect(kwargs: Dict[str, Any], modules: Sequence[str]):
    import dask.distributed as ddist
    client = ddist.Client(**kwargs)
    if modules:
        for address in client.scheduler_info().get("workers", {}):
            ddist.fire_and_forget(client.submit(import_modules, modules, workers=[address],
                                                allow_other_workers=False, pure=False))
    return client


def import_modules(modules: Sequence[str]) -> None:
    """Imports a pipeline's worker modules ahead of its first tasks, on a worker; a module that does not import is
    left to the task that needs it, which reports it."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:
            pass


class ClusterStart(BackgroundStart):
    """`local_cluster(workers, worker_modules)` started in the background."""

    def __init__(self, workers: int, worker_modules: Sequence[str]):
        # The cluster's own lines (start, stop, a worker slow to exit) are not the run's news; its errors are.
        logging.getLogger("distributed").setLevel(logging.ERROR)
        _start_fork_server(worker_modules)
        super().__init__(lambda: local_cluster(workers, worker_modules), "local-dask-cluster")


def _fork_server_preload(worker_modules: Sequence[str]) -> list:
    return ["pipelines.dask_worker", "distributed", "pipelines.dask_partitions", *worker_modules]


def _start_fork_server(worker_modules: Sequence[str]) -> None:
    """Starts the fork server now, where the platform has one: it imports the workers' modules (1.2 s for the corpus)
    while this process imports dask and the pipeline, instead of after this process imported dask (0.6 s later),
    which left the workers' start the last thing a short run waited for. Once running, it serves `local_cluster`."""
    import multiprocessing
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return
    from multiprocessing import forkserver
    multiprocessing.get_context("forkserver").set_forkserver_preload(_fork_server_preload(worker_modules))
    forkserver.ensure_running()


def local_cluster(workers: int, worker_modules: Sequence[str] = ()):
    """A dask.distributed cluster of `workers` single-threaded worker processes on 127.0.0.1, without dashboard.

    Where the platform has it, worker processes are forked from one `multiprocessing` fork server that imported
    distributed, Beam's runner modules and `worker_modules` (the pipeline's DoFn modules: Beam, tokenizers, pyarrow,
    torch) once: spawned workers each imported them again, about 1.5 s of CPU per worker for the corpus (more with
    torch), while the command itself was still starting, and took 0.5 s to stop. The fork server starts from the
    launcher's `sys.path`, without the launcher's threads or state. Elsewhere workers are spawned, as dask does by
    default. Each worker runs `pipelines.dask_worker` as it starts.
    """
    import multiprocessing

    import dask
    import dask.distributed as ddist
    from pipelines.dask_worker import QUIET_TIMERS
    quiet = {name: seconds for name, _, _, seconds in QUIET_TIMERS}
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    if method == "forkserver":
        multiprocessing.get_context("forkserver").set_forkserver_preload(_fork_server_preload(worker_modules))
        import distributed.utils
        # dask would otherwise replace that list with its own (and import every optional package it knows here).
        distributed.utils._forkserver_preload_set = True
    # dask's transfer estimate stays its default (100 MB/s): at 1 GB/s (what processes of one machine reach) the
    # scheduler moved more tasks away from their inputs, and the 100 MB text took 20.4-22.1 s instead of 16.9-17.7 s.
    # No dashboard, so no one reads the workers' statistical profiles: none is taken (the sampling wakes each
    # worker's event loop 100 times a second to read the task thread's stack), and the event loops' health ticks
    # come every second, not 50 times (`pipelines.dask_worker.QUIET_TIMERS`).
    with dask.config.set({"distributed.worker.multiprocessing-method": method,
                          "distributed.worker.profile.enabled": False,
                          "distributed.admin.tick.interval": f"{quiet['tick']}s"}):
        return ddist.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, preload=["pipelines.dask_worker"],
                                  silence_logs=logging.ERROR,
                                  # No dashboard; the scheduler's HTTP endpoint on a free port, not 8787.
                                  scheduler_kwargs={"dashboard_address": ":0"})
