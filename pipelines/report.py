"""`report/`: SVG figures and a short report.md that a person can look at, for every output of both pipelines.

augment: rows per example, replacement rate by source (masked LM / GloVe / none), candidate list lengths, the most
replaced words, rejects by reason. corpus: instance lengths, random-next share per epoch, tokens per document,
rejects by reason. `--no_report` skips it.

Memory stays flat at any scale, by design: nothing here ever holds rows.
  * The pipelines' DoFns emit one small stats dict per element (an example, a batch of instances, a document):
    fixed-size histograms as sparse {bin: count} maps over a `Histogram` of at most `MAX_BINS` bins, and integer
    counts. `SumReportStats` adds them in one CombineGlobally (the runner combines partial sums on each worker), so
    its accumulator is bounded by the number of bins, whatever the number of rows.
  * The most replaced words: (word, n) pairs summed per word by a CombinePerKey (one integer per distinct word,
    spread over the workers by the runner; distinct words are bounded by the candidate vocabularies), then
    `TopWordsFn`, a bounded top-k combiner: every accumulator holds at most k pairs, merged and truncated.
  * `WriteReportFn` runs once, after those combines, on their outputs and the manifest's count tables (side inputs
    of a few hundred values), draws the figures as hand-written SVG (`charts`: milliseconds a figure, no plotting
    library to import), writes them through `FileSystems` (any runner, any filesystem) and yields the manifest
    field that `FinalizeOutput` waits for, so the report is complete before `_SUCCESS`.
Only integers are summed and ties are broken by the word, so the report is the same on every runner; the SVGs carry
no date or generated id, so equal figures are equal bytes.
"""

import dataclasses
import math
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np

from contract import layout
from contract import charts
from pipelines import outputs

REPORT_SUBDIR = "report"
REPORT_NAME = "report.md"
REPORT_PATH = f"{REPORT_SUBDIR}/{REPORT_NAME}"
MAX_BINS = 64

Stats = Dict[str, Dict[str, Any]]  # {"hist": {name: {bin: n}}, "counts": {name: n}}
Render = Callable[..., Tuple[str, Dict[str, bytes]]]  # a pipeline's report: (report.md, {file name: SVG bytes})


