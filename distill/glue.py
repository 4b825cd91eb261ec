"""GLUE tasks: dev-set TSV readers in the reference layout, label lists and the metrics GLUE reports, and the task a
training run resolves from its --task and its data's manifest.

Malformed rows (too few columns, unknown label, non-numeric score) are counted and reported, never fatal.
"""

import csv
import dataclasses
import logging
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from contract import tasks as task_table
from contract.errors import UserError
from contract.tasks import GENERIC, Task, label_text

logger = logging.getLogger(__name__)


def _csv_reader(handle, **kwargs):
    """csv.reader with no field size limit (a long GLUE text exceeds csv's 128 KiB default); set here, on first
    read, not at import, so that importing distill changes no global state."""
    csv.field_size_limit(sys.maxsize)
    return csv.reader(handle, **kwargs)


MNLI_DEV_FILES = {"mnli-m": "dev_matched.tsv", "mnli-mm": "dev_mismatched.tsv"}


def generic_task(text_fields: Sequence[str], label_field: Optional[str], labels: Optional[Sequence[str]], *,
                 regression: bool = False, max_seq_len: int = 128) -> Task:
    """The user's own task: named text columns and label column; accuracy and macro-F1 (classification) or
    Pearson and Spearman (regression).

    Raises:
      UserError: no text field, more than two, or a classification task without labels.
    """
    text_fields = tuple(str(f) for f in text_fields or ())
    if not 1 <= len(text_fields) <= 2:
        raise UserError(f"a generic task needs one or two text columns (--text_columns), not {list(text_fields)}")
    if not regression and not labels:
        raise UserError("a generic classification task needs its labels: --label_list (or --regression)")
    return task_table.generic_task(text_fields, labels=None if regression else labels,
                                   label_field=label_field or "label", regression=regression, max_seq_len=max_seq_len)


def task_from_dict(values: Dict) -> Task:
    """The task a saved classifier recorded (`Task.to_dict`)."""
    if str(values.get("task")) != GENERIC:
        return get_task(str(values.get("task")))
    return generic_task(values.get("text_fields") or (), values.get("label_field"), values.get("label_list"),
                        regression=bool(values.get("regression")), max_seq_len=int(values.get("max_seq_len") or 128))


def get_task(name: str) -> Task:
    """Looks a task up case-insensitively ("sst-2", "SST2", "mnli-mm" -> MNLI).

    Raises:
      UserError: unknown task.
    """
    try:
        return task_table.glue_task(name)
    except KeyError as error:
        raise UserError(error.args[0]) from None


def resolve_task(task_name: Optional[str], manifest: Dict[str, Any], data_path: str, *,
                 teacher: Optional[str] = None) -> Task:
    """The task of a task run: a GLUE task by name, or for `--task generic` the one the augmented data's manifest
    records (text_fields, label_list, regression). A generic manifest without a label_list takes the teacher's
    label names where config.json names them.

    Raises:
      UserError: an unknown task, a manifest without text fields, labels that differ from the task's, or a
        generic classification task whose labels nobody names.
    """
    recorded = str(manifest.get("task") or "")
    if task_name is None:  # no --task: the one the data records
        if not recorded:
            raise UserError(f"{data_path}: its manifest names no task; pass --task")
        task_name = recorded
    elif task_name.lower() != GENERIC and recorded and recorded.lower() != GENERIC \
            and task_table.canonical_name(task_name) != task_table.canonical_name(recorded):
        raise UserError(f"--task {task_name} but {data_path} holds {recorded} data; drop --task (the data names its "
                        "task) or pass the data of that task")
    if task_name.lower() != GENERIC:
        task = get_task(task_name)
        label_list = manifest.get("label_list")
        expected = list(task.labels) if task.labels else None
        if label_list is not None and expected is not None and sorted(label_list) != sorted(expected):
            raise UserError(f"{data_path} has labels {label_list} but {task.name} has {expected}; check --task")
        return task
    if recorded and recorded.lower() != GENERIC:
        logger.info("%s holds %s data: --task generic reads it as %s", data_path, recorded, recorded)
        return get_task(recorded)
    text_fields = manifest.get("text_fields") or []
    regression = bool(manifest.get("regression", False))
    labels = manifest.get("label_list")
    if not regression and not labels and teacher:
        from transformers import AutoConfig
        from distill.models import is_default_label_names
        try:
            id2label = AutoConfig.from_pretrained(teacher).id2label or {}
        except Exception:  # pylint: disable=broad-except  # the teacher's own load reports it in one line
            id2label = {}
        if not is_default_label_names(id2label, len(id2label)):
            labels = [str(id2label[i]) for i in range(len(id2label))]
            logger.info("%s records no label_list: the labels are the teacher's %s", data_path, labels)
    if not regression and not labels:
        raise UserError(f"{data_path}: its manifest records no label_list and the teacher does not name its labels; "
                        "rerun python -m pipelines.augment with --label_list")
    # Dev files are in the input's layout: the label column the augment run read (`--label_column`), not the
    # augmented rows' own `label` column.
    dev_label = manifest.get("input_label_column") or manifest.get("label_field") or "label"
    return generic_task(text_fields, dev_label, labels, regression=regression)


