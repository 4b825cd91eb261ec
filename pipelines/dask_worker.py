"""dask's preload modules for the workers of our Dask runner, and what every `--local_workers` worker runs as it
starts (`pipelines.local_cluster`, whose fork server imports this module first).

`dask worker ... --preload pipelines.dask_worker` makes a worker import Beam's runner modules as it starts, instead
of at its first task; `--preload pipelines.augment.worker` and `--preload pipelines.corpus.worker` (either or both)
also import that pipeline's worker modules (`local_cluster.WORKER_MODULES`: for the augmentation, torch and
transformers' BERT modules, about 5 s of CPU that a fresh worker otherwise spends at the start of a run, competing
with the command's own start). A module each, not an option: the dask CLI hands a preload's options to it only where
the scheduler's address is given before them, not with `--scheduler-file`.

The same modules serve as the scheduler's and the nannies' preloads (`dask scheduler --preload pipelines.dask_worker`,
`dask worker ... --preload-nanny pipelines.augment.worker`): there they only slow two of the server's timers, as in
a worker (`quiet_timers`), and import nothing.

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


# Two timers of every dask server's event loop, which wake it whatever the load: (periodic callback, its setting,
# distributed's default in seconds, ours). The loop-health tick (20 ms: a block is reported past 3 s, which a 1 s
# tick still sees) and a worker's statistical profile sample (10 ms: read the task thread's stack). Idle on the
# 2-core AMD EPYC, a scheduler took 2.3% of a core, the nanny process of 2 workers 4.0% and each worker 4.0%; with
# these 0.6%, 1.6% and 0.9-1.0% (the rest are the memory monitors, left as they are). A busy worker's task thread
# shares the interpreter with those wake-ups, and on a small machine the scheduler and nanny share its cores.
QUIET_TIMERS = (("tick", "distributed.admin.tick.interval", 0.02, 1.0),
                ("profile", "distributed.worker.profile.interval", 0.01, 0.1))


def dask_setup(server) -> None:
    """dask's preload hook, called once in each worker, nanny or scheduler as it starts."""
    setup(server)


def setup(server, pipeline: Optional[str] = None) -> None:
    """A worker's set-up (once per process, whichever preloads ask), then `pipeline`'s worker modules; a scheduler's
    or nanny's: its timers only."""
    quiet_timers(server)
    from distributed import Worker
    if not isinstance(server, Worker):
        return
    worker = server
    if id(worker) not in _SET_UP:
        _SET_UP.add(id(worker))
        quiet_root_logger()
        if not os.environ.get("TINYBERT_TRACEBACK"):
            logging.getLogger("distributed.worker").addFilter(_NoFailedTaskLog())
        import pipelines.dask_partitions  # noqa: F401  (Beam's runner modules: the heavy part of a first task)
    for module in WORKER_MODULES.get(pipeline, ()):
        importlib.import_module(module)


def quiet_timers(server) -> None:
    """`QUIET_TIMERS` on `server`'s event loop, each where its setting is distributed's default (a value a user
    chose stays)."""
    import dask
    from dask.utils import parse_timedelta
    for name, setting, default, quiet in QUIET_TIMERS:
        callback = server.periodic_callbacks.get(name)
        if callback is not None and parse_timedelta(dask.config.get(setting), default="ms") == default:
            callback.callback_time = quiet * 1000  # read when it next reschedules (distributed does the same)


class _NoFailedTaskLog(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Compute Failed")
