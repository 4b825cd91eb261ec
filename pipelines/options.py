"""The options both pipelines share, declared once (contract.options): a pipeline's config subclasses `IOConfig`,
redeclaring a field where its default differs (augment reads its sample task by default, corpus needs --input)."""

import dataclasses
from typing import Optional

from contract.options import option, require


@dataclasses.dataclass(frozen=True)
class IOConfig:
    """Input, output, seed and the run's failure rule: the part of every pipeline's config that both share."""
    input: Optional[str] = option(None, help="input file(s): a glob on any Beam filesystem")
    input_format: Optional[str] = option(None, help="the input's format")
    output: Optional[str] = option(None, help="output directory (any Beam filesystem)")
    seed: int = option(42, help="base seed of every random choice")
    num_shards: Optional[int] = option(None, help="Parquet files per output")
    overwrite: bool = option(False, help="replace an earlier output of ours in --output (never a folder we did not "
                                         "write)")
    max_reject_fraction: float = option(
        0.1, help="fail the run (no _SUCCESS, exit 1) when more than this fraction of the input records is rejected "
                  "(default 0.1); a run with no usable record always fails")
    no_report: bool = option(False, help="write no report/ (SVG figures and report.md drawn from the run's counts)")
    quiet: bool = option(False, help="no progress lines (the summary is still printed)")
    local_workers: Optional[int] = option(
        None, help="run on N worker processes of this machine: a dask.distributed cluster of N single-threaded "
                   "workers that the run starts and stops (the way to use every core of one machine; "
                   "docs/scaling.md)", metavar="N")

    def __post_init__(self):
        require(self.local_workers is None or self.local_workers >= 1,
                f"--local_workers must be >= 1 (got {self.local_workers})")
        require(0 <= self.max_reject_fraction <= 1,
                f"--max_reject_fraction must be within [0, 1] (got {self.max_reject_fraction})")
