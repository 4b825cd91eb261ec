"""One trainer for TinyBERT's general and task-specific distillation; stages differ by configuration only.

The loop is flat, in nanoGPT's order: learning rate, periodic eval/checkpoint, micro-steps with accumulation,
clip, step, zero_grad, log, stop. `_loss_step(batch)` returns the named loss terms; `save_checkpoint()` is the only
place a resumable state is written.
"""

import contextlib
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

from contract.errors import UserError, describe
from distill import checkpoint, devices, encoding, glue, losses, metrics, models
from distill import config as config_lib
from distill import data as data_lib
from distill.config import FINETUNE, GENERAL, LINEAR, PREDICTION, TrainConfig

logger = logging.getLogger(__name__)

BEST_DIR = "best"  # the best-on-dev student of the prediction stage
BEST_EVAL_JSON = "eval_results.json"
CONFIG_NAME = "distill_config.json"


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
        self.tokenizer = data_lib.load_tokenizer(self.tokenizer_name)
        self._resolve_task()
        rows_per_epoch = self._open_data()
        self._load_models()
        self._make_optimizer(rows_per_epoch)
        self._open_dev_sets()
        self._resume(resume_state)
        self._open_log()
        if self.dev_sets and self.teacher is not None and resume_state is None:
            self._check_teacher_on_dev()
        self._write_config()

    def _check_inputs(self) -> Optional[Dict[str, Any]]:
        """Refuses an unusable --output, checkpoint or model source before anything is loaded; returns the
        checkpoint to resume from, if any."""
        cfg_d, cfg_run = self.config.distill, self.config.run
        checkpoint.check_output_dir(cfg_run.output)
        self.checkpoint_path = os.path.join(cfg_run.output, checkpoint.CHECKPOINT_NAME)
        resume_state = None
        if os.path.exists(self.checkpoint_path) and not cfg_run.no_resume:
            resume_state = checkpoint.read_checkpoint(self.checkpoint_path)
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
            self.task = glue.resolve_task(cfg_d.task, manifest, cfg_data.data, teacher=cfg_d.teacher)
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
            text_fields=self.task.text_fields if self.task.generic else None)
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
                                                num_labels=num_labels, labels=self.task.labels if self.task else None,
                                                from_teacher=cfg_d.student_init == "teacher").to(device)
        if self.prediction:
            self.student.fit_dense.requires_grad_(False)  # unused by the logits loss; kept as it was
        self.model: nn.Module = self.student
        if self.world_size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.student, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True)  # e.g. the pooler, unused by the intermediate losses
        self.autocast_dtype = devices.resolve_precision(self.config.run.precision, device)

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
                metrics.truncate_records(os.path.join(output, metrics.METRICS_JSONL), self.step)
                metrics.truncate_records(os.path.join(output, metrics.EVAL_JSONL), self.step)
        else:
            # Dropout differs per rank; the reader's randomness is seeded separately (seed, epoch, rank, worker).
            torch.manual_seed(seed + 1000 * self.rank)
            if self.is_main:  # a fresh run does not mix its records with an earlier run's
                for name in (metrics.METRICS_JSONL, metrics.EVAL_JSONL):
                    if os.path.exists(os.path.join(output, name)):
                        os.remove(os.path.join(output, name))
                shutil.rmtree(os.path.join(output, BEST_DIR), ignore_errors=True)
        self.start_step = self.step

    def _open_log(self) -> None:
        """The main process's records: metrics.jsonl, eval_results.jsonl and, with --report_to tensorboard, runs/."""
        self.run_log = (metrics.RunLog(self.config.run.output, tensorboard=self.config.run.report_to == "tensorboard")
                        if self.is_main else None)

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
        return config_lib.lr_factor(step, schedule=self.lr_schedule, warmup_steps=self.warmup_steps,
                         total_steps=self.total_steps)

    def _batches(self) -> Iterator[Dict[str, Any]]:
        """Batches forever, epoch after epoch, folding each consumed batch into `self.position`."""
        while True:
            self.stream.set_position(self.position)
            seen = False
            for batch in data_lib.read_batches(self.stream):
                seen = True
                if self.label_targets:
                    encoding.check_labels(batch["labels"], self.config.data.data, finetune=self.finetune)
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
        try:
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
                losses.check_finite(totals, step=self.step + 1)
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
        finally:  # the bar's last line before any error line
            progress.close()
        if self.step >= self.total_steps and self.is_main:
            self._finish()
        if self.run_log is not None:
            self.run_log.close()
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
        self.run_log.step(record)

    def evaluate(self) -> Dict[str, Any]:
        """Dev-set metrics (rank 0, prediction stage with --dev); appended to eval_results.jsonl."""
        if not self.dev_sets or not self.prediction:
            return {}
        results = glue.evaluate(self.student.bert, self.tokenizer, self.task, self.dev_sets, device=self.device,
                                batch_size=self.config.data.eval_batch_size,
                                max_seq_len=self.config.data.max_seq_len or self.task.max_seq_len)
        self.student.train()
        logger.info("eval at step %d: %s", self.step, json.dumps(results))
        self.run_log.evaluation(self.step, results)
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
        checkpoint.check_finite_weights(self.student, step=self.step)
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
        checkpoint.check_finite_weights(self.student, step=self.step)
        per_rank = {"rng": checkpoint.rng_state(), "position": self.position.to_dict()}
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
            checkpoint.write_checkpoint(state, self.checkpoint_path)
            logger.info("checkpoint at step %d: %s", self.step, self.checkpoint_path)
        if self.world_size > 1:
            dist.barrier()

    def _load_checkpoint(self, state: Dict[str, Any]) -> None:
        """Continues from a checkpoint that `checkpoint.read_checkpoint` read.

        Raises:
          UserError: it was written by another process count, or does not fit this run's models.
        """
        checkpoint.check_resumable(state, path=self.checkpoint_path, world_size=self.world_size,
                                   config=self.config.to_dict())
        try:
            self.student.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.step = int(state["step"])
            self.best_dev = state.get("best_dev")
            mine = state["ranks"][self.rank]
            checkpoint.set_rng_state(mine["rng"])
            self.position = data_lib.ReaderPosition.from_dict(mine["position"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
            raise UserError(f"{self.checkpoint_path} does not fit this run ({describe(error)}); resume with the "
                            "options that wrote it, or pass --no_resume to start afresh") from error
        if self.is_main:
            logger.info("resumed from %s at step %d", self.checkpoint_path, self.step)

    def _finish(self) -> None:
        """The student for `from_pretrained` (fit_dense beside it), metrics CSV and the loss curve."""
        output = self.config.run.output
        checkpoint.check_finite_weights(self.student, step=self.step)
        models.save_student(self.student, self.tokenizer, output, task=self._task_record())
        metrics.write_summaries(output)
        logger.info("student saved with save_pretrained in %s", output)
