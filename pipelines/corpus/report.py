"""The corpus pipeline's report/: instance lengths, random-next share per epoch, tokens per document, rejects by
reason. The stats per element are summed and drawn by the shared machinery of `pipelines.report`."""

from typing import Any, Dict, Mapping, Sequence, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.report import (Histogram, Stats, count_array, draw_bars, draw_histogram, histogram_mean, percent,
                              rejects_section)


def corpus_histograms(*, max_seq_len: int) -> Tuple[Histogram, Histogram]:
    """(instance length, tokens per document) bins."""
    return (Histogram.linear("instance_length", "Instance length", "tokens of an instance ([CLS] and [SEP] included)",
                             max_value=max_seq_len),
            Histogram("tokens_per_document", "Tokens per document", "WordPiece tokens of a document", "log2",
                      1, 40))


def instance_batch_stats(element: Tuple[Tuple[int, int], bytes], *, length_hist: Histogram) -> Stats:
    """The report's stats of one encoded batch of instances ((epoch, shard), Arrow IPC bytes), vectorized."""
    (epoch, _), payload = element
    table = pa.ipc.open_stream(payload).read_all()
    lengths = pc.list_value_length(table["input_ids"]).to_numpy(zero_copy_only=False)
    random_next = int(pc.sum(table["is_random_next"]).as_py() or 0)
    return {"hist": {length_hist.name: count_array(length_hist, lengths)},
            "counts": {f"instances_epoch_{epoch}": table.num_rows, f"random_next_epoch_{epoch}": random_next}}


def document_stats(element: Tuple[str, Tuple[bytes, bytes]], *, itemsize: int, tokens_hist: Histogram) -> Stats:
    """The report's stats of one packed document (key, (ids bytes, sentence lengths bytes))."""
    _, (ids, _) = element
    return {"hist": {tokens_hist.name: {tokens_hist.index(len(ids) // itemsize): 1}}, "counts": {}}


def corpus_report(stats: Stats, counts: Mapping[str, Mapping[str, int]], *, settings: Mapping[str, Any],
                  histograms: Sequence[Histogram], corpus_table: str = "corpus", rejects_table: str = "rejects"
                  ) -> Tuple[str, Dict[str, bytes]]:
    """(report.md, {file name: SVG bytes}) of a general-distillation output."""
    length_hist, tokens_hist = histograms
    run_counts = counts.get(corpus_table, {})
    rejects = counts.get(rejects_table, {})
    extra = stats["counts"]
    documents, instances = int(run_counts.get("documents", 0)), int(run_counts.get("instances", 0))
    tokens, instance_tokens = int(run_counts.get("tokens", 0)), int(run_counts.get("instance_tokens", 0))
    epochs = int(settings.get("epochs", 1))
    random_next = sum(extra.get(f"random_next_epoch_{e}", 0) for e in range(epochs))
    figures: Dict[str, bytes] = {}
    length_bins = stats["hist"].get(length_hist.name, {})
    figures["instance_length.svg"] = draw_histogram(
        length_hist, length_bins, note=f"{instances:,} instances, mean "
                                       f"{histogram_mean(length_bins, instance_tokens):.1f} tokens, max_seq_len "
                                       f"{settings.get('max_seq_len')}")
    per_epoch = [(extra.get(f"random_next_epoch_{e}", 0), extra.get(f"instances_epoch_{e}", 0)) for e in range(epochs)]
    figures["random_next_share.svg"] = draw_bars(
        "Random-next share per epoch", [f"epoch {e}" for e in range(epochs)],
        [100 * r / n if n else 0.0 for r, n in per_epoch], xlabel="% of instances with a random-next B",
        annotations=[f"{percent(r, n)} ({r:,} / {n:,})" for r, n in per_epoch], horizontal=False, limit=100,
        reference=50 if settings.get("instance_mode") == "pairs" else None)
    token_bins = stats["hist"].get(tokens_hist.name, {})
    figures["tokens_per_document.svg"] = draw_histogram(
        tokens_hist, token_bins,
        note=f"{documents:,} documents, mean {histogram_mean(token_bins, tokens):.1f} tokens")
    lines = ["# General-distillation corpus report", "",
             f"instance_mode {settings.get('instance_mode')}, max_seq_len {settings.get('max_seq_len')}, epochs "
             f"{epochs}, seed {settings.get('seed')}. Figures drawn from the pipeline's own counts (no row sampled).",
             "", "| | |", "|---|---|",
             f"| documents | {documents:,} |", f"| sentences | {int(run_counts.get('sentences', 0)):,} |",
             f"| tokens | {tokens:,} |", f"| instances | {instances:,} |",
             f"| random-next instances | {random_next:,} ({percent(random_next, instances)}) |",
             f"| rejected records | {sum(rejects.values()):,} |", "",
             "## Instance length", "", "![Instance length](instance_length.svg)", "",
             "## Random-next share", "", "![Random-next share](random_next_share.svg)", "",
             "Pairs mode draws a random-next B for about half the instances (the dashed line); always when a chunk "
             "holds one sentence.", "",
             "## Tokens per document", "", "![Tokens per document](tokens_per_document.svg)", "",
             "Bins double in width (log scale).", ""]
    lines += rejects_section(rejects, figures)
    return "\n".join(lines), figures
