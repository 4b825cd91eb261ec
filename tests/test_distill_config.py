"""Configuration that needs no model: the learning-rate schedule per stage and its validation."""

import pytest

from contract.errors import UserError
from contract.tasks import GLUE_TASKS
from distill import config as config_lib
from distill import run
from distill.config import DataConfig, DistillConfig, OptimConfig, RunConfig, TrainConfig


def _config(mode, stage, schedule):
    return TrainConfig(distill=DistillConfig(teacher="t", student="s", mode=mode, stage=stage,
                                             task=None if mode == "general" else "SST-2"),
                       data=DataConfig(data="d"), optim=OptimConfig(lr_schedule=schedule), run=RunConfig(output="o"))


@pytest.mark.parametrize("mode,stage,expected", [
    ("general", "intermediate", "linear"),      # general_distill.py: warmup_linear
    ("task", "intermediate", "constant"),       # task_distill.py stage 1: schedule 'none'
    ("task", "prediction", "linear"),           # task_distill.py --pred_distill: warmup_linear
])
def test_auto_lr_schedule_is_the_references_for_each_stage(mode, stage, expected):
    assert _config(mode, stage, "auto").lr_schedule == expected
    for explicit in ("linear", "constant"):
        assert _config(mode, stage, explicit).lr_schedule == explicit


def test_lr_schedule_is_validated():
    with pytest.raises(UserError, match="--lr_schedule must be one of auto, linear, constant"):
        OptimConfig(lr_schedule="cosine")
    with pytest.raises(SystemExit) as raised:
        run.main(["task", "--lr_schedule", "cosine", "--teacher", "t", "--student", "s", "--data", "d",
                  "--output", "o", "--task", "SST-2"])
    # argparse's invalid choice, as one line (distill.run's parser turns its usage text into an `error:` line)
    assert str(raised.value.code).startswith("error: argument --lr_schedule: invalid choice: 'cosine'")


def test_lr_factor():
    linear = [config_lib.lr_factor(s, schedule="linear", warmup_steps=2, total_steps=6) for s in range(6)]
    assert linear == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25])
    assert [config_lib.lr_factor(s, schedule="constant", warmup_steps=0, total_steps=6) for s in range(6)] == [1.0] * 6
    assert config_lib.LR_SCHEDULES == ("auto", "linear", "constant")


def test_main_dev_metric_per_task_is_the_references():
    from distill import glue
    assert {name: task.main_metric for name, task in GLUE_TASKS.items()} == {
        "CoLA": "mcc", "SST-2": "acc", "MRPC": "acc", "STS-B": "corr", "QQP": "acc", "MNLI": "acc", "QNLI": "acc",
        "RTE": "acc"}
    mnli = glue.get_task("MNLI")
    assert mnli.main_split(["mnli-mm", "mnli-m"]) == "mnli-m" and mnli.main_split(["mnli-mm"]) == "mnli-mm"


def test_the_task_comes_from_the_data_manifest_unless_given():
    from distill import glue
    manifest = {"task": "SST-2", "label_list": ["0", "1"]}
    assert glue.resolve_task(None, manifest, "data").name == "SST-2"
    assert glue.resolve_task("sst2", manifest, "data").name == "SST-2"
    with pytest.raises(UserError, match="--task MNLI but data holds SST-2 data"):
        glue.resolve_task("MNLI", manifest, "data")
    with pytest.raises(UserError, match="names no task"):
        glue.resolve_task(None, {}, "data")
    generic = {"task": "generic", "text_fields": ["text"], "label_list": ["a", "b"], "input_label_column": "y"}
    task = glue.resolve_task(None, generic, "data")
    assert task.generic and task.labels == ("a", "b") and task.label_field == "y"


def test_task_distillation_needs_no_task_flag():
    parsed = run._parser().parse_args(["task", "--data", "d", "--teacher", "t", "--student", "s", "--output", "o"])
    assert parsed.task is None
