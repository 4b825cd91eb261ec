"""report/: figures and report.md for both pipelines, from bounded combines; --no_report writes none."""

import random
import re
import struct

import numpy as np
import pytest

from contract import layout
from pipelines import report
from tests.test_reliability import SENTENCES, _augment, _corpus, _tsv

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


def _check_figures(folder, text: str, expected: set) -> None:
    linked = set(re.findall(r"!\[[^\]]+\]\(([^)]+)\)", text))
    on_disk = {p.name for p in folder.iterdir() if p.suffix == ".png"}
    assert linked == on_disk == expected
    for name in on_disk:
        data = (folder / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
        assert 300 < width < 2000 and 150 < height < 2000, name
        assert b"Software" not in data and b"matplotlib" not in data  # no version or date: deterministic bytes
    import matplotlib.image
    assert matplotlib.image.imread(str(folder / sorted(on_disk)[0])).shape[2] in (3, 4)


@pytest.mark.slow
def test_augment_report_shows_the_manifest_counts(tmp_path, tiny_bert, tiny_glove):
    path = tmp_path / "train.tsv"
    path.write_bytes(_tsv(SENTENCES) + b"no label here\n")
    manifest = _augment(tmp_path, tiny_bert, tiny_glove, path, "--max_reject_fraction=0.5")
    folder = tmp_path / "out" / "report"
    text = (folder / "report.md").read_text(encoding="utf-8")
    assert manifest["report"] == "report/report.md"
    _check_figures(folder, text, {"rows_per_example.png", "replacement_rate_by_source.png",
                                  "candidate_list_lengths.png", "most_replaced_words.png", "rejects_by_reason.png"})
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
    _check_figures(folder, text, {"instance_length.png", "random_next_share.png", "tokens_per_document.png",
                                  "rejects_by_reason.png"})
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
