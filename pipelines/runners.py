"""Runner resolution shared by both pipelines.

`--runner=DaskRunner` (or `dask`, or Beam's class path) means `pipelines.dask_runner.AllLeavesDaskRunner`, our own
translation onto a dask.distributed cluster; it is imported only then, so other runs do not pay for importing
dask. `--local_workers N` means the same runner on a cluster of N single-threaded worker processes of this machine
that the run starts and stops: the DirectRunner's multi-processing mode routes every stage's data through the
launching process (docs/scaling.md), so it cannot use N cores for N workers. `--runner=DirectRunner` (or `direct`,
the default) means Beam's DirectRunner without its Prism attempt (below). Every other runner name goes to Beam as
given.

Beam's DirectRunner (2.68 and later) first tries to run a pipeline on Prism, a Go runner whose binary it downloads from
GitHub at run time, and falls back to its in-process FnApiRunner when that fails. For a user that meant: a download
during a run where the network allows it (and a wait where a firewall drops it), a run on an engine this project does
not test (Prism names metrics differently and raises other errors, per Beam's own notes on that change), and, where
the download fails, a `beam-temp*` folder left in the temp directory by every run. Beam's advice for pipelines that
depend on the local runner's behaviour is to pin the FnApiRunner; `DirectRunner.is_interactive()` does that while
keeping the DirectRunner's own choice between the FnApiRunner and its bundle-based fallback, and its
`--direct_num_workers` / `--direct_running_mode` options (it only turns off the Prism attempt).
"""

from typing import Optional, Sequence

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from contract.errors import UserError
from pipelines.local_cluster import DASK_RUNNER_NAMES

# A composite transform's annotation: each group of its GroupByKey costs far more to process than to move, so a runner
# that can cuts its groups into more tasks than another GroupByKey's (our Dask runner). Its value says how many:
# FINE_GROUPS, many small tasks (the augmentation's masked-LM batches: their input is small), or FEW_GROUPS, a few
# per worker (the corpus's random-next buckets: every document crosses that shuffle, and each more partition is a
# piece task per input partition).
COSTLY_GROUPS = "costly_groups"
FINE_GROUPS, FEW_GROUPS = "fine", "few"
DIRECT_RUNNER_NAMES = ("directrunner", "direct", "apache_beam.runners.direct.direct_runner.directrunner",
                       "switchingdirectrunner", "apache_beam.runners.direct.direct_runner.switchingdirectrunner")


def resolve_runner(options: PipelineOptions, *, local_workers: Optional[int] = None,
                   worker_modules: Sequence[str] = ()):
    """The runner object (or name) for `options`: our Dask runner for any spelling of DaskRunner (on a local
    cluster of `local_workers` processes where given, which import `worker_modules` as they start; else on the
    cluster the options name, whose workers are asked to import them as the command starts), the
    DirectRunner without its Prism attempt for any spelling of DirectRunner (or none).

    Raises:
      UserError: `local_workers` with another runner, or with a cluster's address.
    """
    name = options.view_as(StandardOptions).runner
    if local_workers:
        if isinstance(name, str) and name.lower() not in DIRECT_RUNNER_NAMES + DASK_RUNNER_NAMES:
            raise UserError(f"--local_workers runs the pipeline on a Dask cluster of this machine: it does not go "
                            f"with --runner={name}")
        if names_a_cluster(options.get_all_options()):
            raise UserError("--local_workers starts a cluster of its own: drop it to use the cluster of "
                            "--dask_client_address (or --dask_scheduler_file)")
        from pipelines.dask_runner import AllLeavesDaskRunner
        return AllLeavesDaskRunner(local_workers=local_workers, worker_modules=worker_modules)
    if name is None or (isinstance(name, str) and name.lower() in DIRECT_RUNNER_NAMES):
        from apache_beam.runners.direct.direct_runner import DirectRunner
        runner = DirectRunner()
        runner.is_interactive()  # its one effect: the DirectRunner does not try Prism (see the module docstring)
        return runner
    if isinstance(name, str) and name.lower() in DASK_RUNNER_NAMES:
        from pipelines.dask_runner import AllLeavesDaskRunner
        return AllLeavesDaskRunner(worker_modules=worker_modules, options=options)
    return name


def names_a_cluster(dask_options) -> bool:
    """Whether Dask options name a running cluster (`--dask_client_address` or `--dask_scheduler_file`); without
    one, a dask Client starts a cluster of its own."""
    return bool(dask_options.get("address") or dask_options.get("scheduler_file"))
