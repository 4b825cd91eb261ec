"""Faults users meet every day, on the pipelines' side: each keeps every row or stops with one line and no _SUCCESS.

(The output-folder claim and --overwrite are in test_output_claim.py, the trainer's faults in
test_distill_reliability.py, long sentences in test_long_sentence.py.)
"""

import bz2
import gzip
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from contract import layout
from contract.errors import UserError
from pipelines import augment as augment_pipeline
from corpus import wiki
from pipelines import corpus as corpus_pipeline, sources
from tests.test_corpus import FOOTER, HEADER, _pages, _write_multistream

SENTENCES = [f"a {adjective} film about {topic} ." for adjective in ("warm", "dull", "bright", "slow", "funny")
             for topic in ("trains", "the sea", "a city", "music")]


def _tsv(rows, end=b"\n") -> bytes:
    return end.join([b"sentence\tlabel"] + [f"{s}\t{i % 2}".encode() for i, s in enumerate(rows)]) + end


def _augment(tmp_path, tiny_bert, tiny_glove, path, *argv, name="out"):
    return augment_pipeline.run(["--runner=DirectRunner", f"--model={tiny_bert}", f"--glove={tiny_glove}",
                                 f"--input={path}", f"--output={tmp_path / name}", "--num_aug=2", "--num_shards=1",
                                 "--quiet", *argv])


def _corpus(tmp_path, tokenizer, path, *argv, name="out"):
    return corpus_pipeline.run([f"--input={path}", f"--output={tmp_path / name}", f"--tokenizer={tokenizer}",
                                "--max_seq_len=32", "--num_shards=2", "--epochs=1", "--quiet", *argv])


def _fails_with(tmp_path, run, *expected, name="out"):
    with pytest.raises(UserError) as raised:
        run()
    line = str(raised.value)
    for text in expected:
        assert text in line, line
    assert "\n" not in line
    assert not (tmp_path / name / layout.SUCCESS_MARKER).exists()
    return line


