"""GLUE tasks: dev-set TSV readers in the reference layout, label lists and the metrics GLUE reports.

Malformed rows (too few columns, unknown label, non-numeric score) are counted and reported, never fatal.
"""

import csv
import dataclasses
import logging
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from distill.config import UserError

logger = logging.getLogger(__name__)

csv.field_size_limit(sys.maxsize)


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """Where a task's dev TSV keeps its texts and label, and how it is scored."""
    name: str
    text_columns: Tuple[int, ...]
    label_column: int  # -1 = last column
    labels: Optional[Tuple[str, ...]]  # None = regression
    metrics: Tuple[str, ...]
    header: bool = True
    max_seq_len: int = 128

    @property
    def main_metric(self) -> str:
        """The metric the reference keeps the best dev model by: mcc (CoLA), corr = mean of Pearson and Spearman
        (STS-B), accuracy otherwise (MNLI: of the matched split, see `main_split`)."""
        if "mcc" in self.metrics:
            return "mcc"
        return "corr" if self.labels is None else "acc"

    def main_split(self, splits) -> str:
        """Which evaluated split decides the best model: MNLI's matched one where present, else the first."""
        splits = list(splits)
        return "mnli-m" if "mnli-m" in splits else splits[0]


GLUE_TASKS = {
    "CoLA": GlueTask("CoLA", (3,), 1, ("0", "1"), ("mcc",), header=False, max_seq_len=64),
    "SST-2": GlueTask("SST-2", (0,), 1, ("0", "1"), ("acc",), max_seq_len=64),
    "MRPC": GlueTask("MRPC", (3, 4), 0, ("0", "1"), ("acc", "f1")),
    "STS-B": GlueTask("STS-B", (7, 8), -1, None, ("pearson", "spearmanr")),
    "QQP": GlueTask("QQP", (3, 4), 5, ("0", "1"), ("acc", "f1")),
    "MNLI": GlueTask("MNLI", (8, 9), -1, ("contradiction", "entailment", "neutral"), ("acc",)),
    "QNLI": GlueTask("QNLI", (1, 2), -1, ("entailment", "not_entailment"), ("acc",)),
    "RTE": GlueTask("RTE", (1, 2), -1, ("entailment", "not_entailment"), ("acc",)),
}
MNLI_DEV_FILES = {"mnli-m": "dev_matched.tsv", "mnli-mm": "dev_mismatched.tsv"}


