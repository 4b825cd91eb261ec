"""Every output's explicit pyarrow schema, the token-id type rule and the reject record."""

import json
from typing import Any, Dict, Sequence

import pyarrow as pa

UINT16_VOCAB = 65536  # vocabs up to this size store token ids as uint16, larger ones as int32


def token_id_type(vocab_size: int) -> pa.DataType:
    """The narrowest integer type that holds every id of a vocab of `vocab_size` tokens."""
    return pa.uint16() if vocab_size <= UINT16_VOCAB else pa.int32()


def token_dtype_name(vocab_size: int) -> str:
    """`token_id_type` as the manifest names it ("uint16" or "int32")."""
    return str(token_id_type(vocab_size))


def instance_schema(vocab_size: int) -> pa.Schema:
    """The Parquet schema of general-distillation rows; token ids in the narrowest type the vocab allows."""
    id_type = token_id_type(vocab_size)
    return pa.schema([
        pa.field("instance_id", pa.string(), nullable=False),
        pa.field("input_ids", pa.list_(id_type), nullable=False),
        pa.field("segment_a_len", pa.int16(), nullable=False),
        pa.field("is_random_next", pa.bool_(), nullable=False),
        pa.field("masked_lm_positions", pa.list_(pa.int16()), nullable=False),
        pa.field("masked_lm_labels", pa.list_(id_type), nullable=False),
    ])


def augmented_schema(text_fields: Sequence[str]) -> pa.Schema:
    """The explicit schema of the augmented rows of a task with these text fields."""
    return pa.schema(
        [pa.field("example_id", pa.string(), nullable=False), pa.field("row_index", pa.int64(), nullable=False),
         pa.field("aug_index", pa.int32(), nullable=False), pa.field("augmented_field", pa.string())]
        + [pa.field(name, pa.string(), nullable=False) for name in text_fields]
        + [pa.field("label", pa.string()), pa.field("replaced_word_indices", pa.list_(pa.int32()))])


CANDIDATE_SCHEMA = pa.schema([
    pa.field("example_id", pa.string(), nullable=False), pa.field("field", pa.string(), nullable=False),
    pa.field("word_index", pa.int32(), nullable=False), pa.field("word", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False), pa.field("candidates", pa.list_(pa.string()))])

REJECT_SCHEMA = pa.schema([
    pa.field("source", pa.string(), nullable=False),
    pa.field("row_index", pa.int64(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("record", pa.string()),
])


def reject(source: str, row_index: int, reason: str, record: Any) -> Dict[str, Any]:
    """A rejects row; `record` is kept as readable text whatever its type."""
    if isinstance(record, bytes):
        record = record.decode("utf-8", errors="backslashreplace")
    elif not isinstance(record, str):
        record = json.dumps(record, ensure_ascii=False, default=str)
    return {"source": source, "row_index": int(row_index), "reason": reason, "record": record}


def token_typecode(vocab_size: int) -> str:
    """`token_id_type` as an `array`/numpy typecode, for packing ids before they become Arrow columns."""
    return {"uint16": "H", "int32": "i"}[token_dtype_name(vocab_size)]