# ------------------------------------------------------------------------------------------ damaged streams
def test_truncated_gzip_tsv_stops_augment_naming_the_file(tmp_path, tiny_bert, tiny_glove):
    data = gzip.compress(_tsv(SENTENCES * 10))
    path = tmp_path / "train.tsv.gz"
    path.write_bytes(data[:len(data) // 2])
    _fails_with(tmp_path, lambda: _augment(tmp_path, tiny_bert, tiny_glove, path),
                str(path), "damaged gzip stream", "truncated", "download or copy the file again")


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".bz2", bz2.compress)])
def test_truncated_compressed_text_stops_the_corpus(tmp_path, tiny_bert, suffix, compress):
    text = "".join(f"{s[0].upper()}{s[1:]}\n" + ("\n" if i % 4 == 3 else "") for i, s in enumerate(SENTENCES * 20))
    data = compress(text.encode())
    path = tmp_path / f"corpus.txt{suffix}"
    path.write_bytes(data[:len(data) // 2])
    _fails_with(tmp_path, lambda: _corpus(tmp_path, tiny_bert, path), str(path), "truncated")
    whole = tmp_path / f"whole.txt{suffix}"
    whole.write_bytes(data)
    manifest = _corpus(tmp_path, tiny_bert, whole, name="whole")
    assert manifest["counts"]["corpus"]["sentences"] == len(SENTENCES) * 20


@pytest.mark.parametrize("split", [None, "--split_bytes=150"])
def test_truncated_multistream_dump_stops_with_the_offset(tmp_path, tiny_bert, split):
    path = tmp_path / "dump-multistream.xml.bz2"
    _write_multistream(path, _pages())
    data = path.read_bytes()
    last = data.rindex(b"BZh9")  # the last stream (the footer) starts here
    path.write_bytes(data[:last - 40])  # cut inside the stream before it: its pages would vanish
    argv = ["--input_format=wikipedia-xml"] + ([split] if split else [])
    line = _fails_with(tmp_path, lambda: _corpus(tmp_path, tiny_bert, path, *argv), str(path), "damaged dump")
    assert "byte" in line


def _cut_dumps(tmp_path):
    """Dumps cut exactly between two pages or two bz2 streams: every byte left decompresses and parses."""
    pages = _pages()
    xml = HEADER + b"".join(pages)  # no </mediawiki>: cut after the last page
    cuts = {}
    cuts["plain.xml"] = xml
    cuts["mid.xml"] = HEADER + b"".join(pages[:3])  # cut after the third page
    cuts["gzip.xml.gz"] = gzip.compress(HEADER + b"".join(pages[:4]))
    cuts["single.xml.bz2"] = bz2.compress(xml)
    whole = tmp_path / "whole-multistream.xml.bz2"
    _write_multistream(whole, pages)
    data = whole.read_bytes()
    footer = data.rindex(b"BZh9")
    cuts["no-footer-multistream.xml.bz2"] = data[:footer]  # the last stream (</mediawiki>) is gone
    cuts["two-streams-short-multistream.xml.bz2"] = data[:data.rindex(b"BZh9", 0, footer)]
    return cuts


@pytest.mark.parametrize("split", [None, "--split_bytes=150"])
def test_dump_cut_between_pages_or_streams_stops(tmp_path, tiny_bert, split):
    """Nothing fails to decompress in such a dump; only the missing closing tag shows that pages are gone."""
    for name, data in _cut_dumps(tmp_path).items():
        path = tmp_path / name
        path.write_bytes(data)
        argv = ["--input_format=wikipedia-xml", "--max_reject_fraction=0.9"] + ([split] if split else [])
        line = _fails_with(tmp_path, lambda: _corpus(tmp_path, tiny_bert, path, *argv, name=f"out-{name}"),
                           str(path), "damaged dump", "</mediawiki>", "cut short", name=f"out-{name}")
        assert "download the file again" in line


def test_complete_dumps_split_anywhere_keep_every_page(tmp_path):
    """The closing-tag check never fires on a complete dump, wherever the work ranges fall (inside the tag too)."""
    pages = _pages()
    plain = tmp_path / "dump.xml"
    plain.write_bytes(HEADER + b"".join(pages) + FOOTER)
    multistream = tmp_path / "dump-multistream.xml.bz2"
    _write_multistream(multistream, pages)
    for path in (plain, multistream):
        size = path.stat().st_size
        for split_bytes in list(range(20, 400, 7)) + [size - 5, size - 1]:
            ranges = wiki.plan_ranges(str(path), size, split_bytes=split_bytes, open_fn=lambda p: open(p, "rb"))
            with open(path, "rb") as handle:
                found = [page.xml.strip() for _, start, end in ranges
                         for page in wiki.iter_pages(handle, str(path), start, end, size)]
            assert found == [page.strip() for page in pages], (path.name, split_bytes)


def test_a_corrupt_gzip_is_one_line(tmp_path, tiny_bert, tiny_glove):
    path = tmp_path / "train.tsv"  # the name does not matter: the first bytes say gzip
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"this is not gzip at all\n" * 10)
    _fails_with(tmp_path, lambda: _augment(tmp_path, tiny_bert, tiny_glove, path), str(path), "damaged gzip")


def test_a_name_that_says_gzip_over_plain_text_reads_the_text(tmp_path, tiny_bert, tiny_glove):
    path = tmp_path / "train.tsv.gz"
    path.write_bytes(_tsv(SENTENCES))
    manifest = _augment(tmp_path, tiny_bert, tiny_glove, path)
    assert manifest["counts"]["stats"]["examples"] == len(SENTENCES) and manifest["counts"]["rejects"] == {}


# ------------------------------------------------------------------------------------------ line ends, CSV
@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_every_line_end_keeps_every_row(tmp_path, tiny_bert, tiny_glove, end):
    path = tmp_path / "train.tsv"
    path.write_bytes(_tsv(SENTENCES, end))
    manifest = _augment(tmp_path, tiny_bert, tiny_glove, path)
    assert manifest["counts"]["stats"]["examples"] == len(SENTENCES) and manifest["counts"]["rejects"] == {}
    assert manifest["tsv_header"] == "sentence\tlabel"


def test_corpus_text_with_cr_line_ends(tmp_path, tiny_bert):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"First sentence here.\rSecond one.\r\rAnother document.\rIt ends.\r")
    manifest = _corpus(tmp_path, tiny_bert, path)
    assert manifest["counts"]["corpus"]["documents"] == 2 and manifest["counts"]["corpus"]["sentences"] == 4


