"""The faults of README's "Trust" list, as users meet them, through the installed commands in a folder outside the
source tree: each keeps every row or stops with exit status 1, one `error:` line and no `_SUCCESS`, and no file the
run did not write is changed."""

import bz2
import gzip
import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

BIN = pathlib.Path(sys.executable).parent


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    env.update(extra)
    return env


def _run(cwd, *argv, timeout=600):
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=_env())


def _one_line(result, *expected):
    assert result.returncode not in (0, None), result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "[tinybert-error]" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr[-3000:]
    assert sum(line.startswith("error: ") for line in lines) == 1, result.stderr[-3000:]
    for text in expected:
        assert text in lines[-1], lines[-1]
    return lines[-1]


def _hashes(folder: pathlib.Path):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    result = _run(root, "tinybert-demo-assets", "--output", "demo")
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def _augment(cwd, *argv):
    return _run(cwd, "tinybert-augment", "--model", str(cwd / "demo" / "bert"), "--num_aug", "2", "--quiet", *argv)


# ------------------------------------------------------------------------------------------------ outputs
def test_training_output_that_is_a_copy_of_the_teacher_is_refused(demo, tmp_path):
    shutil.copytree(demo / "demo" / "bert", tmp_path / "teacher")
    before = _hashes(tmp_path / "teacher")
    corpus = _run(demo, "tinybert-corpus", "--input", "demo/corpus.txt", "--output", str(tmp_path / "corpus"),
                  "--tokenizer", "demo/bert", "--max_seq_len", "32", "--quiet")
    assert corpus.returncode == 0, corpus.stderr[-2000:]
    for output in (tmp_path / "teacher", tmp_path / "teacher" / "sub"):
        result = _run(demo, "tinybert-distill", "general", "--data", str(tmp_path / "corpus"), "--teacher",
                      str(tmp_path / "teacher"), "--student", "demo/student.json", "--output", str(output),
                      "--max_steps", "1", "--batch_size", "4")
        _one_line(result, "--teacher")
    assert _hashes(tmp_path / "teacher") == before


def test_training_into_a_folder_of_someone_elses_files_is_refused(demo, tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "config.json").write_text('{"mine": true}')
    (theirs / "metrics.csv").write_text("step,loss\n")
    before = _hashes(theirs)
    result = _run(demo, "tinybert-distill", "finetune", "--task", "SST-2", "--model", "demo/teacher-sst2", "--data",
                  str(tmp_path / "nothing"), "--output", str(theirs), "--max_steps", "1")
    _one_line(result)
    assert _hashes(theirs) == before


def test_input_inside_the_output_is_refused_and_the_output_kept(demo, tmp_path):
    out = tmp_path / "aug"
    first = _augment(demo, "--glove", "demo/glove.txt", "--output", str(out))
    assert first.returncode == 0, first.stderr[-2000:]
    before = _hashes(out)
    result = _augment(demo, "--glove", "demo/glove.txt", "--input", str(out / "train_aug.tsv"), "--output", str(out),
                      "--overwrite")
    _one_line(result, "--input")
    assert _hashes(out) == before and (out / "_SUCCESS").exists()


def test_root_output_is_refused_at_once(demo):
    started = time.time()
    result = _augment(demo, "--glove", "demo/glove.txt", "--output", "/", "--overwrite")
    _one_line(result)
    assert time.time() - started < 60


# ------------------------------------------------------------------------------------------------ resources
def test_model_folder_without_tokenizer_files_is_refused(demo, tmp_path):
    folder = tmp_path / "model-only"
    shutil.copytree(demo / "demo" / "bert", folder)
    for name in os.listdir(folder):
        if "token" in name or name.startswith("vocab") or name == "special_tokens_map.json":
            os.remove(folder / name)
    _one_line(_run(demo, "tinybert-corpus", "--input", "demo/corpus.txt", "--output", str(tmp_path / "c"),
                   "--tokenizer", str(folder), "--quiet"), str(folder), "tokenizer")
    assert not (tmp_path / "c" / "_SUCCESS").exists()


