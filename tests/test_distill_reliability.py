"""Faults a user meets end in one line and exit status 1, never a traceback, and a checkpoint never runs code.

Each test builds its small inputs (tests/builders.py) and damages a copy; the `slow` ones go through
`python -m distill.run` in a subprocess, from a folder outside the source tree.
"""

import json
import os
import pathlib
import pickle
import shutil
import subprocess
import sys

import pytest
import torch

from distill import data, run
from tests import builders
from contract.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Touch:
    """Unpickling this creates `path`: what a hostile checkpoint would do with any code."""

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def __reduce__(self):
        return pathlib.Path.touch, (self.path,)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("reliability")
    tokenizer = builders.make_tokenizer(str(base / "tok"))
    return {
        "base": base,
        "tokenizer": tokenizer,
        "teacher": builders.make_teacher(str(base / "teacher"), tokenizer, layers=2, hidden=24, heads=2,
                                        intermediate=48),
        "student": builders.write_student_config(str(base / "student.json"), layers=1, hidden=12, heads=2,
                                                intermediate=24),
        "corpus": builders.write_corpus(str(base / "corpus"), tokenizer, files=2, rows_per_file=16, epochs=1,
                                       row_group_size=8),
    }


def _general(setup, output, *extra, data_dir=None, teacher=None, student=None):
    return ["general", "--data", str(data_dir or setup["corpus"]), "--teacher", str(teacher or setup["teacher"]),
            "--student", str(student or setup["student"]), "--output", str(output), "--batch_size", "4",
            "--shuffle_buffer", "8", "--log_interval", "1", "--num_workers", "0", "--max_steps", "2", *extra]


def _refused(argv, *expected):
    """main(argv) ends with one `error: ...` line (SystemExit, status 1) that contains each expected text."""
    with pytest.raises(SystemExit) as raised:
        run.main(argv)
    text = str(raised.value.code)
    assert text.startswith("error: ") and "\n" not in text, text
    for part in expected:
        assert part in text, (part, text)
    return text


