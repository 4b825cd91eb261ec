"""Frozen, typed configuration for distillation runs, grouped by concern, and its command-line form.

Options are declared once, as the fields below (contract.options: help in the metadata, checks in `__post_init__`);
`add_arguments` turns a group into argparse options and `from_namespace` builds the config back.
"""

import argparse
import dataclasses
import json
from typing import Any, Dict, Optional

from contract.options import add_arguments  # noqa: F401  (distill.run builds its parser with it)
from contract.options import from_namespace as _group_from_namespace
from contract.options import option as _field, require as _require, require_choice as _require_choice

GENERAL, TASK, FINETUNE = "general", "task", "finetune"
INTERMEDIATE, PREDICTION = "intermediate", "prediction"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
# Soft cross-entropy reductions: "mean" over batch and classes (the reference's), "batchmean" sums over classes.
SOFT_CE_REDUCTIONS = ("mean", "batchmean")
# STS-B prediction-stage targets: the row's gold label (the reference's) or the teacher's output.
REGRESSION_TARGETS = ("labels", "teacher")
# Learning-rate schedules: "auto" is the reference's for the stage (constant for task stage 1, linear otherwise).
AUTO, LINEAR, CONSTANT = "auto", "linear", "constant"
LR_SCHEDULES = (AUTO, LINEAR, CONSTANT)
# The teacher's mode while it computes targets: "train" (dropout on, as the reference never calls eval() on it).
TEACHER_MODES = ("train", "eval")
# How a new student's weights start: "random" (the reference: BERT's N(0, 0.02)) or "teacher" (copied from the
# teacher's embeddings and mapped layers; see distill.models.copy_teacher_layers).
STUDENT_INITS = ("random", "teacher")
REPORT_TO = ("none", "tensorboard")


# Fixed choices that match the reference, recorded in every resolved config.
FIT_DENSE_INIT = {"weight": "normal", "mean": 0.0, "std": "student initializer_range (0.02)", "bias": 0.0}
PAIR_TRUNCATION = "reference: pop a token from the longer text, from the second on a tie"

