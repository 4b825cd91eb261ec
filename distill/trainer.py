"""One trainer for TinyBERT's general and task-specific distillation; stages differ by configuration only.

The loop is flat, in nanoGPT's order: learning rate, periodic eval/checkpoint, micro-steps with accumulation,
clip, step, zero_grad, log, stop. `_loss_step(batch)` returns the named loss terms; `save_checkpoint()` is the only
place a resumable state is written.
"""

import contextlib
import csv
import json
import logging
import math
import os
import random
import shutil
import time
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from distill import data as data_lib
from distill import glue, losses, models
from contract.errors import UserError, describe
from distill.config import CONSTANT, FINETUNE, GENERAL, LINEAR, PREDICTION, TrainConfig

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
LOSS_PNG = "loss.png"
EVAL_JSONL = "eval_results.jsonl"
BEST_DIR = "best"  # the best-on-dev student of the prediction stage
BEST_EVAL_JSON = "eval_results.json"
CONFIG_NAME = "distill_config.json"
TENSORBOARD_DIR = "runs"  # --report_to tensorboard: event files here


def resolve_task(task_name: str, manifest: Dict[str, Any], data_path: str, *,
                 teacher: Optional[str] = None) -> glue.GlueTask:
    """The task of a task run: a GLUE task by name, or for `--task generic` the one the augmented data's manifest
    records (text_fields, label_list, regression). A generic manifest without a label_list takes the teacher's
    label names where config.json names them.

    Raises:
      UserError: an unknown task, a manifest without text fields, labels that differ from the task's, or a
        generic classification task whose labels nobody names.
    """
    recorded = str(manifest.get("task") or "")
    if task_name.lower() != glue.GENERIC:
        task = glue.get_task(task_name)
        label_list = manifest.get("label_list")
        expected = list(task.labels) if task.labels else None
        if label_list is not None and expected is not None and sorted(label_list) != sorted(expected):
            raise UserError(f"{data_path} has labels {label_list} but {task.name} has {expected}; check --task")
        return task
    if recorded and recorded.lower() != glue.GENERIC:
        logger.info("%s holds %s data: --task generic reads it as %s", data_path, recorded, recorded)
        return glue.get_task(recorded)
    text_fields = manifest.get("text_fields") or []
    regression = bool(manifest.get("regression", False))
    labels = manifest.get("label_list")
    if not regression and not labels and teacher:
        from transformers import AutoConfig
        try:
            id2label = AutoConfig.from_pretrained(teacher).id2label or {}
        except Exception:  # pylint: disable=broad-except  # the teacher's own load reports it in one line
            id2label = {}
        if not models.is_default_label_names(id2label, len(id2label)):
            labels = [str(id2label[i]) for i in range(len(id2label))]
            logger.info("%s records no label_list: the labels are the teacher's %s", data_path, labels)
    if not regression and not labels:
        raise UserError(f"{data_path}: its manifest records no label_list and the teacher does not name its labels; "
                        "rerun python -m pipelines.augment with --label_list")
    # Dev files are in the input's layout: the label column the augment run read (`--label_column`), not the
    # augmented rows' own `label` column.
    dev_label = manifest.get("input_label_column") or manifest.get("label_field") or "label"
    return glue.generic_task(text_fields, dev_label, labels, regression=regression)


def load_tokenizer(name_or_path: str):
    """The fast tokenizer of a hub name or directory (the pipelines' loader: `corpus.tokenizer`).

    Raises:
      UserError: none can be loaded.
    """
    from corpus.tokenizer import TokenizerError, load_transformers_tokenizer
    try:
        return load_transformers_tokenizer(name_or_path)
    except TokenizerError as error:
        raise UserError(f"{error}; save one beside the model or pass --tokenizer") from None