@dataclasses.dataclass
class DevSet:
    texts: List[Tuple[str, ...]]
    labels: List  # label index (classification) or float (regression)
    malformed: int
    path: str


def read_dev_tsv(task: Task, path: str) -> DevSet:
    """Reads one GLUE dev TSV (a generic task: any named table, see `read_named_dev`); rows that do not parse are
    counted in `malformed` and logged once."""
    if task.generic:
        return read_named_dev(task, path)
    if not os.path.isfile(path):
        raise UserError(f"dev file {path} does not exist; pass the task's dev.tsv (MNLI: a directory with "
                        "dev_matched.tsv and dev_mismatched.tsv)")
    try:
        return _read_dev_rows(task, path)
    except (UnicodeDecodeError, csv.Error) as error:  # a binary or damaged file
        raise UserError(f"dev file {path} is not a UTF-8 TSV ({type(error).__name__}: {error}); pass the task's "
                        "dev.tsv") from error


def _no_usable_row(path: str, task: Task, seen: Dict[str, int]) -> UserError:
    """The one line for a dev file none of whose rows can be scored: the labels it holds and the model's."""
    shown = ", ".join(repr(label) for label in sorted(seen)[:8]) + (", ..." if len(seen) > 8 else "")
    known = list(task.labels) if task.labels is not None else "numbers"
    return UserError(f"dev file {path} has no row that can be scored: its labels ({shown or 'none'}) are none of "
                     f"the model's {known}; pass the task's dev file (or the model trained on its labels)")


def _read_dev_rows(task: Task, path: str) -> DevSet:
    texts, labels, malformed = [], [], 0
    seen: Dict[str, int] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        reader = _csv_reader(handle, delimiter="\t", quotechar=None)
        for row_number, row in enumerate(reader):
            if task.has_header and row_number == 0:
                continue
            try:
                fields = tuple(row[c] for c in task.text_columns)
                raw_label = row[task.label_column].strip()
                seen[raw_label] = seen.get(raw_label, 0) + 1
                label = float(raw_label) if task.labels is None else task.labels.index(raw_label)
                if task.labels is None and not np.isfinite(label):
                    raise ValueError(raw_label)
            except (IndexError, ValueError):
                malformed += 1
                continue
            texts.append(fields)
            labels.append(label)
    if not texts:
        raise _no_usable_row(path, task, seen)
    if malformed:
        logger.warning("%s: %d malformed rows skipped (too few columns or bad label)", path, malformed)
    return DevSet(texts, labels, malformed, path)


def _named_records(path: str):
    """The rows of a table with named columns: Parquet, JSON lines, CSV, or TSV (tab-separated, no quoting, as
    pipelines.augment reads it). Values come back as strings (None where missing)."""
    import json
    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq
        for record in pq.read_table(path).to_pylist():
            yield record
        return
    with open(path, encoding="utf-8-sig", newline="") as handle:
        if lower.endswith((".jsonl", ".json", ".ndjson")):
            for line in handle:
                if line.strip():
                    try:
                        record = json.loads(line)
                    except ValueError:
                        record = None
                    yield record if isinstance(record, dict) else None
            return
        if lower.endswith(".csv"):
            reader = _csv_reader(handle)
        else:
            reader = _csv_reader(handle, delimiter="\t", quotechar=None)
        header = None
        for row in reader:
            if header is None:
                header = row
                continue
            yield dict(zip(header, row)) if len(row) == len(header) else None


