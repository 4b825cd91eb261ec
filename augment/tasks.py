"""Reading a task's training rows: which columns hold the texts, the label and the id (`contract.tasks.Task`).

The eight GLUE tasks are read as the reference reads their `train.tsv` (tab-separated, no quoting, header line
except CoLA); any other data set is a generic TSV/CSV/JSONL/Parquet table with named text and label columns.
"""

import dataclasses
import math
import unicodedata
from typing import Dict, List, Optional, Sequence, Tuple

from contract import tasks as task_table
from contract.tasks import GLUE_TASKS, Task


class RejectedRecord(ValueError):
    """An input record that cannot be augmented; `reason` is a short stable name for counting."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def resolve_task(name: str) -> Task:
    """The GLUE task of `name` (any case, with or without the dash).

    Raises:
      KeyError: not a GLUE task; the message lists the known ones.
    """
    key = task_table.canonical_name(name)
    if key is None:
        raise KeyError(f"unknown task {name!r}; use one of {', '.join(GLUE_TASKS)} or --task generic "
                       "with --text_columns")
    return GLUE_TASKS[key]


def generic_task(text_fields: Sequence[str], label_field: Optional[str],
                 label_list: Optional[Sequence[str]] = None) -> Task:
    """A named-column task (TSV/CSV with a header, JSONL, Parquet); any label where `label_list` is None."""
    if not text_fields:
        raise ValueError("a generic task needs at least one text column (--text_columns)")
    return task_table.generic_task(text_fields, labels=label_list, label_field=label_field)


@dataclasses.dataclass(frozen=True)
class Example:
    """One input example: its id, its row in the input, its texts (in text_fields order), and its label."""
    example_id: str
    row_index: int
    texts: Tuple[str, ...]
    label: Optional[str]
    cells: Optional[Tuple[str, ...]] = None  # the whole GLUE row, for train_aug.tsv


def label_text(value: object) -> str:
    """`contract.tasks.label_text`, its refusal as a `bad_label` reject.

    Raises:
      RejectedRecord: no label (null, NaN), or a value that is not a string, number or boolean.
    """
    try:
        return task_table.label_text(value)
    except ValueError as error:
        raise RejectedRecord("bad_label", str(error)) from None


def _check_label(task: Task, label: Optional[str]) -> Optional[str]:
    if label is None:
        return None
    label = label.strip()
    if task.regression:
        try:
            value = float(label)
        except ValueError:
            raise RejectedRecord("bad_label", f"{label!r} is not a number") from None
        if not math.isfinite(value):
            raise RejectedRecord("bad_label", f"{label!r} is not finite")
    elif task.labels is not None and label not in task.labels:
        raise RejectedRecord("bad_label", f"{label!r} is not one of {list(task.labels)}")
    return label


# Characters that show nothing: controls, format characters (zero-width space and joiners, BOM), separators.
_INVISIBLE = frozenset(("Cc", "Cf", "Zs", "Zl", "Zp"))


def _is_blank(text: str) -> bool:
    return all(unicodedata.category(char) in _INVISIBLE for char in text)


def _check_texts(task: Task, texts: Sequence[object]) -> Tuple[str, ...]:
    for field, text in zip(task.text_fields, texts):
        if text is None:
            raise RejectedRecord("empty_text", f"field {field} is empty")
        if not isinstance(text, str):
            raise RejectedRecord("bad_text", f"field {field} is a {type(text).__name__}, not text")
        if _is_blank(text):
            raise RejectedRecord("empty_text", f"field {field} is empty")
    return tuple(texts)


def parse_glue_row(task: Task, cells: Sequence[str], row_index: int, num_columns: int) -> Example:
    """An example from the cells of one data row of a GLUE train.tsv.

    Raises:
      RejectedRecord: wrong column count, empty text, or a label outside the task's labels.
    """
    if len(cells) != num_columns:
        raise RejectedRecord("wrong_column_count", f"{len(cells)} columns, expected {num_columns}")
    needed = max(list(task.text_columns) + [c if c >= 0 else -c - 1 for c in (task.label_column, task.id_column)
                                             if c is not None]) + 1
    if len(cells) < needed:  # the header itself is not the task's layout (it set num_columns)
        raise RejectedRecord("wrong_column_count", f"{len(cells)} columns, {task.name} needs at least {needed}")
    texts = _check_texts(task, [cells[i] for i in task.text_columns])
    label = _check_label(task, cells[task.label_column])
    example_id = cells[task.id_column].strip() if task.id_column is not None else str(row_index)
    return Example(example_id or str(row_index), row_index, texts, label, tuple(cells))


def parse_named_row(task: Task, record: Dict[str, object], row_index: int, *,
                    label_field: Optional[str], id_field: Optional[str]) -> Example:
    """An example from a named record (a CSV/TSV row with a header, a JSON object, a Parquet row).

    Raises:
      RejectedRecord: a missing column, empty text or a label outside `task.labels`.
    """
    missing = [name for name in list(task.text_fields) + [label_field, id_field] if name and name not in record]
    if missing:
        raise RejectedRecord("missing_column", f"no column {missing[0]!r}")
    texts = _check_texts(task, [record[name] for name in task.text_fields])
    label = _check_label(task, label_text(record[label_field])) if label_field else None
    example_id = str(record[id_field]).strip() if id_field else str(row_index)
    return Example(example_id or str(row_index), row_index, texts, label)


def replace_cells(task: Task, cells: List[str], texts: Sequence[str]) -> List[str]:
    """The cells of a GLUE row with its text fields replaced (an augmented row of train_aug.tsv)."""
    out = list(cells)
    for column, text in zip(task.text_columns, texts):
        out[column] = text
    return out


def hub_label_text(task: Task, value: object, label_names: Optional[Sequence[str]]) -> str:
    """The reference's label string for a hub label (an integer class, a float score, or a name).

    Raises:
      RejectedRecord: no label (null, NaN), or a number that is not one of the task's classes (0.7, -1, 2.5).
    """
    text = label_text(value)
    if task.regression or isinstance(value, str):
        return text
    names = list(label_names) if label_names is not None else list(task.hub_label_names or ())
    if isinstance(value, bool) or not text.lstrip("-").isdigit():
        raise RejectedRecord("bad_label", f"label {value!r} is not a class of {task.name}")
    index = int(text)
    if not 0 <= index < len(names):
        raise RejectedRecord("bad_label", f"label {value!r} is not a class of {task.name} (-1 marks the test split)")
    if task.labels == ("0", "1"):
        return str(index)
    return names[index]


def parse_hub_row(task: Task, record: Dict[str, object], row_index: int,
                  label_names: Optional[Sequence[str]]) -> Example:
    """An example from a row of a GLUE task's hub Parquet file (`datasets` layout), with GLUE-layout cells.

    Raises:
      RejectedRecord: a missing column, empty text, or a label outside the task's labels.
    """
    columns = task.hub_text_columns
    missing = [name for name in columns + ("label",) if name not in record]
    if missing:
        raise RejectedRecord("missing_column", f"no column {missing[0]!r}")
    texts = _check_texts(task, [record[name] for name in columns])
    label = _check_label(task, hub_label_text(task, record["label"], label_names))
    example_id = str(record["idx"]) if record.get("idx") is not None else str(row_index)
    header = task.glue_header
    cells = [""] * (len(header) if header else task.num_columns)
    for column, text in zip(task.text_columns, texts):
        cells[column] = text
    cells[task.label_column] = label
    if task.id_column is not None:
        cells[task.id_column] = example_id
    return Example(example_id, row_index, texts, label, tuple(cells))
