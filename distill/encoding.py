"""Rows to model inputs: token ids of corpus rows or of texts tokenized on the fly, padded batches, labels.

Token ids are kept flat (`EncodedRows`: one values array and offsets), so a chunk of rows costs a few numpy arrays
whatever its size; `collate` pads the chosen examples of a batch to its longest (or a fixed width).
"""

import dataclasses
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from contract.errors import UserError


@dataclasses.dataclass
class EncodedRows:
    """Token ids of many examples, flat: example i is values[offsets[i]:offsets[i + 1]].

    segment_a_len[i] tokens ("[CLS] A [SEP]") have token type 0, the rest 1. `labels` (float32, NaN where a row
    has none) is present only when the reader was asked for regression labels.
    """
    values: np.ndarray
    offsets: np.ndarray
    segment_a_len: np.ndarray
    labels: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.segment_a_len)


def collate(rows: EncodedRows, indices: Sequence[int], pad_id: int,
            pad_to: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Pads the chosen examples to the longest of them, or to `pad_to` tokens: input_ids, token_type_ids,
    attention_mask (batch, seq), plus float32 `labels` (batch,) when the rows carry them.

    Raises:
      UserError: an example is longer than `pad_to`.
    """
    indices = np.asarray(indices)
    starts, ends = rows.offsets[indices], rows.offsets[indices + 1]
    lengths = ends - starts
    width = int(lengths.max())
    if pad_to is not None:
        if width > pad_to:
            raise UserError(f"an example has {width} tokens, more than the {pad_to} it is padded to; raise "
                            "--max_seq_len (task data) or drop --pad_to_max_length")
        width = pad_to
    input_ids = np.full((len(indices), width), pad_id, dtype=np.int64)
    for row, (start, end) in enumerate(zip(starts, ends)):
        input_ids[row, :end - start] = rows.values[start:end]
    positions = np.arange(width)[None, :]
    attention_mask = positions < lengths[:, None]
    token_type_ids = (positions >= rows.segment_a_len[indices][:, None]) & attention_mask
    batch = {"input_ids": torch.from_numpy(input_ids),
             "token_type_ids": torch.from_numpy(token_type_ids.astype(np.int64)),
             "attention_mask": torch.from_numpy(attention_mask.astype(np.int64))}
    if rows.labels is not None:
        batch["labels"] = torch.from_numpy(np.ascontiguousarray(rows.labels[indices], dtype=np.float32))
    return batch


def encode_corpus_rows(table: pa.Table) -> EncodedRows:
    """Corpus rows already hold token ids: no tokenization, only Arrow buffers viewed as numpy."""
    ids = table.column("input_ids").combine_chunks()
    if isinstance(ids, pa.ChunkedArray):  # an empty table
        ids = pa.array([], type=table.schema.field("input_ids").type)
    offsets = ids.offsets.to_numpy().astype(np.int64)
    values = ids.values.to_numpy(zero_copy_only=False)
    if ids.offset or offsets[0]:  # a sliced array: make offsets start at 0
        values = values[offsets[0]:offsets[-1]]
        offsets = offsets - offsets[0]
    segment_a = table.column("segment_a_len").to_numpy().astype(np.int64)
    return EncodedRows(values, offsets, segment_a)


def truncated_pair_lengths(length_a: int, length_b: int, budget: int) -> Tuple[int, int]:
    """How many tokens of each text the reference's `_truncate_seq_pair` keeps: while the pair is longer than
    `budget`, it removes the last token of the longer text, or of the second when they are equal.

    Computed without the loop: the longer text first loses the difference, then (at equal lengths) the second and
    the first lose tokens in turn, the second first.
    """
    excess = length_a + length_b - budget
    if excess <= 0:
        return length_a, length_b
    difference = abs(length_a - length_b)
    if excess <= difference:
        return (length_a - excess, length_b) if length_a > length_b else (length_a, length_b - excess)
    level = min(length_a, length_b)
    rest = excess - difference
    return level - rest // 2, level - (rest + 1) // 2


def encode_texts(tokenizer, texts: Sequence[Tuple[str, ...]], max_seq_len: int) -> EncodedRows:
    """Tokenizes single sentences or pairs with the fast tokenizer, in one batch call per text field, as
    `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`; a pair is truncated as the reference does (see
    `truncated_pair_lengths`; the fast tokenizer's longest_first keeps the extra token in the other text)."""
    if not texts:
        return EncodedRows(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64))
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    first = tokenizer([t[0] or "" for t in texts], add_special_tokens=False, return_token_type_ids=False,
                      return_attention_mask=False)["input_ids"]
    if len(texts[0]) > 1:
        second = tokenizer([t[1] or "" for t in texts], add_special_tokens=False, return_token_type_ids=False,
                           return_attention_mask=False)["input_ids"]
        ids, segment_a = [], []
        for tokens_a, tokens_b in zip(first, second):
            keep_a, keep_b = truncated_pair_lengths(len(tokens_a), len(tokens_b), max_seq_len - 3)
            ids.append([cls, *tokens_a[:keep_a], sep, *tokens_b[:keep_b], sep])
            segment_a.append(keep_a + 2)
    else:
        ids = [[cls, *tokens[:max_seq_len - 2], sep] for tokens in first]
        segment_a = [len(row) for row in ids]
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = np.fromiter((token for x in ids for token in x), dtype=np.int64, count=int(offsets[-1]))
    return EncodedRows(values, offsets, np.asarray(segment_a, dtype=np.int64))


def float_labels(column) -> np.ndarray:
    """A label column (strings as pipelines.augment writes them, or numbers) as float32; NaN where a row has no
    label or one that is not a finite number (the trainer refuses those rows where it needs the label)."""
    try:
        values = pc.cast(column, pa.float64())  # "3.800" -> 3.8, null stays null
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = pa.array([_parse_float(v) for v in column.to_pylist()], type=pa.float64())
    labels = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32)  # nulls come back as NaN
    labels[~np.isfinite(labels)] = np.nan
    return labels


def _parse_float(value) -> Optional[float]:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def class_indices(column, names: Sequence[str]) -> np.ndarray:
    """A label column as each label's index in `names` (float32, NaN where a row's label is not one of them)."""
    lookup = {str(name): float(index) for index, name in enumerate(names)}
    return np.asarray([lookup.get(str(value).strip() if value is not None else None, np.nan)
                       for value in column.to_pylist()], dtype=np.float32)


def augmented_encoder(tokenizer, text_fields: Sequence[str], max_seq_len: int, *,
                      label_field: Optional[str] = None,
                      class_labels: Optional[Sequence[str]] = None) -> Callable[[pa.Table], EncodedRows]:
    """An encoder for augmented-task rows: the text fields tokenized on the fly; with `label_field`, that column
    read as float regression labels (see `float_labels`), or with `class_labels` as class indices."""
    fields = list(text_fields)

    def encode(table: pa.Table) -> EncodedRows:
        columns = [table.column(name).to_pylist() for name in fields]
        rows = encode_texts(tokenizer, list(zip(*columns)), max_seq_len)
        if label_field is not None:
            column = table.column(label_field)
            rows.labels = class_indices(column, class_labels) if class_labels else float_labels(column)
        return rows

    return encode


def check_labels(labels: torch.Tensor, data_path: str, *, finetune: bool = False) -> None:
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
