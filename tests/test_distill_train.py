"""The trainer end to end on tiny teachers: general, both task stages, eval, resume, clear errors, DDP."""

import json
import os
import subprocess
import sys

import pytest
import torch

from distill import run
from tests import builders

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("distill")
    tokenizer = builders.make_tokenizer(str(base / "tok"))
    return {
        "base": base,
        "tokenizer": tokenizer,
        "teacher": builders.make_teacher(str(base / "teacher"), tokenizer, layers=4, hidden=48, heads=12),
        "task_teacher": builders.make_teacher(str(base / "task_teacher"), tokenizer, layers=4, hidden=48, heads=12,
                                             num_labels=2, seed=1),
        "student": builders.write_student_config(str(base / "student.json"), layers=2, hidden=24, heads=12),
        "corpus": builders.write_corpus(str(base / "corpus"), tokenizer, files=4, rows_per_file=40, epochs=2),
        "augmented": builders.write_augmented(str(base / "aug"), tokenizer, examples=30, augmentations=3),
        "dev": builders.write_sst2_dev(str(base / "dev.tsv"), rows=20, malformed=1),
    }


def _metrics(output):
    with open(os.path.join(output, "metrics.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _general(setup, output, *extra):
    return ["general", "--data", setup["corpus"], "--teacher", setup["teacher"], "--student", setup["student"],
            "--output", str(output), "--batch_size", "8", "--log_interval", "1", "--learning_rate", "1e-3",
            "--warmup_proportion", "0", "--num_workers", "0", *extra]


def test_general_distillation_lowers_the_loss_and_saves_a_loadable_student(setup):
    from transformers import AutoModel
    output = setup["base"] / "general"
    run.main(_general(setup, output, "--max_steps", "30", "--shuffle_buffer", "64"))
    records = _metrics(output)
    assert [r["step"] for r in records] == list(range(1, 31))
    assert all({"loss", "att_loss", "rep_loss", "lr"} <= set(r) for r in records)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    first = sum(r["loss"] for r in records[:5]) / 5
    last = sum(r["loss"] for r in records[-5:]) / 5
    assert last < 0.9 * first, (first, last)
    for name in ("metrics.csv", "loss.svg", "fit_dense.pt", "checkpoint.pt", "distill_config.json", "config.json"):
        assert (output / name).exists(), name
    student = AutoModel.from_pretrained(str(output))
    assert student.config.num_hidden_layers == 2 and student.config.hidden_size == 24
    state = torch.load(output / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "step", "ranks", "config"} <= set(state)
    assert state["step"] == 30 and state["config"]["optim"]["max_steps"] == 30


def test_pad_to_max_length_reaches_the_trainer(setup):
    base = setup["base"]
    argv = ["task", "--stage", "intermediate", "--task", "SST-2", "--data", setup["augmented"], "--teacher",
            setup["task_teacher"], "--student", setup["student"], "--batch_size", "8", "--num_workers", "0",
            "--max_steps", "1", "--teacher_mode", "eval"]  # no teacher dropout: only the padding differs
    run.main([*argv, "--output", str(base / "dynamic-1")])
    run.main([*argv, "--output", str(base / "fixed-1"), "--pad_to_max_length"])
    assert json.loads((base / "fixed-1" / "distill_config.json").read_text())["data"]["pad_to_max_length"]
    dynamic, fixed = _metrics(base / "dynamic-1")[0], _metrics(base / "fixed-1")[0]
    # The same first batch of short sentences, padded to SST-2's 64 tokens: the [PAD] positions change the loss.
    assert torch.isfinite(torch.tensor(fixed["loss"])) and fixed["loss"] != pytest.approx(dynamic["loss"], rel=1e-5)


def test_student_preset_4l_312h(setup):
    output = setup["base"] / "preset"
    run.main(_general(setup, output, "--max_steps", "2", "--student", "4L-312H"))
    config = json.loads((output / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"],
            config["num_attention_heads"]) == (4, 312, 1200, 12)


@pytest.mark.parametrize("num_workers,accumulation", [(0, 1), (2, 2)])
def test_resume_gives_the_same_next_steps_as_an_uninterrupted_run(setup, num_workers, accumulation):
    extra = ["--max_steps", "8", "--num_workers", str(num_workers), "--shuffle_buffer", "16",
             "--gradient_accumulation_steps", str(accumulation), "--checkpoint_interval", "100"]
    straight = setup["base"] / f"straight-{num_workers}"
    run.main(_general(setup, straight, *extra))
    resumed = setup["base"] / f"resumed-{num_workers}"
    run.main(_general(setup, resumed, *extra, "--halt_at_step", "4"))
    assert [r["step"] for r in _metrics(resumed)] == [1, 2, 3, 4]
    assert not (resumed / "model.safetensors").exists()  # killed runs do not export
    run.main(_general(setup, resumed, *extra))
    expected, got = _metrics(straight), _metrics(resumed)
    assert [r["step"] for r in got] == list(range(1, 9))
    for a, b in zip(expected, got):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7), (a, b)
        assert a["lr"] == pytest.approx(b["lr"])


def test_task_stages_then_eval(setup, capsys):
    general = setup["base"] / "general-for-task"
    run.main(_general(setup, general, "--max_steps", "3"))
    intermediate = setup["base"] / "task-int"
    common = ["--task", "SST-2", "--data", setup["augmented"], "--teacher", setup["task_teacher"],
              "--batch_size", "8", "--log_interval", "1", "--num_workers", "0"]
    run.main(["task", "--stage", "intermediate", *common, "--student", str(general), "--output", str(intermediate),
              "--max_steps", "4"])
    records = _metrics(intermediate)
    assert len(records) == 4 and {"att_loss", "rep_loss"} <= set(records[0])
    # Stage 1 keeps the learning rate constant by default (the reference's BertAdam schedule 'none').
    assert [r["lr"] for r in records] == [5e-5] * 4
    saved = json.loads((intermediate / "distill_config.json").read_text())
    assert saved["optim"]["lr_schedule"] == "auto" and saved["resolved"]["lr_schedule"] == "constant"
    prediction = setup["base"] / "task-pred"
    run.main(["task", "--stage", "prediction", *common, "--student", str(intermediate), "--output", str(prediction),
              "--epochs", "1", "--dev", setup["dev"], "--eval_interval", "5", "--temperature", "2"])
    records = _metrics(prediction)
    assert len(records) == 15 and "cls_loss" in records[0]  # 120 rows / 8 per step
    # The prediction stage warms up (int(0.1 * 15) = 1 step) and decays linearly towards 0.
    lrs = [r["lr"] for r in records]
    assert lrs[0] == lrs[1] == pytest.approx(5e-5) and lrs[-1] == pytest.approx(5e-5 / 14)
    assert all(later < earlier for earlier, later in zip(lrs[1:], lrs[2:]))
    evals = [json.loads(line) for line in (prediction / "eval_results.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [5, 10, 15]
    assert 0.0 <= evals[-1]["sst-2"]["acc"] <= 1.0 and evals[-1]["sst-2"]["malformed_rows"] == 1
    # The best-on-dev student (the reference keeps only that one) is in OUT/best: the first step with the best acc.
    best = json.loads((prediction / "best" / "eval_results.json").read_text())
    accs = [e["sst-2"]["acc"] for e in evals]
    assert (best["split"], best["metric"]) == ("sst-2", "acc")
    assert best["value"] == max(accs) and best["step"] == evals[accs.index(max(accs))]["step"]
    assert best["results"]["sst-2"] == evals[accs.index(max(accs))]["sst-2"]
    assert (prediction / "best" / "model.safetensors").exists() and not (prediction / "best.tmp").exists()
    capsys.readouterr()
    best_again = run.main(["eval", "--task", "SST-2", "--model", str(prediction / "best"), "--data", setup["dev"]])
    assert best_again["sst-2"]["acc"] == pytest.approx(best["value"])
    results = run.main(["eval", "--task", "SST-2", "--model", str(prediction), "--data", setup["dev"]])
    assert results["sst-2"]["examples"] == 20 and results["sst-2"]["malformed_rows"] == 1
    assert results["sst-2"]["acc"] == pytest.approx(evals[-1]["sst-2"]["acc"])
    assert '"acc"' in capsys.readouterr().out


def test_student_init_teacher_starts_general_distillation_from_the_teacher(setup, tmp_path):
    student = builders.write_student_config(str(tmp_path / "student.json"), layers=2, hidden=48, heads=12,
                                            intermediate=96)
    runs = {}
    for init in ("random", "teacher"):
        output = tmp_path / init
        run.main(_general(setup, output, "--max_steps", "1", "--student", student, "--student_init", init))
        runs[init] = _metrics(output)[0]
        with open(output / "distill_config.json", encoding="utf-8") as handle:
            saved = json.load(handle)
        assert saved["distill"]["student_init"] == init
        assert (saved["resolved"]["fit_dense_init"] == "identity") == (init == "teacher")
    # Teacher layers 1 and 3 in a 2-layer student: the same batch costs far less than from random weights.
    assert runs["teacher"]["rep_loss"] < runs["random"]["rep_loss"] / 2


@pytest.mark.parametrize("change,message", [
    (lambda a, s: a.__setitem__(a.index("--data") + 1, str(s["base"] / "missing")), "does not exist"),
    (lambda a, s: a.__setitem__(a.index("--student") + 1, "5L-1H"), "neither a preset"),
    (lambda a, s: a.__setitem__(a.index("--batch_size") + 1, "0"), "--batch_size must be > 0"),
    (lambda a, s: a.__setitem__(a.index("--data") + 1, s["augmented"]), "'augmented-task' data"),
])
def test_user_errors_end_with_one_clear_line(setup, change, message):
    argv = _general(setup, setup["base"] / "errors", "--max_steps", "1")
    change(argv, setup)
    with pytest.raises(SystemExit) as raised:
        run.main(argv)
    text = str(raised.value.code)
    assert text.startswith("error: ") and message in text and "\n" not in text


def test_unfinished_shards_refused_from_the_command_line(setup, tmp_path):
    corpus = builders.write_corpus(str(tmp_path / "c"), setup["tokenizer"], files=2, rows_per_file=4, epochs=1,
                                  success=False)
    argv = _general(setup, tmp_path / "out", "--max_steps", "1")
    argv[argv.index("--data") + 1] = corpus
    result = subprocess.run([sys.executable, "-m", "distill.run", *argv], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "_SUCCESS" in result.stderr and "Traceback" not in result.stderr


def test_ddp_two_cpu_processes_read_different_files(setup, tmp_path):
    output = tmp_path / "ddp"
    argv = _general(setup, output, "--max_steps", "4", "--shuffle_buffer", "16")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             "--master_port=29517", "-m", "distill.run", *argv], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["step"] for r in _metrics(output)] == [1, 2, 3, 4]
    assert (output / "model.safetensors").exists()
    state = torch.load(output / "checkpoint.pt", weights_only=True)
    assert len(state["ranks"]) == 2
    from distill import data
    streams = [data.open_corpus(setup["corpus"], tokenizer=setup["tokenizer"], tokenizer_name="t", batch_size=8,
                                shuffle_buffer=16, seed=42, rank=rank, world_size=2)[0] for rank in range(2)]
    files = [set(s.worker_files(0, 0)) for s in streams]
    assert files[0] and files[1] and not files[0] & files[1]
    # Each rank consumed 4 batches of its own files.
    assert [r["position"]["emitted"] for r in state["ranks"]] == [{"0": 32}, {"0": 32}]


def _prediction(setup, data_dir, teacher, output, *extra, task="SST-2"):
    return ["task", "--stage", "prediction", "--task", task, "--data", data_dir, "--teacher", teacher,
            "--student", setup["student"], "--output", str(output), "--batch_size", "8", "--log_interval", "1",
            "--num_workers", "0", "--seed", "7", *extra]


def test_soft_ce_reduction_mean_is_the_default_and_batchmean_is_num_labels_times_larger(setup):
    base = setup["base"]
    run.main(_prediction(setup, setup["augmented"], setup["task_teacher"], base / "ce-mean", "--max_steps", "1",
                         "--temperature", "2"))
    run.main(_prediction(setup, setup["augmented"], setup["task_teacher"], base / "ce-batchmean", "--max_steps", "1",
                         "--temperature", "2", "--soft_ce_reduction", "batchmean"))
    mean, batchmean = _metrics(base / "ce-mean")[0], _metrics(base / "ce-batchmean")[0]
    # The same student init and first batch; 2 classes: summing over them doubles the loss.
    assert batchmean["cls_loss"] == pytest.approx(2 * mean["cls_loss"], rel=1e-4)
    saved = json.loads((base / "ce-mean" / "distill_config.json").read_text())
    assert saved["distill"]["soft_ce_reduction"] == "mean" and saved["distill"]["regression_target"] == "labels"


def test_stsb_prediction_trains_on_labels_by_default_or_on_the_teacher(setup):
    base = setup["base"]
    teacher = builders.make_teacher(str(base / "stsb_teacher"), setup["tokenizer"], layers=4, hidden=48, heads=12,
                                   num_labels=1, seed=2)
    stsb = builders.write_augmented(str(base / "stsb"), setup["tokenizer"], task="STS-B",
                                   text_fields=("sentence1", "sentence2"), label_list=None, examples=20,
                                   augmentations=3)
    run.main(_prediction(setup, stsb, teacher, base / "stsb-labels", "--max_steps", "3", task="STS-B"))
    run.main(_prediction(setup, stsb, teacher, base / "stsb-teacher", "--max_steps", "3",
                         "--regression_target", "teacher", task="STS-B"))
    labels, teacher_target = _metrics(base / "stsb-labels"), _metrics(base / "stsb-teacher")
    assert len(labels) == len(teacher_target) == 3
    assert all(torch.isfinite(torch.tensor(r["cls_loss"])) for r in labels + teacher_target)
    # Same student, same first batch: the labels (scores in 0..5) are far from a random teacher's outputs (~0).
    assert labels[0]["cls_loss"] > 10 * teacher_target[0]["cls_loss"]


def test_stsb_row_without_a_label_is_a_clear_error(setup):
    base = setup["base"]
    teacher = builders.make_teacher(str(base / "stsb_teacher_null"), setup["tokenizer"], layers=4, hidden=48,
                                   heads=12, num_labels=1, seed=2)
    stsb = builders.write_augmented(str(base / "stsb-null"), setup["tokenizer"], task="STS-B",
                                   text_fields=("sentence1", "sentence2"), label_list=None, examples=8,
                                   augmentations=1, missing_labels=8)
    with pytest.raises(SystemExit) as raised:
        run.main(_prediction(setup, stsb, teacher, base / "stsb-null-out", "--max_steps", "1", task="STS-B"))
    text = str(raised.value.code)
    assert text.startswith("error: ") and "without a numeric label" in text and "\n" not in text
    assert "--regression_target teacher" in text
    # The teacher's output is defined for every row, so that option still trains on the same data.
    run.main(_prediction(setup, stsb, teacher, base / "stsb-null-teacher", "--max_steps", "1",
                         "--regression_target", "teacher", task="STS-B"))
    assert len(_metrics(base / "stsb-null-teacher")) == 1


def test_best_dev_student_is_the_first_with_the_highest_main_metric(setup, monkeypatch):
    from transformers import BertForSequenceClassification
    from distill import config as config_lib, trainer as trainer_lib
    output = setup["base"] / "best-logic"
    args = run._parser().parse_args(_prediction(setup, setup["augmented"], setup["task_teacher"], output,
                                                "--dev", setup["dev"], "--max_steps", "1"))
    trainer = trainer_lib.Trainer(config_lib.from_namespace(args, mode="task"), device=torch.device("cpu"))
    # Scripted dev accuracies; the classifier bias is set to the step so each saved model tells its step.
    script = {1: 0.5, 2: 0.7, 3: 0.6, 4: 0.7, 5: float("nan"), 6: 0.65}
    monkeypatch.setattr(trainer_lib.glue, "evaluate", lambda *a, **k: {"sst-2": {"acc": script[trainer.step]}})
    bias = trainer.student.bert.classifier.bias
    for step in script:
        trainer.step = step
        with torch.no_grad():
            bias.fill_(step)
        trainer.evaluate()
        kept = json.loads((output / "best" / "eval_results.json").read_text())
        assert kept["step"] == (1 if step == 1 else 2), step  # strictly better only; a tie or a NaN keeps step 2
    assert kept["value"] == 0.7 and kept["metric"] == "acc"
    saved = BertForSequenceClassification.from_pretrained(str(output / "best"))
    assert saved.classifier.bias.tolist() == [2.0, 2.0]
    trainer.save_checkpoint()  # the best so far survives a resume
    assert torch.load(output / "checkpoint.pt", weights_only=True)["best_dev"]["step"] == 2
