"""The one task type (`Task`) and the GLUE task table: where each task's fields are (GLUE TSV and hub Parquet), its
labels, metrics, N and names; a user's own task (`generic_task`); the one rule for label values (`label_text`).

`augment.tasks` (reading training sets) and `distill.glue` (dev sets and metrics) use these tasks as they are; a
task name any of them accepts resolves through `canonical_name`.
"""

import dataclasses
import math
import numbers
from typing import Dict, Optional, Sequence, Tuple

_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")


GENERIC = "generic"
GENERIC_CLASSIFICATION_METRICS = ("acc", "macro_f1")
GENERIC_REGRESSION_METRICS = ("pearson", "spearmanr")


@dataclasses.dataclass(frozen=True)
class Task:
    """The one task type: a GLUE task from the table below, or a user's own ("generic") task with named columns.

    Attributes:
      name: the GLUE name ("SST-2") or "generic".
      text_fields: the text fields, in the order they are augmented and encoded (generic: the column names).
      labels: the allowed labels in the model's output order; None for regression, and for a generic task read
        without a label list (any label).
      metrics: what is reported on the dev set.
      regression: the label is a real number (STS-B).
      text_columns: GLUE: the text fields' column indices in the TSV (None for named columns).
      label_column: GLUE: the label's column index in the TSV (negative counts from the end).
      id_column: GLUE: the id column in train.tsv, or None (the data row index is the id).
      label_field: generic: the label column's name.
      has_header: the TSVs start with a header line (CoLA's do not).
      num_columns: the exact number of columns of a train row, or None to take the header's.
      max_seq_len: the reference's task-distillation sequence length.
      num_aug: augmented sentences per example (N) that the paper and the reference's data_augmentation.py use.
      hub_text_columns: the text columns of the hub's `nyu-mll/glue` Parquet files.
      hub_label_names: the hub's ClassLabel names in the order of their integer labels (None: regression).
      glue_header: train.tsv's header, for writing a hub input's train_aug.tsv in the reference layout.
    """
    name: str
    text_fields: Tuple[str, ...]
    labels: Optional[Tuple[str, ...]]
    metrics: Tuple[str, ...]
    regression: bool = False
    text_columns: Optional[Tuple[int, ...]] = None
    label_column: Optional[int] = None
    id_column: Optional[int] = None
    label_field: Optional[str] = None
    has_header: bool = True
    num_columns: Optional[int] = None
    max_seq_len: int = 128
    num_aug: int = 20
    hub_text_columns: Tuple[str, ...] = ()
    hub_label_names: Optional[Tuple[str, ...]] = None
    glue_header: Optional[Tuple[str, ...]] = None

    @property
    def generic(self) -> bool:
        return self.name == GENERIC

    @property
    def main_metric(self) -> str:
        """The metric the reference keeps the best dev model by: mcc (CoLA), corr = mean of Pearson and Spearman
        (STS-B), accuracy otherwise (MNLI: of the matched split, see `main_split`)."""
        if "mcc" in self.metrics:
            return "mcc"
        return "corr" if self.regression else "acc"

    def main_split(self, splits) -> str:
        """Which evaluated split decides the best model: MNLI's matched one where present, else the first."""
        splits = list(splits)
        return "mnli-m" if "mnli-m" in splits else splits[0]

    def to_dict(self) -> Dict:
        """What a saved classifier keeps of its task (tinybert_task.json), so eval needs no task options."""
        return {"task": self.name, "text_fields": list(self.text_fields) if self.generic else None,
                "label_field": self.label_field, "label_list": list(self.labels) if self.labels is not None else None,
                "regression": self.regression, "metrics": list(self.metrics), "max_seq_len": self.max_seq_len}


def generic_task(text_fields: Sequence[str], *, labels: Optional[Sequence[str]] = None,
                 label_field: Optional[str] = None, regression: bool = False, max_seq_len: int = 128) -> Task:
    """A user's own task with named columns: accuracy and macro-F1 (classification) or Pearson and Spearman."""
    return Task(GENERIC, tuple(str(field) for field in text_fields),
                None if regression or not labels else tuple(str(label) for label in labels),
                GENERIC_REGRESSION_METRICS if regression else GENERIC_CLASSIFICATION_METRICS, regression=regression,
                label_field=label_field, max_seq_len=max_seq_len)