def test_csv_quoted_fields_hold_newlines_tabs_and_quotes(tmp_path, tiny_bert, tiny_glove):
    path = tmp_path / "data.csv"
    path.write_bytes(b'id,text,label\n'
                     b'a,"a warm film\nthat goes on, and on .",pos\n'
                     b'b,"a ""dull""\tfilm .",neg\n'
                     b'c,a plain row .,pos\n')
    manifest = _augment(tmp_path, tiny_bert, tiny_glove, path, "--task=generic", "--text_columns=text",
                        "--label_column=label", "--id_column=id")
    assert manifest["counts"]["rejects"] == {} and manifest["counts"]["stats"]["examples"] == 3
    rows = [r for f in manifest["outputs"]["data"]["files"] for r in pq.read_table(tmp_path / "out" / f["path"])
            .to_pylist() if r["aug_index"] == 0]
    by_id = {r["example_id"]: (r["row_index"], r["text"]) for r in rows}
    assert by_id == {"a": (0, "a warm film\nthat goes on, and on ."), "b": (1, 'a "dull"\tfilm .'),
                     "c": (2, "a plain row .")}


def test_lines_reader_streams_lone_carriage_returns_in_linear_time():
    import io
    data = b"x" * 50 + b"\r"
    lines = list(sources.iter_lines(io.BytesIO(data * 20000)))  # 1 MB of lone \r ends
    assert len(lines) == 20000 and lines[-1] == (51 * 19999, b"x" * 50)


# ------------------------------------------------------------------------------------------ inputs, ids
def test_same_file_name_in_two_folders_gives_unique_ids(tmp_path, tiny_bert, tiny_glove):
    for folder in ("en", "fr"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        (tmp_path / "in" / folder / "train.txt").write_text(
            f"One {folder} sentence here.\nAnother one.\n\nA second document.\nIt ends.\n", encoding="utf-8")
    manifest = _corpus(tmp_path, tiny_bert, tmp_path / "in" / "*" / "train.txt")
    ids = [i for f in manifest["outputs"]["epoch-0"]["files"]
           for i in pq.read_table(tmp_path / "out" / f["path"], columns=["instance_id"])["instance_id"].to_pylist()]
    assert len(ids) == len(set(ids)) and any(i.startswith("en/train.txt#") for i in ids)
    assert any(i.startswith("fr/train.txt#") for i in ids)
    assert sources.relative_names(["/x/a/train.tsv", "/x/b/train.tsv"]) == {"/x/a/train.tsv": "a/train.tsv",
                                                                            "/x/b/train.tsv": "b/train.tsv"}
    assert sources.relative_names(["/x/a/one.tsv"]) == {"/x/a/one.tsv": "one.tsv"}  # keys of one file unchanged


def test_model_folder_without_weights_is_one_line(tmp_path, tiny_bert, tiny_glove):
    import shutil
    broken = tmp_path / "bert"
    shutil.copytree(tiny_bert, broken)
    for weights in broken.glob("*.safetensors"):
        weights.unlink()
    path = tmp_path / "train.tsv"
    path.write_bytes(_tsv(SENTENCES))
    with pytest.raises(UserError, match="holds no weights"):
        augment_pipeline.run([f"--model={broken}", f"--glove={tiny_glove}", f"--input={path}",
                              f"--output={tmp_path / 'o'}"])


def test_device_cuda_without_a_gpu_is_one_line(tmp_path, tiny_bert, tiny_glove):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserError, match="--device cuda: no CUDA GPU"):
        augment_pipeline.run([f"--model={tiny_bert}", f"--glove={tiny_glove}", "--device=cuda",
                              f"--output={tmp_path / 'o'}"])


@pytest.mark.slow
def test_a_damaged_input_reaches_the_shell_as_one_line(tmp_path, tiny_bert, tiny_glove):
    data = gzip.compress(_tsv(SENTENCES * 10))
    (tmp_path / "train.tsv.gz").write_bytes(data[:len(data) // 2])
    result = subprocess.run([sys.executable, "-m", "pipelines.augment", "--input=train.tsv.gz", "--output=out",
                             f"--model={tiny_bert}", f"--glove={tiny_glove}"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "train.tsv.gz: damaged gzip stream" in lines[0]
    assert not (tmp_path / "out" / "_SUCCESS").exists()
