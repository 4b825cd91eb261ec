"""The augmentation's report/: rows per example, replacement rate by candidate source (masked LM / GloVe / none),
candidate list lengths, the most replaced words, rejects by reason (the shared machinery is pipelines.report).

The most replaced words stay bounded at any scale: (word, n) pairs are summed per word by a CombinePerKey (one
integer per distinct word, spread over the workers by the runner; distinct words are bounded by the candidate
vocabularies), then `TopWordsFn`, a top-k combiner whose every accumulator holds at most k pairs, merged and
truncated. Ties are broken by the word, so the list is the same on every runner.
"""

import heapq
import itertools
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

import apache_beam as beam

from pipelines.report import (Histogram, Stats, count_values, draw_bars, draw_histogram, histogram_mean,
                              markdown_table, percent, rejects_section)

TOP_WORDS = 20
SOURCES = ("mlm", "glove", "none")
SOURCE_NAMES = {"mlm": "masked LM", "glove": "GloVe", "none": "none"}


# --------------------------------------------------------------------------------------------- stats per item
def augment_histograms(*, num_aug: int, num_fields: int, top_k: int) -> Tuple[Histogram, Histogram]:
    """(rows per example, candidate list length) bins for an augmentation run's settings."""
    return (Histogram.linear("rows_per_example", "Rows per example", "rows (the original + distinct augmentations)",
                             max_value=1 + num_aug * max(1, num_fields)),
            Histogram.linear("candidate_list_length", "Candidate list lengths",
                             "candidates of a candidate word (0: none found, it keeps itself)", max_value=top_k))


def example_stats(plans: Sequence[Any], mlm: Sequence[Mapping[int, Sequence[str]]],
                  glove: Mapping[str, Sequence[str]], rows: Sequence[Any], *, word_filter, rows_hist: Histogram,
                  length_hist: Histogram) -> Tuple[Stats, Dict[str, int]]:
    """The report's stats of one augmented example, and its replaced words {original word: times}.

    A word's source: `mlm` or `glove` when that lookup found candidates (after `word_filter`), `none` when a
    candidate word's lookup found none (it keeps itself). Words that are never candidates (stop words,
    punctuation) count as `other_words`. Slots are (words of a source) x (augmented rows of their field).
    """
    def found(values) -> int:
        values = values or ()
        return sum(1 for w in values if word_filter(w)) if word_filter is not None else len(values)

    rows_per_field = [0] * len(plans)
    for row in rows:
        if row.augmented_field is not None:
            rows_per_field[row.augmented_field] += 1
    counts: Dict[str, int] = {}
    lengths: List[int] = []
    replaced_words: Dict[str, int] = {}
    source_of: List[Dict[int, str]] = []
    for field_index, plan in enumerate(plans):
        sources: Dict[int, str] = {}
        for word_index, position in plan.mlm_words:
            length = found(mlm[field_index].get(position))
            sources[word_index] = "mlm" if length else "none"
            lengths.append(length)
        for word_index, word in plan.glove_words:
            length = found(glove.get(word))
            sources[word_index] = "glove" if length else "none"
            lengths.append(length)
        source_of.append(sources)
        counts["other_words"] = counts.get("other_words", 0) + len(plan.words) - len(sources)
        for source in sources.values():
            counts[f"words_{source}"] = counts.get(f"words_{source}", 0) + 1
            counts[f"slots_{source}"] = counts.get(f"slots_{source}", 0) + rows_per_field[field_index]
    for row in rows:
        if row.augmented_field is None:
            continue
        plan = plans[row.augmented_field]
        for word_index in row.replaced_word_indices:
            source = source_of[row.augmented_field].get(word_index, "none")
            counts[f"replaced_{source}"] = counts.get(f"replaced_{source}", 0) + 1
            word = plan.words[word_index]
            replaced_words[word] = replaced_words.get(word, 0) + 1
    counts = {name: value for name, value in counts.items() if value}
    stats = {"hist": {rows_hist.name: {rows_hist.index(len(rows)): 1},
                      length_hist.name: count_values(length_hist, lengths)}, "counts": counts}
    return stats, replaced_words


# ------------------------------------------------------------------------------------------------- top words
def _rank(item: Tuple[str, int]) -> Tuple[int, str]:
    return -item[1], item[0]


def merge_top(k: int, *parts: Iterable[Tuple[str, int]]) -> List[Tuple[str, int]]:
    """The k (word, count) pairs of largest count among `parts`, ties by word: a bounded merge (k pairs kept).

    Exact when each word appears in one part only with its full count (after a CombinePerKey(sum)).
    """
    return heapq.nsmallest(k, itertools.chain(*parts), key=_rank)


class TopWordsFn(beam.CombineFn):
    """The k most frequent (word, count) pairs; every accumulator holds at most k pairs."""

    def __init__(self, k: int = TOP_WORDS):
        self._k = k

    def create_accumulator(self) -> List[Tuple[str, int]]:
        return []

    def add_input(self, accumulator, element):
        return merge_top(self._k, accumulator, [(str(element[0]), int(element[1]))])

    def merge_accumulators(self, accumulators):
        return merge_top(self._k, *accumulators)

    def extract_output(self, accumulator):
        return [list(pair) for pair in merge_top(self._k, accumulator)]