def _glue(name, text_fields, text_columns, label_column, id_column, labels, metrics, hub_text_columns,
          hub_label_names, glue_header, **kwargs) -> Task:
    return Task(name, text_fields, labels, metrics, regression=labels is None, text_columns=text_columns,
                label_column=label_column, id_column=id_column, hub_text_columns=hub_text_columns,
                hub_label_names=hub_label_names, glue_header=glue_header, **kwargs)


GLUE_TASKS: Dict[str, Task] = {spec.name: spec for spec in (
    _glue("CoLA", ("sentence",), (3,), 1, None, _BINARY, ("mcc",), ("sentence",),
                 ("unacceptable", "acceptable"), None, has_header=False, num_columns=4, max_seq_len=64,
                 num_aug=30),
    _glue("SST-2", ("sentence",), (0,), 1, None, _BINARY, ("acc",), ("sentence",), ("negative", "positive"),
                 ("sentence", "label"), max_seq_len=64),
    _glue("MRPC", ("sentence1", "sentence2"), (3, 4), 0, None, _BINARY, ("acc", "f1"),
                 ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
                 ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"), num_aug=30),
    _glue("STS-B", ("sentence1", "sentence2"), (7, 8), -1, 0, None, ("pearson", "spearmanr"),
                 ("sentence1", "sentence2"), None,
                 ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
                  "score"), num_aug=30),
    _glue("QQP", ("question1", "question2"), (3, 4), 5, 0, _BINARY, ("acc", "f1"), ("question1", "question2"),
                 ("not_duplicate", "duplicate"), ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
                 num_aug=10),
    _glue("MNLI", ("sentence1", "sentence2"), (8, 9), -1, 0, ("contradiction", "entailment", "neutral"),
                 ("acc",), ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
                 ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                  "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"), num_aug=10),
    _glue("QNLI", ("question", "sentence"), (1, 2), -1, 0, _NLI2, ("acc",), ("question", "sentence"),
                 _NLI2, ("index", "question", "sentence", "label")),
    _glue("RTE", ("sentence1", "sentence2"), (1, 2), -1, 0, _NLI2, ("acc",), ("sentence1", "sentence2"),
                 _NLI2, ("index", "sentence1", "sentence2", "label"), num_aug=30),
)}

# Names people type for the same tasks: any case, with or without "-" or "_", and MNLI's two dev splits.
_EXTRA_ALIASES = {"mnlim": "MNLI", "mnlimm": "MNLI"}


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


TASK_ALIASES: Dict[str, str] = {**{_key(name): name for name in GLUE_TASKS}, **_EXTRA_ALIASES}


def glue_task(name: str) -> Task:
    """The GLUE task of `name` (any case, with or without "-"/"_", MNLI's dev split names).

    Raises:
      KeyError: not a GLUE task; the message lists them.
    """
    key = canonical_name(name)
    if key is None:
        raise KeyError(f"unknown task {name!r}; GLUE tasks are {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[key]


def canonical_name(name: str) -> Optional[str]:
    """The GLUE name of `name` ("sst2", "STS_B", "mnli-mm" -> "SST-2", "STS-B", "MNLI"), or None."""
    return TASK_ALIASES.get(_key(name))


def label_text(value: object) -> str:
    """A label value as the text it is compared and written as, the same for every reader: a string as it is; a
    number in JSON's canonical form (`1` and `1.0` are both "1", 0.7 is "0.7"); a JSON boolean as "true"/"false".

    Raises:
      ValueError: no label (null, NaN, infinity), or a value that is not a string, number or boolean (a list, an
        object); the message says which.
    """
    if value is None:
        raise ValueError("no label (null)")
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{number!r} is not a label")
        return str(int(number)) if number.is_integer() else repr(number)
    raise ValueError(f"a {type(value).__name__} is not a label")
