"""pipelines.augment end to end: formats, rejects, determinism across runner modes, clear errors."""

import csv
import json
import pathlib

import pyarrow.parquet as pq
import pytest

from contract.tasks import GLUE_TASKS
from contract.schemas import augmented_schema
from pipelines import augment as augment_pipeline
from pipelines.augment import resources
from pipelines.augment.config import SAMPLE_INPUT
from pipelines.augment.read import InputLayout
from pipelines.augment.transforms import ReadExamplesFn
from pipelines import outputs
from contract.errors import UserError
from tests import builders

# One data row per GLUE task, in the layout of its train.tsv (header, columns), texts at the reference's indices.
GLUE_ROWS = {
    "CoLA": (None, ["gj04", "1", "", "the sailors rode the breeze clear of the rocks ."]),
    "SST-2": (["sentence", "label"], ["a gorgeous , witty film .", "1"]),
    "MRPC": (["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
             ["1", "702876", "702977", "The film opened on Friday .", "The movie opened Friday ."]),
    "STS-B": (["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
               "score"], ["7", "main-captions", "MSRvid", "2012test", "0001", "none", "none",
                          "A plane is taking off .", "An air plane is taking off .", "5.000"]),
    "QQP": (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
            ["133273", "213221", "213222", "How do movies get made ?", "How is a film produced ?", "1"]),
    "MNLI": (["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"],
             ["12", "31193", "31193n", "government", "( ( x ) )", "( ( y ) )", "(ROOT x)", "(ROOT y)",
              "Conceptually cream skimming has two basic dimensions .", "Product and geography are what make "
              "cream skimming work .", "neutral", "neutral"]),
    "QNLI": (["index", "question", "sentence", "label"],
             ["3", "When did the film open ?", "The film opened in Paris in 1999 .", "entailment"]),
    "RTE": (["index", "sentence1", "sentence2", "label"],
            ["5", "Dana Reeve died of lung cancer .", "Christopher Reeve had an accident .", "not_entailment"]),
}


def _write_tsv(path, header, rows):
    lines = (["\t".join(header)] if header else []) + ["\t".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(tmp_path, tiny_bert, tiny_glove, *extra, name="out"):
    out = tmp_path / name
    manifest = augment_pipeline.run(["--runner=DirectRunner", f"--model={tiny_bert}", f"--glove={tiny_glove}",
                                     f"--output={out}", "--num_shards=2", *extra])
    return out, manifest


def _rows(out):
    manifest = outputs.read_manifest(str(out))
    rows = []
    for f in manifest["outputs"]["data"]["files"]:
        rows += pq.read_table(out / f["path"]).to_pylist()
    return sorted(rows, key=lambda r: (r["row_index"], r["aug_index"]))


@pytest.mark.parametrize("task", sorted(GLUE_ROWS))
def test_every_glue_format_is_read_as_the_reference_reads_it(tmp_path, task):
    header, row = GLUE_ROWS[task]
    fmt = GLUE_TASKS[task]
    path = _write_tsv(tmp_path / "train.tsv", header, [row])
    fn = ReadExamplesFn(InputLayout(fmt, "tsv"), errors_dir=None)
    (key, example), = list(fn.process((0, str(path), "")))
    assert key == (0, 0)
    # Written out from the reference's readers (data_augmentation.py / task_distill.py processors), not derived
    # from our task table: (texts, label, example id).
    expected = {
        "CoLA": (("the sailors rode the breeze clear of the rocks .",), "1", "0"),
        "SST-2": (("a gorgeous , witty film .",), "1", "0"),
        "MRPC": (("The film opened on Friday .", "The movie opened Friday ."), "1", "0"),
        "STS-B": (("A plane is taking off .", "An air plane is taking off ."), "5.000", "7"),
        "QQP": (("How do movies get made ?", "How is a film produced ?"), "1", "133273"),
        "MNLI": (("Conceptually cream skimming has two basic dimensions .",
                  "Product and geography are what make cream skimming work ."), "neutral", "12"),
        "QNLI": (("When did the film open ?", "The film opened in Paris in 1999 ."), "entailment", "3"),
        "RTE": (("Dana Reeve died of lung cancer .", "Christopher Reeve had an accident ."), "not_entailment", "5"),
    }[task]
    assert (example.texts, example.label, example.example_id) == expected


def test_end_to_end_sst2_read_back_with_pyarrow_and_datasets(tmp_path, tiny_bert, tiny_glove):
    out, manifest = _run(tmp_path, tiny_bert, tiny_glove, "--num_aug=5", "--emit_candidates")
    assert (out / "_SUCCESS").exists()
    rows = _rows(out)
    assert manifest["kind"] == "augmented-task" and manifest["task"] == "SST-2"
    assert manifest["num_aug"] == 5 and manifest["text_fields"] == ["sentence"]
    assert manifest["outputs"]["data"]["totals"]["rows"] == len(rows) == manifest["counts"]["stats"]["rows"]
    assert manifest["counts"]["stats"]["examples"] == 32
    source = list(csv.reader(open(SAMPLE_INPUT, encoding="utf-8"), delimiter="\t",
                             quoting=csv.QUOTE_NONE))[1:]
    originals = [r for r in rows if r["aug_index"] == 0]
    assert [(r["sentence"], r["label"]) for r in originals] == [(s, label) for s, label in source]
    for r in rows:
        assert 0 <= r["aug_index"] <= 5 and (r["augmented_field"] is None) == (r["aug_index"] == 0)
        assert r["example_id"] == str(r["row_index"])
    schema = pq.read_schema(out / manifest["outputs"]["data"]["files"][0]["path"])
    assert schema.equals(augmented_schema(GLUE_TASKS["SST-2"].text_fields))
    # train_aug.tsv: the header, then every row in the input's own layout.
    tsv = (out / "train_aug.tsv").read_text(encoding="utf-8").splitlines()
    assert tsv[0] == "sentence\tlabel" and len(tsv) == len(rows) + 1
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "_SUCCESS", "candidates", "data", "manifest.json",
                                                     "rejects", "report", "train_aug.tsv"]
    assert sorted(tsv[1:]) == sorted(f"{r['sentence']}\t{r['label']}" for r in rows)
    # candidates/: every word, with its source
    cands = [r for f in manifest["outputs"]["candidates"]["files"] for r in pq.read_table(out / f["path"]).to_pylist()]
    assert {r["source"] for r in cands} <= {"mlm", "glove", "none"} and any(r["source"] == "mlm" for r in cands)
    assert all((r["source"] == "none") == (r["candidates"] == []) for r in cands)
    import datasets
    loaded = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert loaded.num_rows == len(rows) and "sentence" in loaded.column_names


def test_pair_task_other_field_keeps_original_text(tmp_path, tiny_bert, tiny_glove):
    header, row = GLUE_ROWS["MNLI"]
    second = list(row)
    second[0], second[8], second[9] = "13", "The old film was a great success .", "Nobody saw the film ."
    path = _write_tsv(tmp_path / "train.tsv", header, [row, second])
    out, manifest = _run(tmp_path, tiny_bert, tiny_glove, "--task=MNLI", f"--input={path}", "--num_aug=6")
    assert manifest["num_aug"] == 6
    rows = _rows(out)
    by_id = {"12": row, "13": second}
    assert sum(1 for r in rows if r["aug_index"] == 0) == 2
    for r in rows:
        original = by_id[r["example_id"]]
        if r["augmented_field"] == "sentence1":
            assert r["sentence2"] == original[9]
        elif r["augmented_field"] == "sentence2":
            assert r["sentence1"] == original[8]
    assert {r["augmented_field"] for r in rows} == {None, "sentence1", "sentence2"}
    tsv = (out / "train_aug.tsv").read_text(encoding="utf-8").splitlines()
    assert tsv[0].split("\t") == header
    assert all(len(line.split("\t")) == 12 and line.split("\t")[11] == "neutral" for line in tsv[1:])


def test_bad_records_go_to_rejects_with_reasons(tmp_path, tiny_bert, tiny_glove):
    path = tmp_path / "train.tsv"
    path.write_bytes(b"sentence\tlabel\n"
                     b"a fine film .\t1\n"
                     b"too\tmany\tcolumns\n"
                     b"\t0\n"
                     b"caf\xe9 society\t1\n"
                     b"a dull film .\tpositive\n"
                     b"a dull film .\t0\n")
    out, manifest = _run(tmp_path, tiny_bert, tiny_glove, "--max_reject_fraction=1", f"--input={path}", "--num_aug=2")
    assert manifest["counts"]["rejects"] == {"bad_label": 1, "empty_text": 1, "undecodable_utf8": 1,
                                             "wrong_column_count": 1}
    rejects = pq.read_table(out / "rejects" / "part-00000-of-00001.parquet").to_pylist()
    assert sorted((r["row_index"], r["reason"]) for r in rejects) == [
        (1, "wrong_column_count"), (2, "empty_text"), (3, "undecodable_utf8"), (4, "bad_label")]
    assert next(r for r in rejects if r["reason"] == "undecodable_utf8")["record"] == "caf\\xe9 society\t1"
    assert sorted({r["row_index"] for r in _rows(out)}) == [0, 5]


def test_generic_jsonl_with_named_columns(tmp_path, tiny_bert, tiny_glove):
    path = tmp_path / "data.jsonl"
    records = [{"id": "a1", "text": "a warm and funny film .", "y": "pos"},
               {"id": "a2", "text": "a loud joyless sequel .", "y": "neg"}, "not an object", {"id": "a3", "y": "neg"}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n{broken\n", encoding="utf-8")
    out, manifest = _run(tmp_path, tiny_bert, tiny_glove, "--max_reject_fraction=1", "--task=generic", f"--input={path}", "--text_columns=text",
                         "--label_column=y", "--id_column=id", "--label_list=pos,neg", "--num_aug=3")
    assert manifest["counts"]["rejects"] == {"bad_json": 2, "missing_column": 1}
    assert {r["example_id"] for r in _rows(out)} == {"a1", "a2"}
    assert manifest["text_fields"] == ["text"] and manifest["label_list"] == ["pos", "neg"]


@pytest.mark.parametrize("mode", ["multi_threading", "multi_processing"])
def test_same_seed_same_bytes_whatever_the_runner_mode(tmp_path, tiny_bert, tiny_glove, mode):
    one, _ = _run(tmp_path, tiny_bert, tiny_glove, "--num_aug=4", "--direct_num_workers=1", name="one")
    two, _ = _run(tmp_path, tiny_bert, tiny_glove, "--num_aug=4", "--direct_num_workers=2",
                  f"--direct_running_mode={mode}", name="two")
    files = sorted(p.relative_to(one) for p in one.rglob("*.parquet"))
    assert files == sorted(p.relative_to(two) for p in two.rglob("*.parquet")) and files
    for f in files:
        assert (one / f).read_bytes() == (two / f).read_bytes(), f
    assert (one / "train_aug.tsv").read_bytes() == (two / "train_aug.tsv").read_bytes()


@pytest.mark.parametrize("argv, message", [
    (["--task=NOPE"], "unknown task 'NOPE'"),
    (["--glove=/nonexistent/glove.txt"], "GloVe file /nonexistent/glove.txt not found"),
    (["--input=/nonexistent/train.tsv"], "no input file matches /nonexistent/train.tsv"),
    (["--model=/nonexistent/model"], "cannot load the tokenizer of --model /nonexistent/model"),
    (["--replace_prob=2"], "--replace_prob must be within [0, 1]"),
])
def test_fixable_errors_stop_with_one_line(tmp_path, tiny_bert, tiny_glove, argv, message, capsys):
    base = ["--runner=DirectRunner", f"--model={tiny_bert}", f"--glove={tiny_glove}", f"--output={tmp_path / 'o'}"]
    with pytest.raises(SystemExit) as info:
        augment_pipeline.main(base + argv)
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "o" / "_SUCCESS").exists()


def test_non_empty_output_needs_overwrite(tmp_path, tiny_bert, tiny_glove):
    out = tmp_path / "o"
    out.mkdir()
    (out / "old").write_text("x")
    with pytest.raises(UserError, match="--overwrite"):
        augment_pipeline.run([f"--model={tiny_bert}", f"--glove={tiny_glove}", f"--output={out}"])


def test_glove_published_formats(tmp_path, tiny_glove):
    import gzip
    import zipfile
    text = pathlib.Path(tiny_glove).read_text(encoding="utf-8")
    (tmp_path / "g.txt.gz").write_bytes(gzip.compress(text.encode("utf-8")))
    with zipfile.ZipFile(tmp_path / "glove.6B.zip", "w") as bundle:
        bundle.writestr("glove.6B.8d.txt", text)
    expected = text.splitlines(keepends=True)
    assert list(resources.open_glove_lines(str(tmp_path / "g.txt.gz"))) == expected
    assert list(resources.open_glove_lines(str(tmp_path / "glove.6B.zip"))) == expected
    assert list(resources.open_glove_lines(str(tmp_path / "glove.6B.zip") + ":glove.6B.8d.txt")) == expected
    assert resources.glove_exists(str(tmp_path / "glove.6B.zip") + ":glove.6B.8d.txt")


def test_text_longer_than_the_model_is_handled_like_the_reference(tmp_path, tiny_bert, tiny_glove, shared_data):
    """Queries are cut at 512 tokens; words whose mask falls beyond keep themselves, and are counted.

    Needs the real vocabulary (shared_data), where these words are single WordPieces.
    """
    # 600 one-piece words: the mask of word i sits at position i + 1, so words 511..599 fall beyond 512 tokens.
    words = ("film story actor scene music plot drama comedy night movie " * 60).split()
    path = _write_tsv(tmp_path / "train.tsv", ["sentence", "label"], [[" ".join(words), "1"]])
    out, manifest = _run(tmp_path, tiny_bert, tiny_glove, f"--input={path}", "--num_aug=3", "--emit_candidates")
    assert manifest["counts"]["stats"]["mlm_queries_beyond_512_tokens"] == 600 - 511
    cands = {r["word_index"]: r for f in manifest["outputs"]["candidates"]["files"]
             for r in pq.read_table(out / f["path"]).to_pylist()}
    assert cands[599]["candidates"] == [words[599]] and cands[599]["source"] == "mlm"
    assert len(cands[10]["candidates"]) > 1


def test_generic_csv_and_parquet_inputs(tmp_path, tiny_bert, tiny_glove):
    import pyarrow as pa
    csv_path = tmp_path / "data.csv"
    csv_path.write_text('premise,hypothesis,gold\n"a warm, funny film .",the film is funny .,yes\n'
                        'a loud sequel .,,no\n"too, many",columns,here,now\n', encoding="utf-8")
    out, manifest = _run(tmp_path, tiny_bert, tiny_glove, "--max_reject_fraction=1", "--task=generic", f"--input={csv_path}",
                         "--text_columns=premise,hypothesis", "--label_column=gold", "--num_aug=2", name="csv")
    assert manifest["input_format"] == "csv" and manifest["text_fields"] == ["premise", "hypothesis"]
    assert manifest["counts"]["rejects"] == {"empty_text": 1, "wrong_column_count": 1}
    rows = _rows(out)
    assert rows[0]["premise"] == "a warm, funny film ." and rows[0]["label"] == "yes"
    assert (out / "train_aug.tsv").read_text(encoding="utf-8").splitlines()[0] == "premise\thypothesis\tlabel"
    parquet_path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": ["a gorgeous , witty film .", None, "a dull film ."], "y": [1, 0, 0]}),
                   parquet_path)
    out, manifest = _run(tmp_path, tiny_bert, tiny_glove, "--max_reject_fraction=1", "--task=generic", f"--input={parquet_path}",
                         "--text_columns=text", "--label_column=y", "--num_aug=2", name="parquet")
    assert manifest["input_format"] == "parquet" and manifest["counts"]["rejects"] == {"empty_text": 1}
    originals = [r for r in _rows(out) if r["aug_index"] == 0]
    assert [(r["row_index"], r["text"], r["label"]) for r in originals] == [
        (0, "a gorgeous , witty film .", "1"), (2, "a dull film .", "0")]


def test_every_record_rejected_fails_without_success(tmp_path, tiny_bert, tiny_glove):
    path = _write_tsv(tmp_path / "train.tsv", ["sentence", "label"], [["", "1"], ["fine", "7"]])
    with pytest.raises(UserError, match=r"all 2 input records were rejected \(bad_label 1, empty_text 1\)"):
        _run(tmp_path, tiny_bert, tiny_glove, f"--input={path}", "--max_reject_fraction=1")
    out = tmp_path / "out"
    assert not (out / "_SUCCESS").exists()
    manifest = outputs.read_manifest(str(out), require_success=False)
    assert manifest["status"] == "failed" and manifest["counts"]["rejects"] == {"bad_label": 1, "empty_text": 1}
    assert manifest["outputs"]["rejects"]["totals"]["rows"] == 2  # the rejects are there to look at


def test_generic_labels_without_a_list_are_recorded_sorted(tmp_path, tiny_bert, tiny_glove):
    path = tmp_path / "data.jsonl"
    records = [{"text": f"a {w} film about the sea .", "y": y} for w, y in
               [("warm", "pos"), ("dull", "neg"), ("odd", "meh"), ("bright", 1), ("slow", 1.0)]]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    out, manifest = _run(tmp_path, tiny_bert, tiny_glove, "--task=generic", f"--input={path}", "--text_columns=text",
                         "--label_column=y", "--num_aug=2")
    assert manifest["label_list"] == ["1", "meh", "neg", "pos"]  # sorted; 1 and 1.0 are one label
    card = (out / "README.md").read_text(encoding="utf-8")
    assert all(label in card for label in ("meh", "neg", "pos"))


def test_num_aug_zero_needs_no_weights_and_no_glove(tmp_path, tiny_bert):
    import shutil
    tokenizer_only = tmp_path / "tokenizer-only"
    shutil.copytree(tiny_bert, tokenizer_only)
    for weights in ("model.safetensors", "pytorch_model.bin"):
        if (tokenizer_only / weights).exists():
            (tokenizer_only / weights).unlink()
    out = tmp_path / "orig"
    manifest = augment_pipeline.run(["--runner=DirectRunner", f"--model={tokenizer_only}", f"--input={SAMPLE_INPUT}",
                                     f"--output={out}", "--num_aug=0", "--num_shards=1", "--quiet"])
    rows = _rows(out)
    assert len(rows) == manifest["counts"]["stats"]["examples"] == 32 and manifest["glove"] is None
    assert all(row["aug_index"] == 0 for row in rows)


def test_bf16_pipeline_runs_the_fused_encoder_and_repeats_itself(tmp_path, tiny_bert, tiny_glove, monkeypatch):
    """--precision bf16 on a CPU goes through augment.fused_encoder; the same run twice writes the same bytes, and
    it keeps every example with the same originals as fp32."""
    from augment import fused_encoder
    if not fused_encoder.available():
        pytest.skip("this torch build has no oneDNN fused Linear")
    calls = []
    original = fused_encoder.FusedMaskedEncoder.__call__
    monkeypatch.setattr(fused_encoder.FusedMaskedEncoder, "__call__",
                        lambda self, *args: calls.append(args[0].shape) or original(self, *args))
    first, manifest = _run(tmp_path, tiny_bert, tiny_glove, "--num_aug=4", "--precision=bf16", name="bf16-a")
    second, _ = _run(tmp_path, tiny_bert, tiny_glove, "--num_aug=4", "--precision=bf16", name="bf16-b")
    fp32, _ = _run(tmp_path, tiny_bert, tiny_glove, "--num_aug=4", name="fp32")
    assert calls and manifest["counts"]["stats"]["examples"] == 32
    for f in manifest["outputs"]["data"]["files"]:
        assert (first / f["path"]).read_bytes() == (second / f["path"]).read_bytes()
    originals = [[(r["sentence"], r["label"]) for r in _rows(out) if r["aug_index"] == 0] for out in (first, fp32)]
    assert originals[0] == originals[1] and len(originals[0]) == 32


def test_glove_is_parsed_once_per_run_in_process_and_again_when_the_file_changes(tmp_path, tiny_bert, tiny_glove,
                                                                                    monkeypatch):
    from augment.glove import GloveIndex
    parsed = []
    original = GloveIndex.from_lines.__func__
    monkeypatch.setattr(GloveIndex, "from_lines",
                        classmethod(lambda cls, *a, **k: parsed.append(k.get("source")) or original(cls, *a, **k)))
    _, manifest = _run(tmp_path, tiny_bert, tiny_glove, "--num_aug=2")
    assert parsed == [tiny_glove] and manifest["counts"]["stats"]["examples"] == 32
    assert resources._GLOVE_CACHE == {}  # released when the run ends
    copy = tmp_path / "glove.txt"
    copy.write_text("a 1 0\nb 0 1\n", encoding="utf-8")
    first = resources.load_glove(str(copy), 10)
    assert resources.load_glove(str(copy), 10) is first
    copy.write_text("a 1 0\nb 0 1\nc 1 1\n", encoding="utf-8")
    assert len(resources.load_glove(str(copy), 10)) == 3
    resources.forget_glove()


_FAULT_PROBE = builders.FAULT_PROBE + """
from pipelines import freed_memory

trimmed = faults()
kept = freed_memory.hold()
inner = freed_memory.hold()  # a task inside the scorer's hold
faults(2)
freed_memory.release()
reused = faults()  # the scorer still holds
freed_memory.release()
print(trimmed, kept, reused, faults())
"""


@pytest.mark.slow
@pytest.mark.skipif(not pathlib.Path("/proc/self/maps").exists(), reason="glibc malloc on Linux")
def test_the_masked_lm_process_reuses_freed_buffers_where_a_dask_nanny_set_the_trim_threshold(tmp_path):
    """Under dask's MALLOC_TRIM_THRESHOLD_ every buffer over 128 KiB is mapped and faulted in afresh; in the scoring
    process buffers are reused from the model's load to teardown (a task's hold inside it does not end that), and the
    worker's own settings come back after."""
    import os
    import subprocess
    import sys
    environ = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", _FAULT_PROBE], env=environ, capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    trimmed, kept, reused, restored = (int(value) for value in out.stdout.split())
    pages = builders.FAULT_PROBE_PAGES
    assert trimmed >= pages * 0.9 and restored >= pages * 0.9  # the nanny's setting, before and after
    assert kept == 65536 and reused < pages * 0.1
    out = subprocess.run([sys.executable, "-c", _FAULT_PROBE], env={k: v for k, v in environ.items()
                                                                    if k != "MALLOC_TRIM_THRESHOLD_"},
                         capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.split()[1] == "None"  # nothing set, nothing changed