def get_task(name: str) -> GlueTask:
    """Looks a task up case-insensitively ("sst-2", "SST2", "mnli-mm" -> MNLI).

    Raises:
      UserError: unknown task.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key in ("mnlim", "mnlimm"):
        key = "mnli"
    for task_name, task in GLUE_TASKS.items():
        if task_name.lower().replace("-", "") == key:
            return task
    raise UserError(f"unknown task {name!r}; GLUE tasks are {', '.join(GLUE_TASKS)}")


@dataclasses.dataclass
class DevSet:
    texts: List[Tuple[str, ...]]
    labels: List  # label index (classification) or float (regression)
    malformed: int
    path: str


def read_dev_tsv(task: GlueTask, path: str) -> DevSet:
    """Reads one GLUE dev TSV; rows that do not parse are counted in `malformed` and logged once."""
    if not os.path.isfile(path):
        raise UserError(f"dev file {path} does not exist; pass the task's dev.tsv (MNLI: a directory with "
                        "dev_matched.tsv and dev_mismatched.tsv)")
    try:
        return _read_dev_rows(task, path)
    except (UnicodeDecodeError, csv.Error) as error:  # a binary or damaged file
        raise UserError(f"dev file {path} is not a UTF-8 TSV ({type(error).__name__}: {error}); pass the task's "
                        "dev.tsv") from error


def _read_dev_rows(task: GlueTask, path: str) -> DevSet:
    texts, labels, malformed = [], [], 0
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quotechar=None)
        for row_number, row in enumerate(reader):
            if task.header and row_number == 0:
                continue
            try:
                fields = tuple(row[c] for c in task.text_columns)
                raw_label = row[task.label_column].strip()
                label = float(raw_label) if task.labels is None else task.labels.index(raw_label)
                if task.labels is None and not np.isfinite(label):
                    raise ValueError(raw_label)
            except (IndexError, ValueError):
                malformed += 1
                continue
            texts.append(fields)
            labels.append(label)
    if malformed:
        logger.warning("%s: %d malformed rows skipped (too few columns or bad label)", path, malformed)
    return DevSet(texts, labels, malformed, path)


def dev_sets(task: GlueTask, path: str) -> Dict[str, DevSet]:
    """The dev sets to evaluate, by split name: one file, or for MNLI matched and mismatched kept apart.

    A directory is looked into for dev.tsv (MNLI: dev_matched.tsv and dev_mismatched.tsv).
    """
    if task.name == "MNLI":
        if os.path.isdir(path):
            found = {split: os.path.join(path, name) for split, name in MNLI_DEV_FILES.items()
                     if os.path.isfile(os.path.join(path, name))}
            if not found:
                raise UserError(f"{path} holds neither dev_matched.tsv nor dev_mismatched.tsv")
            return {split: read_dev_tsv(task, file) for split, file in found.items()}
        split = "mnli-mm" if "mismatched" in os.path.basename(path) else "mnli-m"
        return {split: read_dev_tsv(task, path)}
    if os.path.isdir(path):
        path = os.path.join(path, "dev.tsv")
    return {task.name.lower(): read_dev_tsv(task, path)}


def compute_metrics(task: GlueTask, predictions: np.ndarray, labels: Sequence) -> Dict[str, float]:
    """GLUE's metrics for `task`: predictions are class indices, or scores for regression."""
    from scipy import stats
    labels = np.asarray(labels)
    result: Dict[str, float] = {}
    if len(labels) == 0:
        return result
    if "acc" in task.metrics:
        result["acc"] = float((predictions == labels).mean())
    if "f1" in task.metrics:
        result["f1"] = f1_score(predictions, labels)
    if "mcc" in task.metrics:
        result["mcc"] = matthews_corrcoef(predictions, labels)
    if "pearson" in task.metrics:
        result["pearson"] = float(stats.pearsonr(predictions, labels)[0])
        result["spearmanr"] = float(stats.spearmanr(predictions, labels)[0])
        result["corr"] = (result["pearson"] + result["spearmanr"]) / 2
    return result


def f1_score(predictions: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    true_pos = float(((predictions == positive) & (labels == positive)).sum())
    predicted, actual = float((predictions == positive).sum()), float((labels == positive).sum())
    if true_pos == 0:
        return 0.0
    precision, recall = true_pos / predicted, true_pos / actual
    return 2 * precision * recall / (precision + recall)


def matthews_corrcoef(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Binary Matthews correlation; 0 when a marginal is empty (as scikit-learn does)."""
    tp = float(((predictions == 1) & (labels == 1)).sum())
    tn = float(((predictions == 0) & (labels == 0)).sum())
    fp = float(((predictions == 1) & (labels == 0)).sum())
    fn = float(((predictions == 0) & (labels == 1)).sum())
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denominator) if denominator > 0 else 0.0


def evaluate(model, tokenizer, task: GlueTask, sets: Dict[str, DevSet], *, device, batch_size: int,
             max_seq_len: int) -> Dict[str, Dict[str, float]]:
    """Scores a sequence classifier on each dev set: {split: {metric: value, "examples", "malformed_rows"}}."""
    import torch
    from distill.data import collate, encode_texts
    was_training = model.training
    model.eval()
    results = {}
    for split, dev in sets.items():
        rows = encode_texts(tokenizer, dev.texts, max_seq_len)
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                batch = collate(rows, np.arange(start, min(start + batch_size, len(rows))), tokenizer.pad_token_id or 0)
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
                outputs.append(logits)
        logits = np.concatenate(outputs) if outputs else np.zeros((0, 1))
        predictions = logits[:, 0] if task.labels is None else logits.argmax(axis=-1)
        results[split] = {**compute_metrics(task, predictions, dev.labels), "examples": len(dev.labels),
                          "malformed_rows": dev.malformed}
    model.train(was_training)
    return results
