"""report/: figures and report.md for both pipelines, from bounded combines; --no_report writes none."""

import pathlib
import random
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest

from contract import layout
from contract import charts
from pipelines import report
from tests.test_reliability import SENTENCES, _augment, _corpus, _tsv

SVG = "{http://www.w3.org/2000/svg}"


def test_top_words_merge_is_bounded_and_exact_in_any_order():
    rng = random.Random(7)
    counts = {f"w{i:03d}": rng.randint(1, 40) for i in range(300)}  # many ties
    expected = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    fn = report.TopWordsFn(20)
    for trial in range(5):
        items = list(counts.items())
        rng.shuffle(items)
        cuts = sorted(rng.sample(range(1, len(items)), 6))
        accumulators = []
        for part in np.split(np.arange(len(items)), cuts):
            accumulator = fn.create_accumulator()
            for index in part:
                accumulator = fn.add_input(accumulator, items[index])
                assert len(accumulator) <= 20  # bounded whatever the input
            accumulators.append(accumulator)
        rng.shuffle(accumulators)
        merged = fn.merge_accumulators(accumulators[:3])
        merged = fn.merge_accumulators([merged] + accumulators[3:])
        assert len(merged) <= 20
        assert [tuple(pair) for pair in fn.extract_output(merged)] == expected, trial


def test_histogram_bins_are_fixed_and_agree_scalar_and_vectorized():
    values = np.array([0, 1, 2, 3, 4, 7, 8, 100, 127, 128, 129, 10 ** 9])
    for histogram in (report.Histogram.linear("a", "A", "x", max_value=128),
                      report.corpus_histograms(max_seq_len=128)[1],
                      report.Histogram.linear("b", "B", "x", max_value=5000)):
        assert histogram.num_bins <= report.MAX_BINS
        assert list(histogram.indices(values)) == [histogram.index(v) for v in values]
        assert sum(report.count_array(histogram, values).values()) == len(values)
    log2 = report.corpus_histograms(max_seq_len=128)[1]
    assert [log2.label(i) for i in range(4)] == ["0", "1", "2-3", "4-7"]
    assert report.SumReportStatsFn().merge_accumulators([
        {"hist": {"a": {1: 2}}, "counts": {"x": 1}}, {"hist": {"a": {1: 3, 2: 1}}, "counts": {"x": 2}}]) == {
        "hist": {"a": {1: 5, 2: 1}}, "counts": {"x": 3}}


def _key_numbers(text: str) -> dict:
    """The report's `| name | number ... |` table rows, as ints."""
    return {name: int(number.replace(",", "")) for name, number in
            re.findall(r"^\| ([a-z -]+) \| ([\d,]+)(?: \(.*\))? \|$", text, flags=re.M)}


def _svg(data: bytes) -> ElementTree.Element:
    """The parsed figure (well-formed XML or an error), after checking its root: namespace, size and viewBox."""
    root = ElementTree.fromstring(data)
    assert root.tag == f"{SVG}svg"
    width, height = int(root.get("width")), int(root.get("height"))
    assert width == 700 and 150 < height < 2000
    assert root.get("viewBox") == f"0 0 {width} {height}"
    return root


def _bars(root: ElementTree.Element) -> list:
    return root.findall(f"{SVG}rect[@class='bar']")


def _texts(root: ElementTree.Element) -> list:
    return ["".join(element.itertext()) for element in root.iter(f"{SVG}text")]


def _check_figures(folder, text: str, expected: set) -> None:
    linked = set(re.findall(r"!\[[^\]]+\]\(([^)]+)\)", text))
    on_disk = {p.name for p in folder.iterdir() if p.name != report.REPORT_NAME}
    assert linked == on_disk == expected
    for name in on_disk:
        root = _svg((folder / name).read_bytes())
        assert _bars(root), name  # every figure of a run with rows has bars
        assert len(_texts(root)) > 3, name