def resolve_precision(requested: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype, or None for fp32: bf16/fp16 only where the device supports them."""
    if requested == "fp32":
        return None
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if requested == "auto":
            return torch.bfloat16 if bf16_ok else torch.float16
        if requested == "bf16" and not bf16_ok:
            raise UserError("--precision bf16 is not supported by this GPU; use fp16 or auto")
        return torch.bfloat16 if requested == "bf16" else torch.float16
    if requested == "auto":
        return None
    if requested == "fp16":
        raise UserError("--precision fp16 needs a CUDA device; use auto or fp32 on CPU")
    return torch.bfloat16


def _check_labels(labels: torch.Tensor, data_path: str, *, finetune: bool = False) -> None:
    """Refuses a batch with a row that has no numeric label when the loss needs the labels.

    Raises:
      UserError: a NaN label (null or not a number in the data).
    """
    missing = int(torch.isnan(labels).sum())
    if missing and finetune:
        raise UserError(f"{data_path} has rows whose label is missing or not one of the task's labels ({missing} in "
                        "one batch); fine-tuning trains on the labels: regenerate the data with pipelines.augment "
                        "(with --label_list)")
    if missing:
        raise UserError(f"{data_path} has rows without a numeric label ({missing} in one batch), but "
                        "--regression_target labels trains on the labels; pipelines.augment rejects such STS-B rows, "
                        "so regenerate the data with it, or pass --regression_target teacher")


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


def _rng_state() -> Dict[str, Any]:
    """Every RNG's state as tensors and plain values, so that `torch.load(weights_only=True)` reads it back."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {"python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                        "gauss_next": gauss_next},
             "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    python, numpy_state = state["python"], state["numpy"]
    random.setstate((python["version"], tuple(python["internal"].tolist()), python["gauss_next"]))
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_output_dir(path: str) -> None:
    """Refuses an --output that cannot be a directory, before anything is loaded.

    Raises:
      UserError: it is an existing file, or cannot be created.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--output {path} is an existing file; pass a directory (it will be created)")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:  # a file on the way, no permission, read-only filesystem
        raise UserError(f"--output {path} cannot be created ({describe(error)}); pass a writable directory") from error


def _load_reason(error: BaseException) -> str:
    """The reason in torch's weights_only error (whose first lines advise weights_only=False), or its first line."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        reason = text.split(marker, 1)[1].strip().splitlines()[0].split(". ")[0].strip()
        return f"{type(error).__name__}: {reason.rstrip('.')}"
    return describe(error)


_CHECKPOINT_KEYS = ("step", "model", "optimizer", "scheduler", "scaler", "ranks", "config")


def read_checkpoint(path: str) -> Dict[str, Any]:
    """A checkpoint read with `weights_only=True`: tensors and plain values only, never code from the file.

    Raises:
      UserError: the file is damaged, holds anything else (e.g. a pickled object), or lacks a checkpoint's keys.
    """
    remedy = "delete it, or pass --no_resume to start afresh (which overwrites it)"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pylint: disable=broad-except  # garbage, truncation or a refused pickle: one line
        raise UserError(f"{path} is damaged or holds more than tensors and plain values ({_load_reason(error)}); "
                        f"it was not loaded, since loading it could run code: {remedy}") from error
    missing = [key for key in _CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise UserError(f"{path} is not a distill checkpoint (no {', '.join(missing)}); {remedy}")
    return state


class Trainer:
    """Distils a teacher into a student from a streamed dataset.

    Args:
      config: the resolved configuration.
      device: where to train.
      rank, world_size: this process's place in the DDP group (1 = no DDP).
    """

    def __init__(self, config: TrainConfig, *, device: torch.device, rank: int = 0, world_size: int = 1):
        self.config = config
        self.device = device
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        self.finetune = config.distill.mode == FINETUNE
        self.prediction = config.distill.stage == PREDICTION or self.finetune
        self.classification = config.distill.mode != GENERAL

        # Everything a user can get wrong is refused here, before the first step (most of it before any loading).
        resume_state = self._check_inputs()
        self._seed()
        self.tokenizer_name = config.data.tokenizer or config.distill.teacher
        self.tokenizer = load_tokenizer(self.tokenizer_name)
        self._resolve_task()
        rows_per_epoch = self._open_data()
        self._load_models()
        self._make_optimizer(rows_per_epoch)
        self._open_dev_sets()
        self._resume(resume_state)
        self._open_writer()
        if self.dev_sets and self.teacher is not None and resume_state is None:
            self._check_teacher_on_dev()
        self._write_config()

    def _check_inputs(self) -> Optional[Dict[str, Any]]:
        """Refuses an unusable --output, checkpoint or model source before anything is loaded; returns the
        checkpoint to resume from, if any."""
        cfg_d, cfg_run = self.config.distill, self.config.run
        check_output_dir(cfg_run.output)
        self.checkpoint_path = os.path.join(cfg_run.output, CHECKPOINT_NAME)
        resume_state = None
        if os.path.exists(self.checkpoint_path) and not cfg_run.no_resume:
            resume_state = read_checkpoint(self.checkpoint_path)
        models.check_model_source(cfg_d.teacher, "--model" if self.finetune else "--teacher")
        if cfg_d.student not in models.STUDENT_PRESETS and not self.finetune:
            models.check_model_source(cfg_d.student, "--student", config_file_ok=True)
        return resume_state

    def _seed(self) -> None:
        seed = self.config.run.seed
        torch.manual_seed(seed)  # student init (identical on every rank), then per-rank dropout in _resume
        random.seed(seed)
        np.random.seed(seed)

    def _resolve_task(self) -> None:
        """The task of a task run (None for general distillation), and whether every batch needs its labels."""
        cfg_d, cfg_data = self.config.distill, self.config.data
        self.task = None
        if self.classification:
            manifest = data_lib.open_output_dir(cfg_data.data, kind=data_lib.AUGMENTED_KIND).manifest
            self.task = resolve_task(cfg_d.task, manifest, cfg_data.data, teacher=cfg_d.teacher)
        # STS-B's prediction stage against the gold labels (the reference's loss) needs them in every batch; so does
        # fine-tuning (class indices or scores).
        self.label_targets = self.finetune or (self.prediction and self.task is not None and self.task.labels is None
                                               and cfg_d.regression_target == "labels")

    def _open_data(self) -> int:
        """Opens the stream this rank reads: the corpus (general) or the augmented task data; returns the rows in
        one epoch."""
        cfg_data, seed = self.config.data, self.config.run.seed
        if self.config.distill.mode == GENERAL:
            self.stream, self.output_dir = data_lib.open_corpus(
                cfg_data.data, tokenizer=self.tokenizer, tokenizer_name=self.tokenizer_name,
                batch_size=cfg_data.batch_size, shuffle_buffer=cfg_data.shuffle_buffer, seed=seed,
                rank=self.rank, world_size=self.world_size, num_workers=cfg_data.num_workers,
                pad_to_max_length=cfg_data.pad_to_max_length)
            return data_lib.corpus_rows_per_epoch(self.output_dir)
        max_len = cfg_data.max_seq_len or self.task.max_seq_len
        self.stream, self.output_dir = data_lib.open_augmented(
            cfg_data.data, tokenizer=self.tokenizer, max_seq_len=max_len, batch_size=cfg_data.batch_size,
            shuffle_buffer=cfg_data.shuffle_buffer, seed=seed, rank=self.rank, world_size=self.world_size,
            num_workers=cfg_data.num_workers, regression_labels=self.label_targets and self.task.labels is None,
            class_labels=self.task.labels if self.finetune else None, pad_to_max_length=cfg_data.pad_to_max_length,
            text_fields=self.task.text_fields or None)
        return self.output_dir.rows("data")

    def _load_models(self) -> None:
        """The teacher (none when fine-tuning) and the student on the device, the DDP wrapper, the autocast dtype."""
        cfg_d, device = self.config.distill, self.device
        num_labels = (len(self.task.labels) if self.task.labels else 1) if self.task else None
        # The largest token id the data can hold: the manifest's tokenizer size (corpus ids were written with it)
        # and the tokenizer's (task data is tokenized here); the student gets the teacher's vocab_size.
        recorded = (self.output_dir.manifest.get("tokenizer") or {}).get("vocab_size")
        needed = max(len(self.tokenizer), int(recorded) if isinstance(recorded, int) else 0)
        self.teacher, self.teacher_order = None, None
        if self.finetune:  # no teacher: the model itself learns the labels
            self.student = models.build_classifier(cfg_d.student, labels=self.task.labels)
            models.check_vocab(self.student.bert.config, needed, f"--model {cfg_d.student}")
            self.vocab_size = int(self.student.bert.config.vocab_size)
            self.student.to(device)
        else:
            self.teacher = models.load_teacher(cfg_d.teacher, classification=self.classification,
                                               num_labels=num_labels)
            if self.classification:  # a teacher that names the task's labels in another order is read in the task's
                self.teacher_order = models.label_permutation(self.teacher.config.id2label, self.task.labels,
                                                              f"teacher {cfg_d.teacher}")
            models.check_vocab(self.teacher.config, needed, f"--teacher {cfg_d.teacher}")
            self.vocab_size = int(self.teacher.config.vocab_size)  # the student's too (see models.student_config)
            self.teacher.to(device)
            self.student = models.build_student(cfg_d.student, self.teacher, classification=self.classification,
                                                num_labels=num_labels, labels=self.task.labels if self.task else None
                                                ).to(device)
        if self.prediction:
            self.student.fit_dense.requires_grad_(False)  # unused by the logits loss; kept as it was
        self.model: nn.Module = self.student
        if self.world_size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.student, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True)  # e.g. the pooler, unused by the intermediate losses
        self.autocast_dtype = resolve_precision(self.config.run.precision, device)

    def _make_optimizer(self, rows_per_epoch: int) -> None:
        """The step budget and learning-rate schedule, AdamW (no decay on biases and LayerNorm), the grad scaler."""
        optim = self.config.optim
        self.examples_per_step = self.config.data.batch_size * self.world_size * optim.gradient_accumulation_steps
        self.total_steps = optim.max_steps or max(1, math.ceil(optim.epochs * rows_per_epoch
                                                               / self.examples_per_step))
        self.lr_schedule = self.config.lr_schedule
        # A constant rate has no warm-up (the reference's schedule 'none' ignores its warm-up proportion).
        self.warmup_steps = int(optim.warmup_proportion * self.total_steps) if self.lr_schedule == LINEAR else 0
        decay, no_decay = [], []
        for name, param in self.student.named_parameters():
            if param.requires_grad:
                (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": optim.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=optim.learning_rate,
                                           eps=optim.adam_epsilon)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast_dtype == torch.float16)

    def _open_dev_sets(self) -> None:
        """The task's dev sets, read on the main process only (it alone evaluates)."""
        self.dev_sets = {}
        if self.config.data.dev and self.task and self.is_main:
            self.dev_sets = glue.dev_sets(self.task, self.config.data.dev)

    def _resume(self, resume_state: Optional[Dict[str, Any]]) -> None:
        """Restores the checkpoint's state, or starts afresh: per-rank dropout seed, an earlier run's records gone."""
        output, seed = self.config.run.output, self.config.run.seed
        self.step = 0
        self.best_dev: Optional[Dict[str, Any]] = None  # {"step", "split", "metric", "value", "results"}
        self.position = data_lib.ReaderPosition()
        if resume_state is not None:
            self._load_checkpoint(resume_state)
            if self.is_main:  # records a killed run wrote after its last checkpoint come again: keep one of each
                _truncate_records(os.path.join(output, METRICS_JSONL), self.step)
                _truncate_records(os.path.join(output, EVAL_JSONL), self.step)
        else:
            # Dropout differs per rank; the reader's randomness is seeded separately (seed, epoch, rank, worker).
            torch.manual_seed(seed + 1000 * self.rank)
            if self.is_main:  # a fresh run does not mix its records with an earlier run's
                for name in (METRICS_JSONL, EVAL_JSONL):
                    if os.path.exists(os.path.join(output, name)):
                        os.remove(os.path.join(output, name))
                shutil.rmtree(os.path.join(output, BEST_DIR), ignore_errors=True)
        self.start_step = self.step

    def _open_writer(self) -> None:
        """The TensorBoard writer of --report_to tensorboard (main process only), else None."""
        self.writer = None
        if self.is_main and self.config.run.report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package (a dependency)
            self.writer = SummaryWriter(log_dir=os.path.join(self.config.run.output, TENSORBOARD_DIR))

    def _write_config(self) -> None:
        """Logs the resolved config and the step budget, and writes the config beside the checkpoint (main only)."""
        if not self.is_main:
            return
        config = self.config
        logger.info("resolved config:\n%s", config.to_json())
        logger.info("%d optimizer steps, %s learning rate (%d warm-up steps), %d examples per step over %d "
                    "processes", self.total_steps, self.lr_schedule, self.warmup_steps, self.examples_per_step,
                    self.world_size)
        with open(os.path.join(config.run.output, CONFIG_NAME), "w", encoding="utf-8") as handle:
            handle.write(config.to_json())

    def _check_teacher_on_dev(self) -> None:
        """Scores the teacher once on dev and warns when it is at chance (no better than always answering the
        commonest label): a classifier head that was never trained gives the student nothing to learn."""
        results = glue.evaluate(self.teacher, self.tokenizer, self.task, self.dev_sets, device=self.device,
                                batch_size=self.config.data.eval_batch_size,
                                max_seq_len=self.config.data.max_seq_len or self.task.max_seq_len)
        logger.info("teacher on dev: %s", json.dumps(results))
        if self.task.labels is None:
            return
        split = self.task.main_split(results)
        labels = np.asarray(self.dev_sets[split].labels)
        if not len(labels):
            return
        chance = max(float((labels == index).mean()) for index in range(len(self.task.labels)))
        accuracy = results[split].get("acc", float("nan"))
        if accuracy <= chance + 0.01:
            logger.warning("teacher %s looks untrained for the task: dev accuracy %.4f is at chance (the commonest "
                           "label alone scores %.4f); fine-tune it first (python -m distill.run finetune)",
                           self.config.distill.teacher, accuracy, chance)

    def _task_record(self) -> Optional[Dict[str, Any]]:
        return self.task.to_dict() if self.task is not None else None

    # -------------------------------------------------------------------------------------------------------------
    def _lr_factor(self, step: int) -> float:
        return lr_factor(step, schedule=self.lr_schedule, warmup_steps=self.warmup_steps,
                         total_steps=self.total_steps)

    def _batches(self) -> Iterator[Dict[str, Any]]:
        """Batches forever, epoch after epoch, folding each consumed batch into `self.position`."""
        while True:
            self.stream.set_position(self.position)
            seen = False
            for batch in data_lib.make_loader(self.stream):
                seen = True
                if self.label_targets:
                    _check_labels(batch["labels"], self.config.data.data, finetune=self.finetune)
                self._check_token_ids(batch["input_ids"])
                self.position.advance(batch)
                yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v)}
            if not seen and not self.position.emitted:
                raise UserError(f"rank {self.rank} read no rows in epoch {self.position.epoch} of "
                                f"{self.config.data.data}; the data is empty or too few files for the processes")
            self.position.next_epoch()

    def _check_token_ids(self, input_ids: torch.Tensor) -> None:
        """One max per batch (on the CPU, before the copy): an id past the embeddings would otherwise stop the run
        with an IndexError on CPU, or a device-side assert that poisons the CUDA context."""
        largest = int(input_ids.max()) if input_ids.numel() else 0
        if largest >= self.vocab_size:
            raise UserError(f"{self.config.data.data} holds token id {largest} but the models' vocab_size is "
                            f"{self.vocab_size}: the shards do not match the tokenizer their manifest records; "
                            "regenerate them")

    def _loss_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The named loss terms of one micro-batch; "loss" is the one to minimise."""
        teacher_logits = None
        if self.finetune:
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                token_type_ids=batch["token_type_ids"], project=False)["logits"]
            if self.task.labels is None:
                cls = losses.regression_loss(logits, batch["labels"])
            else:
                cls = nn.functional.cross_entropy(logits.float(), batch["labels"].long())
            return {"loss": cls, "cls_loss": cls}
        if not self.label_targets:  # the gold-label regression loss does not use the teacher
            with torch.no_grad():
                teacher_logits, teacher_scores, teacher_hidden = models.forward_with_internals(self.teacher, batch)
            if self.teacher_order is not None and teacher_logits is not None:
                teacher_logits = teacher_logits[:, self.teacher_order]  # (batch, labels) in the task's order
        student_logits, student_scores, student_projected = models.forward_with_internals(
            self.model, batch, project=not self.prediction)
        if not self.prediction:
            return losses.intermediate_losses(student_scores=student_scores, teacher_scores=teacher_scores,
                                              student_hidden=student_projected, teacher_hidden=teacher_hidden)
        if self.task.labels is None:
            targets = batch["labels"] if self.label_targets else teacher_logits  # (batch,) or (batch, 1)
            cls = losses.regression_loss(student_logits, targets)
        else:
            cls = losses.soft_cross_entropy(student_logits, teacher_logits, temperature=self.config.distill.temperature,
                                            reduction=self.config.distill.soft_ce_reduction)
        return {"loss": cls, "cls_loss": cls}

    def train(self) -> Dict[str, Any]:
        """Runs to `total_steps` (or `halt_at_step`); returns the last logged metrics."""
        from tqdm import tqdm
        cfg_run, optim = self.config.run, self.config.optim
        accumulation = optim.gradient_accumulation_steps
        batches = self._batches()
        autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                    else contextlib.nullcontext())
        progress = tqdm(total=self.total_steps, initial=self.step, disable=not self.is_main, desc="distill")
        self.student.train()
        if self.teacher is not None:  # train: dropout on, as the reference (which never calls eval() on it)
            self.teacher.train(self.config.distill.teacher_mode == "train")
        last_logged: Dict[str, Any] = {}
        started, samples = time.time(), 0
        while True:
            lr = self.scheduler.get_last_lr()[0]
            finished = self.step >= self.total_steps
            halting = cfg_run.halt_at_step is not None and self.step >= cfg_run.halt_at_step
            if self.step > self.start_step and (self.step % cfg_run.eval_interval == 0 or finished):
                self.evaluate()
            if self.step > self.start_step and (self.step % cfg_run.checkpoint_interval == 0 or finished or halting):
                self.save_checkpoint()
            if finished or halting:
                break

            totals: Dict[str, float] = {}
            for micro_step in range(accumulation):
                batch = next(batches)
                samples += batch["input_ids"].shape[0]
                # Gradients are all-reduced only on the last micro-step.
                sync = (self.model.no_sync() if self.world_size > 1 and micro_step < accumulation - 1
                        else contextlib.nullcontext())
                with sync:
                    with autocast:
                        terms = self._loss_step(batch)
                    self.scaler.scale(terms["loss"] / accumulation).backward()
                for name, value in terms.items():
                    totals[name] = totals.get(name, 0.0) + float(value.detach()) / accumulation
            if optim.max_grad_norm > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.student.parameters(), optim.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.step += 1
            progress.update(1)

            if self.step % cfg_run.log_interval == 0 or self.step == 1 or self.step == self.total_steps:
                totals = self._mean_over_ranks(totals)
                elapsed = time.time() - started
                last_logged = {"step": self.step, **{k: round(v, 6) for k, v in totals.items()}, "lr": lr,
                               "epoch": self.position.epoch, "elapsed_s": round(elapsed, 3),
                               "samples_per_s": round(samples * self.world_size / max(elapsed, 1e-9), 2)}
                progress.set_postfix(loss=f"{totals['loss']:.4f}")
                self._log(last_logged)
        progress.close()
        if self.step >= self.total_steps and self.is_main:
            self._finish()
        if self.writer is not None:
            self.writer.close()
        return last_logged

    def _mean_over_ranks(self, totals: Dict[str, float]) -> Dict[str, float]:
        if self.world_size == 1:
            return totals
        names = sorted(totals)
        tensor = torch.tensor([totals[n] for n in names], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return {n: float(v) / self.world_size for n, v in zip(names, tensor.tolist())}

    def _log(self, record: Dict[str, Any]) -> None:
        if not self.is_main:
            return
        logger.info("step %d: %s", record["step"], ", ".join(f"{k}={v}" for k, v in record.items() if k != "step"))
        with open(os.path.join(self.config.run.output, METRICS_JSONL), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for name, value in record.items():
                if name != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{name}", value, record["step"])
            self.writer.flush()

    def evaluate(self) -> Dict[str, Any]:
        """Dev-set metrics (rank 0, prediction stage with --dev); appended to eval_results.jsonl."""
        if not self.dev_sets or not self.prediction:
            return {}
        results = glue.evaluate(self.student.bert, self.tokenizer, self.task, self.dev_sets, device=self.device,
                                batch_size=self.config.data.eval_batch_size,
                                max_seq_len=self.config.data.max_seq_len or self.task.max_seq_len)
        self.student.train()
        record = {"step": self.step, **results}
        logger.info("eval at step %d: %s", self.step, json.dumps(results))
        with open(os.path.join(self.config.run.output, EVAL_JSONL), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for split, metrics in results.items():
                for name, value in metrics.items():
                    if isinstance(value, float):
                        self.writer.add_scalar(f"eval/{split}/{name}", value, self.step)
            self.writer.flush()
        self._keep_if_best(results)
        return results

    def _keep_if_best(self, results: Dict[str, Dict[str, float]]) -> None:
        """Saves the student into OUTPUT/best when the task's main dev metric beats every earlier evaluation
        (strictly, as the reference; a NaN never counts), with the evaluation in best/eval_results.json."""
        split = self.task.main_split(results)
        metric = self.task.main_metric
        value = results[split].get(metric, float("nan"))
        if not math.isfinite(value) or (self.best_dev is not None and value <= self.best_dev["value"]):
            return
        self.best_dev = {"step": self.step, "split": split, "metric": metric, "value": value, "results": results}
        best = os.path.join(self.config.run.output, BEST_DIR)
        staging = best + ".tmp"  # written whole, then swapped in: a kill leaves the previous best intact
        shutil.rmtree(staging, ignore_errors=True)
        models.save_student(self.student, self.tokenizer, staging, task=self._task_record())
        with open(os.path.join(staging, BEST_EVAL_JSON), "w", encoding="utf-8") as handle:
            json.dump(self.best_dev, handle, indent=2)
        shutil.rmtree(best, ignore_errors=True)
        os.replace(staging, best)
        logger.info("best %s %s so far (%.4f) at step %d: student saved in %s", split, metric, value, self.step, best)

    def save_checkpoint(self) -> None:
        """Everything needed to continue exactly: model (with fit_dense), optimizer, scheduler, scaler, step, the
        RNG states and reader position of every rank, and the resolved config. Written atomically by rank 0."""
        per_rank = {"rng": _rng_state(), "position": self.position.to_dict()}
        if self.world_size > 1:
            gathered: List[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, per_rank)
        else:
            gathered = [per_rank]
        if self.is_main:
            state = {"step": self.step, "total_steps": self.total_steps, "model": self.student.state_dict(),
                     "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "scaler": self.scaler.state_dict(), "ranks": gathered, "config": self.config.to_dict(),
                     "best_dev": self.best_dev}
            tmp_path = self.checkpoint_path + ".tmp"
            torch.save(state, tmp_path)
            os.replace(tmp_path, self.checkpoint_path)
            logger.info("checkpoint at step %d: %s", self.step, self.checkpoint_path)
        if self.world_size > 1:
            dist.barrier()

    def _load_checkpoint(self, state: Dict[str, Any]) -> None:
        """Continues from a checkpoint that `read_checkpoint` read.

        Raises:
          UserError: it was written by another process count, or does not fit this run's models.
        """
        if not isinstance(state["ranks"], list) or len(state["ranks"]) != self.world_size:
            count = len(state["ranks"]) if isinstance(state["ranks"], list) else "?"
            raise UserError(f"{self.checkpoint_path} was written by {count} processes, not "
                            f"{self.world_size}; resume with the same count or pass --no_resume")
        saved = dict(state["config"])
        ours = self.config.to_dict()
        for group in ("distill", "data", "optim"):
            changed = {k: (saved.get(group, {}).get(k), v) for k, v in ours[group].items()
                       if saved.get(group, {}).get(k) != v}
            if changed:
                logger.warning("resuming with changed %s options (saved, now): %s", group, changed)
        try:
            self.student.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.step = int(state["step"])
            self.best_dev = state.get("best_dev")
            mine = state["ranks"][self.rank]
            _set_rng_state(mine["rng"])
            self.position = data_lib.ReaderPosition.from_dict(mine["position"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
            raise UserError(f"{self.checkpoint_path} does not fit this run ({describe(error)}); resume with the "
                            "options that wrote it, or pass --no_resume to start afresh") from error
        if self.is_main:
            logger.info("resumed from %s at step %d", self.checkpoint_path, self.step)

    def _finish(self) -> None:
        """The student for `from_pretrained` (fit_dense beside it), metrics CSV and a loss curve."""
        output = self.config.run.output
        models.save_student(self.student, self.tokenizer, output, task=self._task_record())
        records = read_metrics(output)
        write_metrics_csv(records, os.path.join(output, METRICS_CSV))
        plot_losses(records, os.path.join(output, LOSS_PNG))
        logger.info("student saved with save_pretrained in %s", output)


def _read_records(path: str) -> List[Dict[str, Any]]:
    """The JSON lines of a metrics file; a line cut short by a kill is skipped."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                logger.warning("skipping a damaged line of %s: %r", path, line[:80])
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
    return records


def _truncate_records(path: str, step: int) -> None:
    """Keeps only the records of steps <= `step` (those the checkpoint covers), rewritten atomically."""
    if not os.path.exists(path):
        return
    kept = [record for record in _read_records(path) if record["step"] <= step]
    tmp_path = path + ".tmp"
    with open(tmp_path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in kept)
    os.replace(tmp_path, path)


def read_metrics(output: str) -> List[Dict[str, Any]]:
    return _read_records(os.path.join(output, METRICS_JSONL))


def write_metrics_csv(records: List[Dict[str, Any]], path: str) -> None:
    names: List[str] = []
    for record in records:
        names.extend(k for k in record if k not in names)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        writer.writerows(records)


def plot_losses(records: List[Dict[str, Any]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot
    figure, axes = pyplot.subplots(figsize=(7, 4))
    steps = [r["step"] for r in records]
    for name in ("loss", "att_loss", "rep_loss", "cls_loss"):
        if records and name in records[0]:
            axes.plot(steps, [r.get(name) for r in records], label=name)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_yscale("log")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