# ------------------------------------------------------------------------------------------------ histograms
@dataclasses.dataclass(frozen=True)
class Histogram:
    """Fixed bins over non-negative integers: `linear` (width `width`, the last bin open) or `log2` (0, 1, 2-3,
    4-7, ...)."""
    name: str
    title: str
    xlabel: str
    kind: str = "linear"
    width: int = 1
    num_bins: int = MAX_BINS

    @classmethod
    def linear(cls, name: str, title: str, xlabel: str, *, max_value: int) -> "Histogram":
        """Bins of one width covering 0..max_value in at most MAX_BINS bins (values above land in the last)."""
        width = max(1, math.ceil((max_value + 1) / MAX_BINS))
        return cls(name, title, xlabel, "linear", width, max_value // width + 1)

    def index(self, value: int) -> int:
        if self.kind == "log2":
            bin_index = int(value).bit_length()
        else:
            bin_index = int(value) // self.width
        return min(max(bin_index, 0), self.num_bins - 1)

    def indices(self, values: np.ndarray) -> np.ndarray:
        values = np.maximum(np.asarray(values, dtype=np.int64), 0)
        if self.kind == "log2":
            bins = np.where(values > 0, np.floor(np.log2(np.maximum(values, 1))).astype(np.int64) + 1, 0)
        else:
            bins = values // self.width
        return np.minimum(bins, self.num_bins - 1)

    def label(self, bin_index: int) -> str:
        if self.kind == "log2":
            low, high = (0, 0) if bin_index == 0 else (1 << (bin_index - 1), (1 << bin_index) - 1)
        else:
            low, high = bin_index * self.width, bin_index * self.width + self.width - 1
        if self.kind == "log2" and bin_index == self.num_bins - 1:
            return f"{low:,}+"
        return f"{low:,}" if low == high else f"{low:,}-{high:,}"


def count_values(histogram: Histogram, values: Iterable[int]) -> Dict[int, int]:
    """{bin: count} of the values (a sparse count vector)."""
    counts: Dict[int, int] = {}
    for value in values:
        bin_index = histogram.index(value)
        counts[bin_index] = counts.get(bin_index, 0) + 1
    return counts


def count_array(histogram: Histogram, values: np.ndarray) -> Dict[int, int]:
    """count_values for a numpy array, vectorized."""
    bins = np.bincount(histogram.indices(values))
    return {int(i): int(bins[i]) for i in np.flatnonzero(bins)}


def empty_stats() -> Stats:
    return {"hist": {}, "counts": {}}


def add_stats(total: Stats, part: Mapping[str, Mapping[str, Any]]) -> Stats:
    """Adds `part` into `total` (in place) and returns it."""
    for name, bins in part.get("hist", {}).items():
        into = total["hist"].setdefault(name, {})
        for bin_index, count in bins.items():
            into[int(bin_index)] = into.get(int(bin_index), 0) + int(count)
    for name, count in part.get("counts", {}).items():
        total["counts"][name] = total["counts"].get(name, 0) + int(count)
    return total


class SumReportStatsFn(beam.CombineFn):
    """Sums stats dicts: histograms bin by bin and counts by name. The accumulator is bounded by the bins."""

    def create_accumulator(self) -> Stats:
        return empty_stats()

    def add_input(self, accumulator: Stats, element: Stats) -> Stats:
        return add_stats(accumulator, element)

    def merge_accumulators(self, accumulators: Iterable[Stats]) -> Stats:
        total = empty_stats()
        for accumulator in accumulators:
            add_stats(total, accumulator)
        return total

    def extract_output(self, accumulator: Stats) -> Stats:
        return {"hist": {name: dict(sorted(bins.items())) for name, bins in sorted(accumulator["hist"].items())},
                "counts": dict(sorted(accumulator["counts"].items()))}


# ------------------------------------------------------------------------------------------------- drawing
def draw_histogram(histogram: Histogram, bins: Mapping[int, int], *, note: str = "") -> bytes:
    """SVG: a bar per bin from the first to the last non-empty one."""
    used = sorted(int(b) for b, n in bins.items() if n)
    positions: List[int] = []
    if used:
        # One empty bin each side (where there is one), so a single bar does not fill the plot.
        positions = list(range(max(0, used[0] - 1), min(histogram.num_bins - 1, used[-1] + 1) + 1))
    step = max(1, math.ceil(len(positions) / 14))  # at most 14 tick labels
    return charts.bar_chart([bins.get(p, 0) for p in positions],
                            [histogram.label(p) if i % step == 0 else "" for i, p in enumerate(positions)],
                            title=histogram.title, title_left=True, note=note, height=340,
                            category_label=histogram.xlabel, value_label="count", bar_width=0.85,
                            rotate_labels=histogram.kind == "log2" or histogram.width > 1)


def draw_bars(title: str, labels: Sequence[str], values: Sequence[float], *, xlabel: str,
              annotations: Optional[Sequence[str]] = None, horizontal: bool = True, limit: Optional[float] = None,
              reference: Optional[float] = None) -> bytes:
    """SVG: horizontal bars, the first label on top (or vertical bars, left to right, with a dashed `reference`)."""
    height = max(2.4, 0.32 * len(labels) + 1.2) if horizontal else 3.4  # inches, 100 px each
    return charts.bar_chart(values, labels, title=title, height=round(100 * height), value_label=xlabel,
                            horizontal=horizontal, bar_width=0.8 if horizontal else 0.6, limit=limit,
                            reference=reference, annotations=annotations)


# ---------------------------------------------------------------------------------------------------- report.md
def markdown_table(rows: Sequence[Tuple[Any, ...]], header: Tuple[str, ...]) -> List[str]:
    """The lines of a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def histogram_mean(bins: Mapping[int, int], total: int) -> float:
    """`total` (the sum of the counted values) over the number of values the bins counted; 0 for none."""
    count = sum(bins.values())
    return total / count if count else 0.0


def percent(part: int, whole: int) -> str:
    """`part` of `whole` as "12.5%", or "n/a" of nothing."""
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def rejects_section(rejects: Mapping[str, int], figures: Dict[str, bytes]) -> List[str]:
    """report.md's "Rejects by reason" lines for {reason: n}; adds its figure to `figures`."""
    lines = ["## Rejects by reason", ""]
    if not rejects:
        return lines + ["No input record was rejected.", ""]
    ordered = sorted(rejects.items(), key=lambda kv: (-kv[1], kv[0]))
    figures["rejects_by_reason.svg"] = draw_bars("Rejects by reason", [k for k, _ in ordered],
                                                 [v for _, v in ordered], xlabel="records",
                                                 annotations=[f"{v:,}" for _, v in ordered])
    return lines + ["![Rejects by reason](rejects_by_reason.svg)", ""] + markdown_table(
        [(reason, f"{count:,}") for reason, count in ordered], ("reason", "records")) + [
        "", f"Every rejected record is in `{layout.REJECTS_SUBDIR}/` with its reason.", ""]


# -------------------------------------------------------------------------------------------------- DoFns
class WriteReportFn(beam.DoFn):
    """Draws the figures and writes report/ once its side inputs are complete; yields the manifest's "report" field.

    Runs once (an Impulse). The figures are written first, report.md last, each through a temporary name.
    """

    def __init__(self, output_dir: str, render: Render, *, settings: Mapping[str, Any],
                 histograms: Sequence[Histogram], run_id: Optional[str] = None):
        self._output_dir = output_dir
        self._render = render
        self._settings = dict(settings)
        self._histograms = tuple(histograms)
        self._run_id = run_id

    def process(self, unused_element, stats, named_counts, top_words=None):
        counts: Dict[str, Dict[str, int]] = {}
        for (table, key), value in named_counts:
            counts.setdefault(str(table), {})[str(key)] = counts.get(str(table), {}).get(str(key), 0) + int(value)
        extra = {} if top_words is None else {"top_words": top_words}
        text, figures = self._render(stats, counts, settings=self._settings, histograms=self._histograms, **extra)
        outputs.check_claim(self._output_dir, self._run_id)  # another run took the folder: write nothing
        directory = outputs.join_path(self._output_dir, REPORT_SUBDIR)
        for name, data in sorted(figures.items()):
            outputs.write_bytes_atomically(data, directory, name)
        outputs.write_bytes_atomically(text.encode("utf-8"), directory, REPORT_NAME)
        yield {"report": REPORT_PATH}


# ---------------------------------------------------------------------------------------------------- Composites
class SumReportStats(beam.PTransform):
    """Stats dicts -> one summed stats dict (exactly one, also for no input): the report's histograms and counts."""

    def expand(self, stats):
        return stats | "SumStats" >> beam.CombineGlobally(SumReportStatsFn())


class WriteReport(beam.PTransform):
    """Writes report/ from the summed stats and the manifest's count tables; apply it to the pipeline root.

    Args:
      output_dir: the output root.
      render: the pipeline's report, `render(stats, counts, *, settings, histograms[, top_words])` -> (report.md,
        {file name: SVG bytes}), with `counts` the manifest's count tables as {table: {key: n}}; a module-level
        function, so that it pickles by reference.
      stats: the single summed stats dict (`SumReportStats`).
      named_counts: ((table, key), n) pairs: the manifest's count tables (rejects by reason among them).
      top_words: augment: the single list from `FindTopWords`.
      settings: run settings shown in the report (task, num_aug, max_seq_len, ...).
      histograms: the `Histogram`s the stats were counted with.
      run_id: the output claim's id; nothing is written once another run holds the folder.

    Returns:
      A PCollection of one dict, {"report": "report/report.md"}, for `FinalizeOutput(manifest_fields=...)`: the
      manifest and `_SUCCESS` then wait for the report.
    """

    def __init__(self, output_dir: str, render: Render, *, stats: beam.PCollection, named_counts: beam.PCollection,
                 top_words: Optional[beam.PCollection] = None, settings: Mapping[str, Any],
                 histograms: Sequence[Histogram], run_id: Optional[str] = None):
        super().__init__()
        self._fn = WriteReportFn(output_dir, render, settings=settings, histograms=histograms, run_id=run_id)
        self._stats = stats
        self._named_counts = named_counts
        self._top_words = top_words

    def expand(self, pipeline):
        side = {}
        if self._top_words is not None:
            side["top_words"] = beam.pvalue.AsSingleton(self._top_words)
        return (pipeline
                | "Trigger" >> beam.Impulse()
                | "Write" >> beam.ParDo(self._fn, beam.pvalue.AsSingleton(self._stats),
                                        beam.pvalue.AsList(self._named_counts), **side))