def test_histogram_has_a_bar_per_bin_its_labels_and_no_data_when_empty():
    histogram = report.Histogram.linear("n", "Rows & more", "rows <per> example", max_value=40)
    bins = {3: 5, 7: 2, 8: 0}
    root = _svg(report.draw_histogram(histogram, bins, note="3 examples"))
    bars = _bars(root)
    assert len(bars) == 7  # bins 2..8: one empty bin each side of the non-empty ones
    heights = [float(bar.get("height")) for bar in bars]
    assert heights[0] == heights[2] == heights[6] == 0 and heights[1] > heights[5] > 0
    assert heights[1] == pytest.approx(2.5 * heights[5], rel=0.02)  # 5 vs 2, one scale
    assert [float(bar.get("x")) for bar in bars] == sorted(float(bar.get("x")) for bar in bars)
    texts = _texts(root)
    for expected in ("Rows & more", "3 examples", "rows <per> example", "count", "2", "3", "8"):
        assert expected in texts, expected
    assert "no data" not in texts

    log2 = report.corpus_histograms(max_seq_len=128)[1]
    many = {i: i for i in range(1, 39)}
    root = _svg(report.draw_histogram(log2, many))
    assert len(_bars(root)) == 40  # 0..39: the empty bin 0 before, the last bin (39) after
    rotated = [element for element in root.iter(f"{SVG}text") if "rotate(-30" in element.get("transform", "")]
    assert 1 < len(rotated) <= 14 and "".join(rotated[0].itertext()) == "0"

    empty = _svg(report.draw_histogram(histogram, {}))
    assert _bars(empty) == [] and "no data" in _texts(empty) and "Rows & more" in _texts(empty)
    assert "no data" in _texts(_svg(report.draw_histogram(histogram, {4: 0})))


def test_bars_escape_every_text_and_equal_inputs_give_equal_bytes():
    labels = ['<b>&"\'', "世界", "café", "naïve", "x" * 60]
    values = [900, 500, 120, 99, 3]
    annotations = [f"{v:,} <&>" for v in values]
    data = report.draw_bars("Words <top> & \"quoted\"", labels, values, xlabel="times 'replaced'",
                            annotations=annotations)
    assert data == report.draw_bars("Words <top> & \"quoted\"", list(labels), list(values),
                                    xlabel="times 'replaced'", annotations=list(annotations))
    assert b"&lt;b&gt;&amp;" in data and "世界".encode() in data  # escaped, and UTF-8
    root = _svg(data)
    texts = _texts(root)
    for expected in labels[:4] + ["Words <top> & \"quoted\"", "times 'replaced'", "900 <&>", "1,000"]:
        assert expected in texts, expected
    shortened = "x" * 39 + "\u2026"
    assert shortened in texts and "x" * 60 not in texts
    bars = _bars(root)
    assert len(bars) == len(labels)
    tops = [float(bar.get("y")) for bar in bars]
    assert tops == sorted(tops)  # the first label on top
    widths = [float(bar.get("width")) for bar in bars]
    assert widths == sorted(widths, reverse=True) and widths[0] > 0
    # The left margin holds the longest label (estimated width), so no label runs off the figure.
    assert float(bars[0].get("x")) > charts.text_width(shortened, 11) + 10

    vertical = _svg(report.draw_bars("Rate", ["a", "b", "c"], [40.0, 0.0, 120.0], xlabel="%", horizontal=False,
                                     limit=100, reference=40, annotations=["40%", "", "120%"]))
    bars = _bars(vertical)
    assert len(bars) == 3
    lefts = [float(bar.get("x")) for bar in bars]
    assert lefts == sorted(lefts)
    heights = [float(bar.get("height")) for bar in bars]
    assert heights[1] == 0 and heights[2] == pytest.approx(2.5 * heights[0], rel=0.02)  # 120 stops at the limit
    references = [line for line in vertical.iter(f"{SVG}line") if line.get("stroke") == "#C44E52"]
    assert len(references) == 1 and references[0].get("stroke-dasharray")
    assert float(references[0].get("y1")) == pytest.approx(float(bars[0].get("y")), abs=0.2)  # at 40, the first bar
    assert "100" in _texts(vertical) and "120" not in _texts(vertical)


def test_nice_ticks():
    assert charts.nice_ticks(87) == [0, 20, 40, 60, 80, 100]
    assert charts.nice_ticks(100) == [0, 20, 40, 60, 80, 100]
    assert charts.nice_ticks(3) == [0, 1, 2, 3]
    assert charts.nice_ticks(2) == [0, 0.5, 1, 1.5, 2]
    assert charts.nice_ticks(12_345) == [0, 5_000, 10_000, 15_000]
    assert charts.nice_ticks(0) == [0, 1]
    assert [charts.format_tick(value, 0.5) for value in charts.nice_ticks(2)[:3]] == ["0", "0.5", "1"]
    assert charts.format_tick(15_000, 5_000) == "15,000"