@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """What is distilled into what."""
    teacher: str = _field(help="teacher: hub name or directory (fine-tuned BertForSequenceClassification for task)")
    student: str = _field(help="student: preset 4L-312H or 6L-768H, a config.json, or a model directory")
    mode: str = _field(GENERAL, help="general, task or finetune", cli=False)
    stage: str = _field(INTERMEDIATE, help="task stage: intermediate (attention + hidden states) or prediction "
                                           "(logits)", choices=(INTERMEDIATE, PREDICTION))
    task: Optional[str] = _field(None, help="default: the task the data's manifest names. GLUE task name (SST-2, "
                                            "MNLI, ...), or generic: the fields and labels "
                                            "the augmented data's manifest records")
    temperature: float = _field(1.0, help="softmax temperature of the prediction-layer loss")
    soft_ce_reduction: str = _field(
        "mean", help="prediction-layer soft cross-entropy: mean over batch and classes (the reference) or "
                     "batchmean (summed over classes, averaged over the batch: num_labels times larger)",
        choices=SOFT_CE_REDUCTIONS)
    regression_target: str = _field(
        "labels", help="STS-B prediction stage: MSE to the row's label (the reference) or to the teacher's output",
        choices=REGRESSION_TARGETS)
    teacher_mode: str = _field(
        "train", help="the teacher's mode while it computes targets: train (dropout on, as the reference, which never "
                      "calls eval() on it) or eval (dropout off: deterministic targets)", choices=TEACHER_MODES)
    student_init: str = _field(
        "random", help="a new student's weights (a preset or config.json --student): random (the reference) or "
                       "teacher: the teacher's embeddings, pooler and layers k-1, 2k-1, ... (the layers the student's "
                       "layers learn from), fit_dense the identity; needs the teacher's hidden and intermediate sizes",
        choices=STUDENT_INITS)

    def __post_init__(self):
        _require(self.mode in (GENERAL, TASK, FINETUNE), f"mode must be {GENERAL}, {TASK} or {FINETUNE}, not {self.mode!r}")
        _require(self.stage in (INTERMEDIATE, PREDICTION), f"--stage must be {INTERMEDIATE} or {PREDICTION}")
        _require(self.mode != GENERAL or self.stage == INTERMEDIATE, "general distillation has only the intermediate stage")
        _require(self.temperature > 0, f"--temperature must be > 0, not {self.temperature}")
        _require_choice("soft_ce_reduction", self.soft_ce_reduction, SOFT_CE_REDUCTIONS)
        _require_choice("regression_target", self.regression_target, REGRESSION_TARGETS)
        _require_choice("teacher_mode", self.teacher_mode, TEACHER_MODES)
        _require_choice("student_init", self.student_init, STUDENT_INITS)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the training data is and how it is batched."""
    data: str = _field(help="general-distillation shards or augmented task directory (any fsspec path)")
    batch_size: int = _field(32, help="examples per micro-batch on each device")
    shuffle_buffer: int = _field(4096, help="rows shuffled together in the reader's bounded buffer")
    num_workers: int = _field(1, help="DataLoader worker processes per device (0 = read in the training process)")
    max_seq_len: Optional[int] = _field(None, help="truncate task examples to this many tokens (default: 64 for "
                                                   "CoLA/SST-2, else 128); corpus shards keep their own length")
    tokenizer: Optional[str] = _field(None, help="tokenizer name or directory (default: the teacher's)")
    pad_to_max_length: bool = _field(
        False, help="pad every batch to the fixed length (the corpus's max_seq_len; task: --max_seq_len) as the "
                    "reference does, which sets the scale of the intermediate losses; off: pad to the longest row "
                    "of each batch (faster)")
    dev: Optional[str] = _field(None, help="dev file evaluated during task training: GLUE dev TSV (or MNLI directory); "
                                           "generic tasks: TSV/CSV with a header, JSONL or Parquet with the task's columns")
    eval_batch_size: int = _field(64, help="examples per evaluation batch")

    def __post_init__(self):
        _require(self.batch_size > 0, f"--batch_size must be > 0, not {self.batch_size}")
        _require(self.shuffle_buffer > 0, f"--shuffle_buffer must be > 0, not {self.shuffle_buffer}")
        _require(self.num_workers >= 0, f"--num_workers must be >= 0, not {self.num_workers}")
        _require(self.max_seq_len is None or self.max_seq_len >= 8, "--max_seq_len must be at least 8")
        _require(self.eval_batch_size > 0, "--eval_batch_size must be > 0")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW; linear warm-up and linear decay, or a constant learning rate."""
    learning_rate: float = _field(5e-5, help="peak learning rate")
    weight_decay: float = _field(0.01, help="AdamW weight decay (not applied to biases and LayerNorm)")
    warmup_proportion: float = _field(0.1, help="fraction of steps with linear warm-up")
    max_steps: Optional[int] = _field(None, help="optimizer steps (default: from --epochs and the row counts)")
    epochs: float = _field(3.0, help="passes over the data when --max_steps is not given")
    gradient_accumulation_steps: int = _field(1, help="micro-batches per optimizer step")
    max_grad_norm: float = _field(1.0, help="gradient clipping norm (0 = off)")
    adam_epsilon: float = _field(1e-6, help="Adam epsilon (the reference's BertAdam: 1e-6)")
    lr_schedule: str = _field(
        AUTO, help="auto (the reference's: constant for task --stage intermediate, linear otherwise), linear "
                   "(warm-up over --warmup_proportion, then linear decay to 0) or constant (no warm-up, no decay)",
        choices=LR_SCHEDULES)

    def __post_init__(self):
        _require(self.learning_rate > 0, "--learning_rate must be > 0")
        _require(self.weight_decay >= 0, "--weight_decay must be >= 0")
        _require(0 <= self.warmup_proportion < 1, "--warmup_proportion must be in [0, 1)")
        _require(self.max_steps is None or self.max_steps > 0, f"--max_steps must be > 0, not {self.max_steps}")
        _require(self.epochs > 0, f"--epochs must be > 0, not {self.epochs}")
        _require(self.gradient_accumulation_steps >= 1, "--gradient_accumulation_steps must be >= 1")
        _require(self.max_grad_norm >= 0, "--max_grad_norm must be >= 0")
        _require(self.adam_epsilon > 0, "--adam_epsilon must be > 0")
        _require_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Output, seeds, cadence and numerics."""
    output: str = _field(help="output directory: student, checkpoint, metrics")
    seed: int = _field(42, help="base seed (model init, dropout, data order)")
    log_interval: int = _field(10, help="log metrics every N steps")
    eval_interval: int = _field(500, help="evaluate on --dev every N steps (task prediction stage)")
    checkpoint_interval: int = _field(1000, help="save a resumable checkpoint every N steps")
    device: str = _field("auto", help="auto (the GPU of this process's LOCAL_RANK when CUDA is available, else the "
                                      "CPU), cpu, or cuda (refused when CUDA is not available)", choices=DEVICES)
    precision: str = _field("auto", help="auto (bf16/fp16 autocast on GPUs that support it, fp32 on CPU), fp32, "
                                         "bf16 or fp16", choices=PRECISIONS)
    no_resume: bool = _field(False, help="start afresh even if OUTPUT holds a checkpoint")
    halt_at_step: Optional[int] = _field(None, help="save a checkpoint at this step and exit as if killed "
                                                    "(for preemptible jobs and tests)")
    report_to: str = _field("none", help="also log to: none or tensorboard (event files in OUTPUT/runs)",
                            choices=REPORT_TO)

    def __post_init__(self):
        _require(bool(self.output), "--output is required")
        _require(self.log_interval > 0 and self.eval_interval > 0 and self.checkpoint_interval > 0,
                 "--log_interval, --eval_interval and --checkpoint_interval must be > 0")
        _require_choice("precision", self.precision, PRECISIONS)
        _require_choice("device", self.device, DEVICES)
        _require(self.halt_at_step is None or self.halt_at_step > 0, "--halt_at_step must be > 0")
        _require_choice("report_to", self.report_to, REPORT_TO)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    distill: DistillConfig
    data: DataConfig
    optim: OptimConfig
    run: RunConfig

    def to_dict(self) -> Dict[str, Any]:
        """The options by group, and under "resolved" what "auto" options became for this run."""
        return {**dataclasses.asdict(self), "resolved": {
            "lr_schedule": self.lr_schedule, "pair_truncation": PAIR_TRUNCATION,
            "fit_dense_init": FIT_DENSE_INIT if self.distill.student_init == "random" else "identity",
            "teacher_dropout": self.distill.teacher_mode == "train", "optimizer": "AdamW",
            "adam_epsilon": self.optim.adam_epsilon, "epochs": self.optim.epochs}}

    @property
    def lr_schedule(self) -> str:
        """The schedule `--lr_schedule` resolves to: "auto" becomes what the reference uses for this stage
        (task_distill.py's stage 1 runs BertAdam with schedule 'none', i.e. a constant learning rate; its
        prediction stage and general_distill.py warm up and decay linearly)."""
        if self.optim.lr_schedule != AUTO:
            return self.optim.lr_schedule
        return CONSTANT if self.distill.mode == TASK and self.distill.stage == INTERMEDIATE else LINEAR

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "TrainConfig":
        return cls(distill=DistillConfig(**values["distill"]), data=DataConfig(**values["data"]),
                   optim=OptimConfig(**values["optim"]), run=RunConfig(**values["run"]))


GROUPS = {"distill": DistillConfig, "data": DataConfig, "optim": OptimConfig, "run": RunConfig}


def from_namespace(namespace: argparse.Namespace, **fixed: Any) -> TrainConfig:
    """Builds a TrainConfig from parsed options plus fixed values (e.g. mode="task")."""
    return TrainConfig(**{group: _group_from_namespace(namespace, config_class, **fixed)
                          for group, config_class in GROUPS.items()})


def lr_factor(step: int, *, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """The learning rate at optimizer step `step` as a fraction of the peak.

    "linear": warm-up to the peak over `warmup_steps`, then linear decay to 0 at `total_steps`;
    "constant": the peak throughout.
    """
    if schedule == CONSTANT:
        return 1.0
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