def read_named_dev(task: Task, path: str) -> DevSet:
    """A generic task's dev file (TSV/CSV with a header, JSONL or Parquet) by column names; rows without the
    texts or with a label outside the task's are counted as malformed.

    Raises:
      UserError: no such file, unreadable, or none of its rows has the task's columns.
    """
    if not os.path.isfile(path):
        raise UserError(f"dev file {path} does not exist; pass a TSV/CSV (with a header), JSONL or Parquet file")
    texts, labels, malformed = [], [], 0
    seen: Dict[str, int] = {}
    try:
        for record in _named_records(path):
            try:
                fields = tuple(str(record[name]) for name in task.text_fields)
                raw_label = label_text(record[task.label_field]).strip()
                seen[raw_label] = seen.get(raw_label, 0) + 1
                label = float(raw_label) if task.labels is None else task.labels.index(raw_label)
                if task.labels is None and not np.isfinite(label):
                    raise ValueError(raw_label)
            except (KeyError, TypeError, ValueError):
                malformed += 1
                continue
            texts.append(fields)
            labels.append(label)
    except (UnicodeDecodeError, csv.Error, OSError) as error:
        raise UserError(f"dev file {path} cannot be read ({type(error).__name__}: {error}); pass a UTF-8 "
                        "TSV/CSV, JSONL or Parquet file") from error
    except Exception as error:  # pylint: disable=broad-except  # pyarrow's errors on a damaged Parquet file
        raise UserError(f"dev file {path} cannot be read ({type(error).__name__}); pass a TSV/CSV, JSONL or "
                        "Parquet file") from error
    if not texts and seen:
        raise _no_usable_row(path, task, seen)
    if not texts:
        raise UserError(f"dev file {path} has no row with the columns {list(task.text_fields)} and "
                        f"{task.label_field!r} (and a label in {list(task.labels) if task.labels else 'numbers'}); "
                        "check --text_columns/--label_column")
    if malformed:
        logger.warning("%s: %d malformed rows skipped (missing column or bad label)", path, malformed)
    return DevSet(texts, labels, malformed, path)


def dev_sets(task: Task, path: str) -> Dict[str, DevSet]:
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
    if task.generic:
        return {"dev": read_named_dev(task, path)}
    if os.path.isdir(path):
        path = os.path.join(path, "dev.tsv")
    return {task.name.lower(): read_dev_tsv(task, path)}


def compute_metrics(task: Task, predictions: np.ndarray, labels: Sequence) -> Dict[str, float]:
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
    if "macro_f1" in task.metrics:
        result["macro_f1"] = float(np.mean([f1_score(predictions, labels, positive=index)
                                            for index in range(len(task.labels))]))
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
    if true_pos == 0:  # also a class absent from both (scikit-learn's zero_division=0)
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


def evaluate(model, tokenizer, task: Task, sets: Dict[str, DevSet], *, device, batch_size: int,
             max_seq_len: int) -> Dict[str, Dict[str, float]]:
    """Scores a sequence classifier on each dev set: {split: {metric: value, "examples", "malformed_rows"}}.

    A classifier whose config.json names the task's labels in another order is scored as its id2label says.

    Raises:
      UserError: it names other labels than the task's (see `models.label_permutation`).
    """
    import torch
    from distill.encoding import collate, encode_texts
    from distill.models import label_permutation
    order = label_permutation(getattr(model.config, "id2label", None), task.labels, "the model")
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
        if order is not None and len(logits):
            logits = logits[:, order]
        predictions = logits[:, 0] if task.labels is None else logits.argmax(axis=-1)
        results[split] = {**compute_metrics(task, predictions, dev.labels), "examples": len(dev.labels),
                          "malformed_rows": dev.malformed}
    model.train(was_training)
    return results