def test_encoder_without_a_masked_lm_head_is_refused(demo, tmp_path):
    from transformers import AutoTokenizer, BertModel
    encoder = BertModel.from_pretrained(str(demo / "demo" / "bert"))
    encoder.save_pretrained(tmp_path / "encoder")
    AutoTokenizer.from_pretrained(str(demo / "demo" / "bert")).save_pretrained(tmp_path / "encoder")
    result = _run(demo, "tinybert-augment", "--model", str(tmp_path / "encoder"), "--glove", "demo/glove.txt",
                  "--output", str(tmp_path / "out"), "--quiet")
    _one_line(result, "masked")
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def _glove_variant(demo, tmp_path, edit, name="glove.txt"):
    lines = (demo / "demo" / "glove.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    data = edit(lines)
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else "".join(data).encode("utf-8"))
    return path


@pytest.mark.parametrize("damage, expected", [
    ("cut_gz", "truncated"), ("inf", "line 3"), ("extra", "line 3"), ("missing", "line 3")])
def test_damaged_glove_stops_with_one_line(demo, tmp_path, damage, expected):
    def edit(lines):
        if damage == "cut_gz":
            data = gzip.compress("".join(lines).encode("utf-8"))
            return data[:len(data) // 2]
        word, *values = lines[2].split()
        if damage == "inf":
            values[0] = "inf"
        elif damage == "extra":
            values.append("-0.54")
        else:
            values.pop()
        lines[2] = " ".join([word, *values]) + "\n"
        return lines
    path = _glove_variant(demo, tmp_path, edit, "glove.txt.gz" if damage == "cut_gz" else "glove.txt")
    result = _augment(demo, "--glove", str(path), "--output", str(tmp_path / "out"))
    _one_line(result, str(path), expected)
    assert not (tmp_path / "out" / "_SUCCESS").exists()


# ------------------------------------------------------------------------------------------------ labels, texts
def _rejects(out: pathlib.Path):
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest["counts"]["rejects"] if "rejects" in manifest.get("counts", {}) else manifest.get("rejects", {})


def test_float_and_missing_hub_labels_are_rejects_never_cast(demo, tmp_path):
    sentences = [f"a {w} film about the sea ." for w in ("warm", "dull", "bright", "slow", "funny", "odd")] * 4
    labels = [0, 1] * 10 + [0.7, 1.9, None, float("nan")]
    table = pa.table({"sentence": sentences, "label": pa.array(labels, pa.float64()),
                      "idx": list(range(len(sentences)))})
    pq.write_table(table, tmp_path / "train.parquet")
    result = _augment(demo, "--glove", "demo/glove.txt", "--input", str(tmp_path / "train.parquet"), "--output",
                      str(tmp_path / "out"), "--max_reject_fraction", "0.5")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pq.read_table(tmp_path / "out" / "data").to_pydict()
    originals = {i: label for i, label, n in zip(rows["example_id"], rows["label"], rows["aug_index"]) if n == 0}
    assert len(originals) == 20 and set(originals.values()) == {"0", "1"}
    rejects = pq.read_table(tmp_path / "out" / "rejects").to_pydict()
    assert sorted(rejects["reason"]) == ["bad_label"] * 4


def test_jsonl_labels_one_and_one_point_oh_are_one_class(demo, tmp_path):
    rows = [{"text": f"a {w} film about the sea .", "y": label}
            for w, label in zip(["warm", "dull", "bright", "slow"] * 3, [1, 1.0, 0, 0.0] * 3)]
    rows += [{"text": {"not": "text"}, "y": 1}, {"text": "\u200b\u200d\u2060", "y": 0}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    result = _augment(demo, "--glove", "demo/glove.txt", "--task", "generic", "--text_columns", "text",
                      "--label_column", "y", "--input", str(path), "--output", str(tmp_path / "out"),
                      "--max_reject_fraction", "0.5")
    assert result.returncode == 0, result.stderr[-3000:]
    data = pq.read_table(tmp_path / "out" / "data").to_pydict()
    assert set(data["label"]) == {"0", "1"}
    assert all(text.strip("\u200b\u200d\u2060") for text in data["text"])
    rejects = pq.read_table(tmp_path / "out" / "rejects").to_pydict()
    assert sorted(rejects["reason"]) == ["bad_text", "empty_text"]


# ------------------------------------------------------------------------------------------------ corpus inputs
def test_truncated_text_gz_is_one_line_without_beams_traceback(demo, tmp_path):
    data = gzip.compress((demo / "demo" / "corpus.txt").read_bytes() * 20)
    (tmp_path / "c.txt.gz").write_bytes(data[:len(data) // 2])
    result = _run(demo, "tinybert-corpus", "--input", str(tmp_path / "c.txt.gz"), "--output", str(tmp_path / "o"),
                  "--tokenizer", "demo/bert", "--quiet")
    _one_line(result, "c.txt.gz", "truncated")
    assert not (tmp_path / "o" / "_SUCCESS").exists()


def test_compression_is_told_by_content_not_name(demo, tmp_path, shared_data):
    xml = bz2.decompress((shared_data / "enwiki-sample-pages-articles.xml.bz2").read_bytes())
    counts = {}
    for name, data in [("a.xml.bz2", gzip.compress(xml)), ("b.xml.gz", xml), ("CLEAN.XML.BZ2", bz2.compress(xml))]:
        (tmp_path / name).write_bytes(data)
        result = _run(demo, "tinybert-corpus", "--input", str(tmp_path / name), "--input_format", "wikipedia-xml",
                      "--output", str(tmp_path / f"out-{name}"), "--tokenizer", "demo/bert", "--quiet",
                      "--max_reject_fraction", "0.9")
        assert result.returncode == 0, result.stderr[-2000:]
        corpus = json.loads((tmp_path / f"out-{name}" / "manifest.json").read_text())["counts"]["corpus"]
        counts[name] = (corpus["documents"], corpus["tokens"])  # the rows differ: a document's seed is its file name
    assert len(set(counts.values())) == 1 and min(counts.values())[0] > 100, counts


# ------------------------------------------------------------------------------------------------ signals
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_run_with_one_line(demo, tmp_path, signum):
    lines = (demo / "demo" / "train.tsv").read_text().splitlines()
    rows = [f"{copy} {line}" for copy in range(400) for line in lines[1:]]  # distinct sentences: real work
    (tmp_path / "big.tsv").write_text("\n".join([lines[0]] + rows) + "\n")
    process = subprocess.Popen([str(BIN / "tinybert-augment"), "--model", "demo/bert", "--glove", "demo/glove.txt",
                                "--input", str(tmp_path / "big.tsv"), "--output", str(tmp_path / "out"), "--quiet"],
                               cwd=demo, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(7)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if (tmp_path / "out" / "_SUCCESS").exists():
        pytest.skip("the run finished before the signal")
    _one_line(result, signal.Signals(signum).name, "--overwrite")
    assert not (tmp_path / "out" / "_SUCCESS").exists()


# ------------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def corpus(demo):
    result = _run(demo, "tinybert-corpus", "--input", "demo/corpus.txt", "--output", "out/corpus", "--tokenizer",
                  "demo/bert", "--max_seq_len", "32", "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    return demo / "out" / "corpus"


def _general(demo, corpus, output, *argv):
    return _run(demo, "tinybert-distill", "general", "--data", str(corpus), "--teacher", "demo/bert", "--student",
                "demo/student.json", "--output", str(output), "--batch_size", "4", "--num_workers", "0", *argv)


def test_a_diverging_run_stops_and_saves_no_non_finite_model(demo, corpus, tmp_path):
    result = _general(demo, corpus, tmp_path / "g", "--max_steps", "6", "--learning_rate", "1e6",
                      "--checkpoint_interval", "1")
    _one_line(result, "not finite")
    from safetensors.numpy import load_file
    import numpy as np
    for weights in (tmp_path / "g").rglob("*.safetensors"):
        assert all(np.isfinite(array).all() for array in load_file(str(weights)).values()), weights
    if (tmp_path / "g" / "checkpoint.pt").exists():
        import torch
        state = torch.load(tmp_path / "g" / "checkpoint.pt", weights_only=True)
        assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_a_second_run_into_a_live_runs_output_is_refused(demo, corpus, tmp_path):
    first = subprocess.Popen([str(BIN / "tinybert-distill"), "general", "--data", str(corpus), "--teacher",
                              "demo/bert", "--student", "demo/student.json", "--output", str(tmp_path / "g"),
                              "--batch_size", "4", "--num_workers", "0", "--max_steps", "100000"],
                             cwd=demo, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "g" / "_IN_PROGRESS").exists() and time.time() < deadline:
            time.sleep(0.5)
        second = _general(demo, corpus, tmp_path / "g", "--max_steps", "1")
        _one_line(second, "in use")
    finally:
        first.kill()
        first.wait()
    resumed = _general(demo, corpus, tmp_path / "g", "--max_steps", "2")  # the killed run's folder: ours, resumable
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not (tmp_path / "g" / "_IN_PROGRESS").exists()


def test_eval_on_labels_the_model_does_not_know_is_one_line(demo, tmp_path):
    lines = (demo / "demo" / "dev.tsv").read_text().splitlines()
    (tmp_path / "dev.tsv").write_text("\n".join([lines[0]] + [line.rsplit("\t", 1)[0] + "\tpositive"
                                                               for line in lines[1:]]) + "\n")
    result = _run(demo, "tinybert-distill", "eval", "--task", "SST-2", "--model", "demo/teacher-sst2", "--data",
                  str(tmp_path / "dev.tsv"))
    _one_line(result, "'positive'", "'0', '1'")


# ------------------------------------------------------------------------------------------------ corpus records
def test_a_dump_of_redirects_says_what_it_found(demo, tmp_path):
    pages = "".join(f"<page><title>R{i}</title><ns>0</ns><id>{i}</id><redirect title='X'/><revision><text>"
                    f"#REDIRECT [[X]]</text></revision></page>\n" for i in range(39))
    (tmp_path / "d.xml").write_text(f"<mediawiki>\n{pages}</mediawiki>\n")
    result = _run(demo, "tinybert-corpus", "--input", str(tmp_path / "d.xml"), "--input_format", "wikipedia-xml",
                  "--output", str(tmp_path / "o"), "--tokenizer", "demo/bert", "--quiet")
    _one_line(result, "39 records", "redirect 39")


def test_wikipedia_parquet_rows_sharing_an_id_are_rejects(demo, tmp_path):
    text = (demo / "demo" / "corpus.txt").read_text().split("\n\n")
    table = pa.table({"id": ["1", "2", "2", "3"], "title": ["a", "b", "c", "d"],
                      "text": [text[i % len(text)] for i in range(4)]})
    pq.write_table(table, tmp_path / "w.parquet", row_group_size=2)
    result = _run(demo, "tinybert-corpus", "--input", str(tmp_path / "w.parquet"), "--input_format",
                  "wikipedia-parquet", "--output", str(tmp_path / "o"), "--tokenizer", "demo/bert", "--quiet",
                  "--max_seq_len", "32", "--max_reject_fraction", "0.5")
    assert result.returncode == 0, result.stderr[-2000:]
    rejects = pq.read_table(tmp_path / "o" / "rejects").to_pydict()
    assert rejects["reason"] == ["duplicate_id"]
    ids = pq.read_table(tmp_path / "o" / "epoch-0").column("instance_id").to_pylist()
    assert len(ids) == len(set(ids))