class FindTopWords(beam.PTransform):
    """(word, n) pairs -> one list of the k most frequent [word, total], ties by word; exact and bounded."""

    def __init__(self, k: int = TOP_WORDS):
        super().__init__()
        self._k = k

    def expand(self, pairs):
        return (pairs
                | "SumPerWord" >> beam.CombinePerKey(sum)
                | "TopWords" >> beam.CombineGlobally(TopWordsFn(self._k)))


# ---------------------------------------------------------------------------------------------------- report.md
def augment_report(stats: Stats, counts: Mapping[str, Mapping[str, int]], *, settings: Mapping[str, Any],
                   histograms: Sequence[Histogram], top_words: Sequence[Sequence[Any]]
                   ) -> Tuple[str, Dict[str, bytes]]:
    """(report.md, {file name: SVG bytes}) of an augmentation output."""
    rows_hist, length_hist = histograms
    run_counts = counts.get("stats", {})
    rejects = counts.get("rejects", {})
    extra = stats["counts"]
    examples, rows = int(run_counts.get("examples", 0)), int(run_counts.get("rows", 0))
    figures: Dict[str, bytes] = {}
    rows_bins = stats["hist"].get(rows_hist.name, {})
    figures["rows_per_example.svg"] = draw_histogram(
        rows_hist, rows_bins, note=f"{examples:,} examples, mean {histogram_mean(rows_bins, rows):.2f} rows")
    source_rows = []
    for source in SOURCES:
        words, slots = extra.get(f"words_{source}", 0), extra.get(f"slots_{source}", 0)
        replaced = extra.get(f"replaced_{source}", 0)
        source_rows.append((SOURCE_NAMES[source], words, slots, replaced))
    figures["replacement_rate_by_source.svg"] = draw_bars(
        "Replacement rate by candidate source", [r[0] for r in source_rows],
        [100 * r[3] / r[2] if r[2] else 0.0 for r in source_rows], xlabel="% of word slots replaced",
        annotations=[f"{percent(r[3], r[2])} ({r[3]:,} / {r[2]:,})" for r in source_rows], horizontal=False,
        limit=100,
        reference=100 * float(settings.get("replace_prob", 0)))
    length_bins = stats["hist"].get(length_hist.name, {})
    candidate_words = sum(length_bins.values())
    figures["candidate_list_lengths.svg"] = draw_histogram(
        length_hist, length_bins, note=f"{candidate_words:,} candidate words, top_k {settings.get('top_k')}")
    head = ", ".join(f"{k} {settings[k]}" for k in ("task", "num_aug", "replace_prob", "top_k", "seed")
                     if k in settings)
    lines = ["# Augmentation report", "", f"{head}. Figures drawn from the pipeline's own counts (no row sampled).",
             "", "| | |", "|---|---|",
             f"| examples | {examples:,} |", f"| rows | {rows:,} |",
             f"| rows per example (mean) | {rows / examples if examples else 0:.2f} |",
             f"| rejected records | {sum(rejects.values()):,} |", "",
             "## Rows per example", "", "![Rows per example](rows_per_example.svg)", "",
             "The original row plus the distinct augmentations of each text field; fewer than "
             f"1 + {settings.get('num_aug')} x fields when draws repeat a sentence or a field has no candidate word.",
             "", "## Replacement rate by source", "", "![Replacement rate by source](replacement_rate_by_source.svg)",
             ""]
    lines += markdown_table([(name, f"{words:,}", f"{slots:,}", f"{replaced:,}", percent(replaced, slots))
                    for name, words, slots, replaced in source_rows],
                   ("source", "candidate words", "word slots", "replaced", "rate"))
    lines += ["", "A slot is a candidate word in one augmented row of its field. `none`: a candidate word whose lookup "
              f"found nothing (it keeps itself). Words that are never candidates (stop words, punctuation): "
              f"{extra.get('other_words', 0):,}. The dashed line is --replace_prob.", "",
              "## Candidate list lengths", "", "![Candidate list lengths](candidate_list_lengths.svg)", "",
              f"## Most replaced words (top {len(top_words)})", ""]
    if top_words:
        figures["most_replaced_words.svg"] = draw_bars(
            f"Most replaced words (top {len(top_words)})", [w for w, _ in top_words], [n for _, n in top_words],
            xlabel="times replaced", annotations=[f"{n:,}" for _, n in top_words])
        lines += ["![Most replaced words](most_replaced_words.svg)", ""]
        lines += markdown_table([(f"`{w}`", f"{n:,}") for w, n in top_words], ("word", "times replaced"))
        lines.append("")
    else:
        lines += ["No word was replaced.", ""]
    lines += rejects_section(rejects, figures)
    return "\n".join(lines), figures
