"""Options both pipelines share, declared once.

Beam parses the options of every `PipelineOptions` subclass it knows in one argparse parser (`get_all_options`,
which runners call), so two pipelines that each declared `--input` could not be imported into one process. The
shared options live here with no pipeline-specific defaults; `option_values()` merges them with a pipeline's own
options and fills that pipeline's defaults, for the pipeline's frozen config (`AugmentConfig`, `CorpusConfig`) to be
built from once, in its run().
"""

import dataclasses
from typing import Any, Dict

from apache_beam.options.pipeline_options import PipelineOptions


class IOOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--input", default=None, help="input file(s): a glob on any Beam filesystem")
        parser.add_argument("--input_format", default=None,
                            help="augment: auto|tsv|csv|jsonl|parquet (default auto); corpus: "
                                 "text|wikipedia-xml|wikipedia-parquet (default text)")
        parser.add_argument("--output", default=None, help="output directory (any Beam filesystem)")
        parser.add_argument("--seed", type=int, default=42, help="base seed of every random choice")
        parser.add_argument("--num_shards", type=int, default=None,
                            help="Parquet files per output (augment: 4; corpus: 8 per epoch)")
        parser.add_argument("--overwrite", action="store_true",
                            help="replace an earlier output of ours in --output (never a folder we did not write)")
        parser.add_argument("--max_reject_fraction", type=float, default=0.1,
                            help="fail the run (no _SUCCESS, exit 1) when more than this fraction of the input "
                            "records is rejected (default 0.1); a run with no usable record always fails")
        parser.add_argument("--no_report", action="store_true",
                            help="write no report/ (SVG figures and report.md drawn from the run's counts)")
        parser.add_argument("--quiet", action="store_true", help="no progress lines (the summary is still printed)")


def option_values(options: PipelineOptions, pipeline_options: type, **defaults: Any) -> Dict[str, Any]:
    """The shared and the pipeline's own option values by name, with `defaults` filling options left unset."""
    values = {}
    for view_class in (IOOptions, pipeline_options):
        view = options.view_as(view_class)
        values.update({name: getattr(view, name) for name in view._visible_option_list()})
    for name, value in defaults.items():
        if values.get(name) is None:
            values[name] = value
    return values


@dataclasses.dataclass(frozen=True)
class IOConfig:
    """The IOOptions' values, typed: the part of every pipeline's config that both pipelines share."""
    input: str
    input_format: str
    output: str
    seed: int
    num_shards: int
    overwrite: bool
    max_reject_fraction: float
    no_report: bool
    quiet: bool