def _cli(argv, cwd, *expected, env=None):
    """`python -m distill.run argv` from `cwd` outside the source tree: status 1, last stderr line `error: ...`."""
    environment = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                   "OMP_NUM_THREADS": "1", **(env or {})}
    result = subprocess.run([sys.executable, "-m", "distill.run", *argv], cwd=str(cwd), env=environment,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:"), result.stderr[-3000:]
    for part in expected:
        assert part in last, (part, last)
    return last


def _copy(setup, tmp_path, name="corpus"):
    return pathlib.Path(shutil.copytree(setup["corpus"], tmp_path / name))


def _shard(corpus):
    return corpus / "epoch-0" / "part-00000-of-00002.parquet"


def _hostile_checkpoint(path, marker):
    torch.save({"step": 1, "model": _Touch(marker)}, str(path))


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


def _mark_as_training_output(output):
    from contract.layout import TRAINING_MARKER
    (output / TRAINING_MARKER).write_text('{"kind": "training"}')


def test_the_hostile_checkpoint_would_run_code_when_unpickled(tmp_path):
    """The payload the tests below use is live: plain pickle runs it (so its absence there means it was refused)."""
    marker = tmp_path / "armed"
    pickle.loads(pickle.dumps({"step": _Touch(marker)}))
    assert marker.exists()


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_crafted_pickle_checkpoint_is_never_executed(setup, tmp_path, writer):
    output, marker = tmp_path / "out", tmp_path / "pwned"
    output.mkdir()
    _mark_as_training_output(output)  # a folder a run of ours wrote, its checkpoint tampered with
    if writer == "torch.save":
        _hostile_checkpoint(output / "checkpoint.pt", marker)
    else:  # the legacy (non-zip) format
        with open(output / "checkpoint.pt", "wb") as handle:
            pickle.dump({"step": 1, "model": _Touch(marker)}, handle)
    # torch.save's format: the globals it names (a bare pickle only says it was refused).
    reason = "UnpicklingError: Unsupported global" if writer == "torch.save" else "(UnpicklingError)"
    text = _refused(_general(setup, output), str(output / "checkpoint.pt"), reason, "--no_resume")
    assert not marker.exists() and "weights_only" not in text  # torch's advice to load it anyway is not passed on
    assert not (output / "metrics.jsonl").exists()


def test_damaged_checkpoint_is_one_line(setup, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    _mark_as_training_output(output)  # a folder a run of ours wrote, its checkpoint tampered with
    (output / "checkpoint.pt").write_bytes(os.urandom(4096))
    _refused(_general(setup, output), str(output / "checkpoint.pt"), "damaged", "--no_resume")


def test_checkpoint_of_tensors_without_the_trainer_keys_is_one_line(setup, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    _mark_as_training_output(output)  # a folder a run of ours wrote, its checkpoint tampered with
    torch.save({"weight": torch.zeros(2)}, str(output / "checkpoint.pt"))
    _refused(_general(setup, output), "not a distill checkpoint", "step")


def test_checkpoint_loads_with_weights_only_and_no_resume_starts_afresh(setup, tmp_path):
    output = tmp_path / "out"
    run.main(_general(setup, output))
    state = torch.load(str(output / "checkpoint.pt"), map_location="cpu", weights_only=True)
    rng = state["ranks"][0]["rng"]
    assert torch.is_tensor(rng["python"]["internal"]) and torch.is_tensor(rng["numpy"]["keys"])
    assert state["ranks"][0]["position"]["epoch"] == 0
    # --no_resume ignores (and then overwrites) even a file that cannot be read.
    (output / "checkpoint.pt").write_bytes(b"garbage")
    run.main(_general(setup, output, "--no_resume"))
    assert torch.load(str(output / "checkpoint.pt"), weights_only=True)["step"] == 2


def test_resumed_metrics_have_each_step_once(setup, tmp_path):
    """A run killed after logging past its last checkpoint repeats those steps on resume: they are kept once."""
    output = tmp_path / "out"
    argv = _general(setup, output, "--max_steps", "8", "--checkpoint_interval", "100")
    run.main([*argv, "--halt_at_step", "3"])
    shutil.copy(output / "checkpoint.pt", tmp_path / "step-3.pt")
    run.main([*argv, "--halt_at_step", "6"])
    with open(output / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"step": 7, "loss"')  # the kill came while a line was being written
    shutil.copy(tmp_path / "step-3.pt", output / "checkpoint.pt")  # the last checkpoint the killed run left
    run.main(argv)
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))
    csv_steps = [line.split(",")[0] for line in (output / "metrics.csv").read_text().splitlines()[1:]]
    assert csv_steps == [str(step) for step in range(1, 9)]
    assert (output / "loss.svg").exists()


# ---------------------------------------------------------------------------------------------------------------
# Models


def test_teacher_folder_without_weights_is_one_line(setup, tmp_path):
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copy(os.path.join(setup["teacher"], "config.json"), folder)
    _refused(_general(setup, tmp_path / "out", teacher=folder), f"--teacher {folder}", "no weights")
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_student_folder_without_weights_is_refused_not_trained_from_random_weights(setup, tmp_path):
    folder = tmp_path / "student-config-only"
    folder.mkdir()
    shutil.copy(os.path.join(setup["teacher"], "config.json"), folder)
    _refused(_general(setup, tmp_path / "out", student=folder), f"--student {folder}", "config.json to start from")


def test_missing_teacher_folder_is_one_line(setup, tmp_path):
    _refused(_general(setup, tmp_path / "out", teacher=tmp_path / "no-such-teacher"), "no such file or directory")


@pytest.mark.parametrize("damage", ["weights", "config"])
def test_garbage_teacher_or_student_folder_is_one_line(setup, tmp_path, damage):
    folder = pathlib.Path(shutil.copytree(setup["teacher"], tmp_path / "damaged"))
    if damage == "weights":
        (folder / "model.safetensors").write_bytes(b"\x00garbage" * 64)
    else:
        (folder / "config.json").write_text("{not json")
    _refused(_general(setup, tmp_path / "out", teacher=folder), "cannot load", str(folder))
    _refused(_general(setup, tmp_path / "out2", student=folder), f"{folder}")


def _small_vocab_teacher(setup, directory, vocab_size):
    from transformers import BertConfig, BertModel
    config = BertConfig(vocab_size=vocab_size, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=128)
    BertModel(config).save_pretrained(directory)
    setup["tokenizer"].save_pretrained(directory)
    return directory


def test_teacher_vocab_smaller_than_the_data_is_refused_at_start(setup, tmp_path):
    teacher = _small_vocab_teacher(setup, str(tmp_path / "small-vocab"), 100)
    _refused(_general(setup, tmp_path / "out", teacher=teacher), "vocab_size 100",
             f"{len(setup['tokenizer'])} tokens")
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_saved_student_with_another_vocab_is_refused(setup, tmp_path):
    student = _small_vocab_teacher(setup, str(tmp_path / "small-student"), 100)
    _refused(_general(setup, tmp_path / "out", student=student), "vocab_size 100", "teacher")


def test_token_id_past_the_vocab_in_a_shard_is_one_line(setup, tmp_path):
    """Shards whose ids exceed the vocab their manifest records (a mislabelled output) stop at the first batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    corpus = _copy(setup, tmp_path)
    for shard in (corpus / "epoch-0").glob("*.parquet"):
        table = pq.read_table(shard)
        ids = [[65535 for _ in row] for row in table.column("input_ids").to_pylist()]  # past any vocab here
        column = table.schema.get_field_index("input_ids")
        table = table.set_column(column, "input_ids", pa.array(ids, type=pa.list_(pa.uint16())))
        pq.write_table(table, shard)
    _refused(_general(setup, tmp_path / "out", data_dir=corpus), "token id", "regenerate")


# ---------------------------------------------------------------------------------------------------------------
# Device and output


def test_device_cuda_without_cuda_is_refused(setup, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _refused(_general(setup, tmp_path / "out", "--device", "cuda"), "--device cuda", "CUDA is not available")
    assert not (tmp_path / "out").exists()


def test_output_that_is_a_file_is_refused(setup, tmp_path):
    output = tmp_path / "a-file"
    output.write_text("keep me")
    _refused(_general(setup, output), f"--output {output} is a file, not a directory")
    assert output.read_text() == "keep me"


def test_binary_dev_file_is_one_line(tmp_path):
    from distill import glue
    dev = tmp_path / "dev.tsv"
    dev.write_bytes(b"sentence\tlabel\n\xff\xfe\x00garbage\t1\n")
    with pytest.raises(UserError, match="is not a UTF-8 TSV"):
        glue.dev_sets(glue.get_task("SST-2"), str(dev))


# ---------------------------------------------------------------------------------------------------------------
# The reader's checks at open


def _open(corpus, setup):
    return data.open_corpus(str(corpus), tokenizer=setup["tokenizer"], tokenizer_name="tok", batch_size=4,
                            shuffle_buffer=8, seed=0)


def _edit_manifest(corpus, edit):
    manifest = json.loads((corpus / "manifest.json").read_text())
    edit(manifest)
    (corpus / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage,expected", [
    ("missing", "listed in the manifest but missing"),
    ("truncated", "not a readable Parquet file"),
    ("not-parquet", "not a readable Parquet file"),
    ("rows", "holds 16 rows but the manifest records 17"),
])
def test_damaged_shard_is_refused_at_open_naming_it(setup, tmp_path, damage, expected):
    corpus = _copy(setup, tmp_path)
    shard = _shard(corpus)
    if damage == "missing":
        shard.unlink()
    elif damage == "truncated":
        content = shard.read_bytes()
        shard.write_bytes(content[:len(content) // 2])
    elif damage == "not-parquet":
        shard.write_text("input_ids\tsegment_a_len\n1 2 3\t2\n")
    else:
        _edit_manifest(corpus, lambda m: m["outputs"]["epoch-0"]["files"][0].update(rows=17))
    with pytest.raises(UserError) as raised:
        _open(corpus, setup)
    assert str(shard) in str(raised.value) and expected in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside/part-00000-of-00002.parquet",
                                  "epoch-0/../../outside.parquet", "file:///etc/passwd"])
def test_manifest_paths_must_stay_inside_the_data_folder(setup, tmp_path, path):
    corpus = _copy(setup, tmp_path)
    _edit_manifest(corpus, lambda m: m["outputs"]["epoch-0"]["files"][0].update(path=path))
    with pytest.raises(UserError, match="not inside the data folder"):
        _open(corpus, setup)


def test_newer_major_format_version_is_refused(setup, tmp_path):
    corpus = _copy(setup, tmp_path)
    _edit_manifest(corpus, lambda m: m.update(format_version=2))
    with pytest.raises(UserError, match="format_version 2, newer than the 1"):
        _open(corpus, setup)
    _edit_manifest(corpus, lambda m: m.update(format_version="1.3"))  # a newer minor is read
    _open(corpus, setup)


def test_augmented_data_shards_are_checked_too(setup, tmp_path):
    augmented = pathlib.Path(builders.write_augmented(str(tmp_path / "aug"), setup["tokenizer"], examples=8,
                                                     augmentations=1))
    shard = augmented / "data" / "part-00001-of-00002.parquet"
    shard.unlink()
    with pytest.raises(UserError, match="part-00001-of-00002.parquet is listed in the manifest but missing"):
        data.open_augmented(str(augmented), tokenizer=setup["tokenizer"], max_seq_len=16, batch_size=4,
                            shuffle_buffer=8, seed=0)


def test_missing_shard_stops_the_trainer_before_the_first_step(setup, tmp_path):
    corpus = _copy(setup, tmp_path)
    _shard(corpus).unlink()
    _refused(_general(setup, tmp_path / "out", data_dir=corpus), str(_shard(corpus)))
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def _unreadable(table):
    raise UserError("part-00003.parquet cannot be read (ArrowInvalid: bad page); rerun the pipeline")


def test_an_error_raised_in_a_dataloader_worker_arrives_as_its_one_line(setup):
    """torch hands a worker's exception back only as its traceback's text: the reader passes the error as a value."""
    output = data.open_output_dir(str(setup["corpus"]), kind="general-distillation")
    stream = data.ShardStream(fs=output.fs, files_by_epoch=[output.files("epoch-0")], columns=["input_ids"],
                              encoder=_unreadable, batch_size=4, shuffle_buffer=8, seed=0, num_workers=1)
    with pytest.raises(UserError) as raised:
        next(data.read_batches(stream))
    assert str(raised.value) == "part-00003.parquet cannot be read (ArrowInvalid: bad page); rerun the pipeline"


# ---------------------------------------------------------------------------------------------------------------
# Through the command line, from outside the source tree


@pytest.mark.slow
def test_cli_crafted_pickle_checkpoint(setup, tmp_path):
    output, marker = tmp_path / "out", tmp_path / "pwned"
    output.mkdir()
    _mark_as_training_output(output)  # a folder a run of ours wrote, its checkpoint tampered with
    _hostile_checkpoint(output / "checkpoint.pt", marker)
    _cli(_general(setup, output), tmp_path, str(output / "checkpoint.pt"))
    assert not marker.exists()


@pytest.mark.slow
def test_cli_device_cuda_without_cuda(setup, tmp_path):
    # No visible GPU: the same refusal on a machine that has one.
    _cli(_general(setup, tmp_path / "out", "--device", "cuda"), tmp_path, "--device cuda",
         env={"CUDA_VISIBLE_DEVICES": ""})


@pytest.mark.slow
def test_cli_output_is_a_file(setup, tmp_path):
    output = tmp_path / "a-file"
    output.write_text("keep me")
    _cli(_general(setup, output), tmp_path, "is a file, not a directory")
    assert output.read_text() == "keep me"


@pytest.mark.slow
def test_cli_missing_shard(setup, tmp_path):
    corpus = _copy(setup, tmp_path)
    _shard(corpus).unlink()
    _cli(_general(setup, tmp_path / "out", data_dir=corpus), tmp_path, str(_shard(corpus)), "missing")
    assert not (tmp_path / "out" / "metrics.jsonl").exists()
