"""The one GLUE task table: where each task's fields are (GLUE TSV and hub Parquet), its labels, metrics and names.

`augment.tasks` (reading and writing training sets) and `distill.glue` (dev sets and metrics) build their views
from this table; a task name any of them accepts resolves through `canonical_name`.
"""

import dataclasses
import math
import numbers
from typing import Dict, Optional, Tuple

_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")


@dataclasses.dataclass(frozen=True)
class GlueTaskSpec:
    """Everything known about one GLUE task.

    Attributes:
      name: the GLUE name ("SST-2").
      text_fields: the text fields, in the order they are augmented and encoded.
      text_columns: their column indices in the GLUE TSV.
      label_column: the label's column index in the TSV (negative counts from the end).
      id_column: the id column in train.tsv, or None (the data row index is the id).
      labels: the allowed labels, or None for regression (STS-B).
      metrics: what GLUE reports on the dev set.
      has_header: the TSVs start with a header line (CoLA's do not).
      num_columns: the exact number of columns of a train row, or None to take the header's.
      max_seq_len: the reference's task-distillation sequence length.
      hub_text_columns: the text columns of the hub's `nyu-mll/glue` Parquet files.
      hub_label_names: the hub's ClassLabel names in the order of their integer labels (None: regression).
      glue_header: train.tsv's header, for writing a hub input's train_aug.tsv in the reference layout.
      num_aug: augmented sentences per example (N) that the paper and the reference's data_augmentation.py use.
    """
    name: str
    text_fields: Tuple[str, ...]
    text_columns: Tuple[int, ...]
    label_column: int
    id_column: Optional[int]
    labels: Optional[Tuple[str, ...]]
    metrics: Tuple[str, ...]
    hub_text_columns: Tuple[str, ...]
    hub_label_names: Optional[Tuple[str, ...]]
    glue_header: Optional[Tuple[str, ...]]
    has_header: bool = True
    num_columns: Optional[int] = None
    max_seq_len: int = 128
    num_aug: int = 20

    @property
    def regression(self) -> bool:
        return self.labels is None


GLUE_TASKS: Dict[str, GlueTaskSpec] = {spec.name: spec for spec in (
    GlueTaskSpec("CoLA", ("sentence",), (3,), 1, None, _BINARY, ("mcc",), ("sentence",),
                 ("unacceptable", "acceptable"), None, has_header=False, num_columns=4, max_seq_len=64,
                 num_aug=30),
    GlueTaskSpec("SST-2", ("sentence",), (0,), 1, None, _BINARY, ("acc",), ("sentence",), ("negative", "positive"),
                 ("sentence", "label"), max_seq_len=64),
    GlueTaskSpec("MRPC", ("sentence1", "sentence2"), (3, 4), 0, None, _BINARY, ("acc", "f1"),
                 ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
                 ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"), num_aug=30),
    GlueTaskSpec("STS-B", ("sentence1", "sentence2"), (7, 8), -1, 0, None, ("pearson", "spearmanr"),
                 ("sentence1", "sentence2"), None,
                 ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
                  "score"), num_aug=30),
    GlueTaskSpec("QQP", ("question1", "question2"), (3, 4), 5, 0, _BINARY, ("acc", "f1"), ("question1", "question2"),
                 ("not_duplicate", "duplicate"), ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
                 num_aug=10),
    GlueTaskSpec("MNLI", ("sentence1", "sentence2"), (8, 9), -1, 0, ("contradiction", "entailment", "neutral"),
                 ("acc",), ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
                 ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                  "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"), num_aug=10),
    GlueTaskSpec("QNLI", ("question", "sentence"), (1, 2), -1, 0, _NLI2, ("acc",), ("question", "sentence"),
                 _NLI2, ("index", "question", "sentence", "label")),
    GlueTaskSpec("RTE", ("sentence1", "sentence2"), (1, 2), -1, 0, _NLI2, ("acc",), ("sentence1", "sentence2"),
                 _NLI2, ("index", "sentence1", "sentence2", "label"), num_aug=30),
)}

# Names people type for the same tasks: any case, with or without "-" or "_", and MNLI's two dev splits.
_EXTRA_ALIASES = {"mnlim": "MNLI", "mnlimm": "MNLI"}


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


TASK_ALIASES: Dict[str, str] = {**{_key(name): name for name in GLUE_TASKS}, **_EXTRA_ALIASES}


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