def test_a_report_does_not_import_matplotlib():
    code = """
import sys
from pipelines import report
length_hist, tokens_hist = report.corpus_histograms(max_seq_len=64)
stats = {"hist": {length_hist.name: {10: 3, 20: 5}, tokens_hist.name: {5: 2}},
         "counts": {"instances_epoch_0": 8, "random_next_epoch_0": 4}}
text, figures = report.corpus_report(stats, {"corpus": {"instances": 8}, "rejects": {"empty": 1}},
                                     settings={"epochs": 1, "instance_mode": "pairs"},
                                     histograms=(length_hist, tokens_hist))
print(sorted(figures), "matplotlib" in sys.modules)
"""
    root = pathlib.Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                            cwd=root)
    assert result.stdout.split("] ")[-1].strip() == "False"
    assert result.stdout.startswith("['instance_length.svg', 'random_next_share.svg', 'rejects_by_reason.svg', "
                                    "'tokens_per_document.svg']"), result.stdout


@pytest.mark.slow
def test_augment_report_shows_the_manifest_counts(tmp_path, tiny_bert, tiny_glove):
    path = tmp_path / "train.tsv"
    path.write_bytes(_tsv(SENTENCES) + b"no label here\n")
    manifest = _augment(tmp_path, tiny_bert, tiny_glove, path, "--max_reject_fraction=0.5")
    folder = tmp_path / "out" / "report"
    text = (folder / "report.md").read_text(encoding="utf-8")
    assert manifest["report"] == "report/report.md"
    _check_figures(folder, text, {"rows_per_example.svg", "replacement_rate_by_source.svg",
                                  "candidate_list_lengths.svg", "most_replaced_words.svg", "rejects_by_reason.svg"})
    numbers = _key_numbers(text)
    stats, rejects = manifest["counts"]["stats"], manifest["counts"]["rejects"]
    assert numbers["examples"] == stats["examples"] == len(SENTENCES)
    assert numbers["rows"] == stats["rows"] == manifest["outputs"]["data"]["totals"]["rows"]
    assert numbers["rejected records"] == sum(rejects.values()) == 1
    assert f"| {next(iter(rejects))} | 1 |" in text
    assert "## Most replaced words (top " in text and "| masked LM |" in text


@pytest.mark.slow
def test_corpus_report_shows_the_manifest_counts(tmp_path, tiny_bert):
    path = tmp_path / "corpus.txt"
    body = "\n\n".join(" ".join(SENTENCES[i:i + 4]).replace(" . ", " .\n") for i in range(0, len(SENTENCES), 4))
    path.write_bytes(body.encode() + b"\nA \xff\xfe broken line.\n")
    manifest = _corpus(tmp_path, tiny_bert, path, "--epochs=2", "--max_reject_fraction=0.5")
    folder = tmp_path / "out" / "report"
    text = (folder / "report.md").read_text(encoding="utf-8")
    assert manifest["report"] == "report/report.md"
    _check_figures(folder, text, {"instance_length.svg", "random_next_share.svg", "tokens_per_document.svg",
                                  "rejects_by_reason.svg"})
    numbers, counts = _key_numbers(text), manifest["counts"]
    for name in ("documents", "sentences", "tokens", "instances"):
        assert numbers[name] == counts["corpus"][name], name
    assert numbers["instances"] == sum(out["totals"]["rows"] for name, out in manifest["outputs"].items()
                                       if name.startswith("epoch-"))
    assert numbers["rejected records"] == sum(counts["rejects"].values()) == 1
    assert 0 < numbers["random-next instances"] < numbers["instances"]


@pytest.mark.slow
def test_no_report_writes_none(tmp_path, tiny_bert, tiny_glove):
    path = tmp_path / "train.tsv"
    path.write_bytes(_tsv(SENTENCES[:4]))
    manifest = _augment(tmp_path, tiny_bert, tiny_glove, path, "--no_report", name="aug")
    assert "report" not in manifest and not (tmp_path / "aug" / "report").exists()
    assert (tmp_path / "aug" / layout.SUCCESS_MARKER).exists()
    text = tmp_path / "corpus.txt"
    text.write_text(" .\n".join(SENTENCES) + "\n", encoding="utf-8")
    manifest = _corpus(tmp_path, tiny_bert, text, "--no_report", name="corpus")
    assert "report" not in manifest and not (tmp_path / "corpus" / "report").exists()
    assert (tmp_path / "corpus" / layout.SUCCESS_MARKER).exists()
