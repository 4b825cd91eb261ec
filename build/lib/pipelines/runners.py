"""Runner resolution shared by both pipelines.

`--runner=DaskRunner` (or `dask`, or Beam's class path) means `pipelines.dask_runner.AllLeavesDaskRunner`, Beam's
DaskRunner with its data-losing defects fixed; it is imported only then, so other runs do not pay for importing
dask. Every other runner name goes to Beam as given.
"""

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

DASK_RUNNER_NAMES = ("daskrunner", "dask", "apache_beam.runners.dask.dask_runner.daskrunner")


def resolve_runner(options: PipelineOptions):
    """The runner object (or name) for `options`: our Dask runner for any spelling of DaskRunner."""
    name = options.view_as(StandardOptions).runner
    if isinstance(name, str) and name.lower() in DASK_RUNNER_NAMES:
        from pipelines.dask_runner import AllLeavesDaskRunner
        return AllLeavesDaskRunner()
    return name
