"""The candidate store's keys, layout and part format: masked-LM answers kept across runs, keyed by what decides
them.

An answer (the candidate pieces of one `MaskedQuery`) depends on the model (its weights, config and vocabulary), the
precision and how the scorer runs it (`MaskedLMScorer.variant`: bf16 through the fused CPU encoder answers slightly
otherwise than plain bf16), `top_k`, how a query becomes the model's input (`build_input`: the 512-token window, the
segment ids, the `##` filter: `ANSWER_VERSION` names that code, bump it when it changes) and the query itself (the
window's piece ids and the masked position). Those, and nothing else, make its key; the word rule and the stop words
only choose which queries a run asks (a query holds the pieces it asks about), and the seed, `--num_aug` and
`--replace_prob` only how answers are drawn from, so runs that differ in those share every answer.

Layout under the store's root:

  <model id>/model.json                              the model's fingerprint: config, vocabulary and weights hashes
  <model id>/<settings id>/<bucket>/part-<uuid>.parquet  answers: (key, candidates), one part per scored batch

`<model id>` is a hash of the fingerprint (`rm -r <root>/<model id>` clears one model's answers), `<settings id>`
reads like `fp32-top15-w511-v1` or `bf16-fused-top15-w511-v1`, and `<bucket>` (`053-a`) is the query's input length
and a hash of its sentence: the pipeline scores sentences grouped by input length, so a group reads only the buckets
of its own sentences, never the whole store. Writers never change a part: each writes new parts under new names
(temporary name, then rename), so any number of writers can share a store, and a part that cannot be read is skipped
(its queries are answered again). This module holds no file I/O: the pipelines read and write the bytes.
"""

import dataclasses
import hashlib
import json
import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from augment.mlm import MAX_POSITIONS, WINDOW_PIECES, MaskedQuery
from contract import seeds

# Bump when the answer to a query changes for the same model, precision and top_k (build_input, the window, the
# candidate filter of MaskedLMScorer): older answers then live under another settings id and are never read.
ANSWER_VERSION = 1
NUM_BUCKETS = 16  # hash buckets per input length: a bucket is a folder of parts
RECORD_NAME = "model.json"
PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
PART_SCHEMA = pa.schema([pa.field("key", pa.binary(16), nullable=False),
                         pa.field("candidates", pa.list_(pa.string()), nullable=False)])


class DamagedPartError(ValueError):
    """A store part that cannot be read as answers (truncated, not Parquet, another schema)."""


@dataclasses.dataclass(frozen=True)
class ModelFingerprint:
    """SHA-256 hashes of a masked LM's files: config.json, its vocabulary files, its weight files."""
    config_sha256: str
    vocab_sha256: str
    weights_sha256: str

    @property
    def model_id(self) -> str:
        """The folder name of this model's answers: a hash of the three hashes."""
        text = f"config {self.config_sha256}\nvocab {self.vocab_sha256}\nweights {self.weights_sha256}\n"
        return hashlib.sha256(text.encode("ascii")).hexdigest()[:20]

    def record(self, name_or_path: str) -> bytes:
        """The bytes of `<model id>/model.json`: the hashes, and the name the model was first used by."""
        return (json.dumps({**dataclasses.asdict(self), "model_id": self.model_id, "first_used_as": name_or_path},
                           indent=1, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_record(cls, data: bytes) -> "ModelFingerprint":
        """The fingerprint of a `model.json`. Raises ValueError for one that is not a record of this store."""
        try:
            fields = json.loads(data.decode("utf-8"))
            return cls(str(fields["config_sha256"]), str(fields["vocab_sha256"]), str(fields["weights_sha256"]))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a candidate-store model record ({error})") from None


def combine_hashes(named_hashes: Mapping[str, str]) -> str:
    """One hash over several files, from each file's name and SHA-256, in name order (the order the files were read
    in does not count)."""
    digest = hashlib.sha256()
    for name in sorted(named_hashes):
        digest.update(f"{name} {named_hashes[name]}\n".encode("utf-8"))
    return digest.hexdigest()


def settings_id(*, variant: str, top_k: int) -> str:
    """The folder of one model's answers for a scorer variant (`MaskedLMScorer.variant`: the precision and how it
    runs, e.g. `fp32`, `bf16-fused`, `int8`) and top_k: `fp32-top15-w511-v1`."""
    return f"{variant}-top{top_k}-w{WINDOW_PIECES}-v{ANSWER_VERSION}"


def settings_pattern(*, precision: str, top_k: int) -> str:
    """A glob of the settings folders of every variant of `precision` (`bf16*-top15-w511-v1`)."""
    return f"{precision}*-top{top_k}-w{WINDOW_PIECES}-v{ANSWER_VERSION}"


def _sentence_bytes(piece_ids: Sequence[int]) -> bytes:
    return np.asarray(piece_ids, dtype="<i4").tobytes()


def query_key(query: MaskedQuery) -> bytes:
    """16 bytes that name a query: a BLAKE2b hash of its window's piece ids and its masked position."""
    digest = hashlib.blake2b(_sentence_bytes(query.piece_ids), digest_size=16)
    digest.update(int(query.position).to_bytes(4, "little"))
    return digest.digest()


def bucket_of(piece_ids: Sequence[int]) -> str:
    """The bucket of a sentence's queries: its input length and its stable hash modulo `NUM_BUCKETS`.

    The pipeline scores sentences grouped by the same input length and the same hash modulo its partition count, so
    with a partition count that divides `NUM_BUCKETS` (the default 4 does) each bucket belongs to one group.
    """
    length = min(2 * len(piece_ids) + 3, MAX_POSITIONS)
    return f"{length:03d}-{seeds.stable_hash(_sentence_bytes(piece_ids)) % NUM_BUCKETS:x}"


def buckets_of(queries: Iterable[MaskedQuery]) -> Dict[str, List[MaskedQuery]]:
    """The queries grouped by bucket (a sentence's queries share one), each bucket's queries in their order."""
    result: Dict[str, List[MaskedQuery]] = {}
    by_sentence: Dict[Tuple[int, ...], str] = {}
    for query in queries:
        bucket = by_sentence.get(query.piece_ids)
        if bucket is None:
            bucket = by_sentence[query.piece_ids] = bucket_of(query.piece_ids)
        result.setdefault(bucket, []).append(query)
    return result


def is_part_name(name: str) -> bool:
    """Whether a file name is a finished part (a temporary file of a writer still at work, or killed, is not)."""
    return name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX)


def encode_part(answers: Mapping[MaskedQuery, Sequence[str]]) -> bytes:
    """The Parquet bytes of one part: (key, candidates) rows in key order (so equal answers give equal bytes)."""
    rows = sorted((query_key(query), list(found)) for query, found in answers.items())
    table = pa.table({"key": [key for key, _ in rows], "candidates": [found for _, found in rows]},
                     schema=PART_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def decode_part(data: bytes, wanted: Optional[Iterable[bytes]] = None) -> Dict[bytes, List[str]]:
    """{key: candidates} of a part's bytes, only the `wanted` keys when given.

    Raises:
      DamagedPartError: the bytes are not a whole part of this store (truncated, another format or schema).
    """
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DamagedPartError(str(error).splitlines()[0] if str(error) else type(error).__name__) from None
    if not table.schema.equals(PART_SCHEMA, check_metadata=False):
        raise DamagedPartError(f"unexpected columns {table.schema.names}")
    keys = table.column("key").to_pylist()
    candidates = table.column("candidates").to_pylist()
    if wanted is None:
        return dict(zip(keys, candidates))
    wanted = wanted if isinstance(wanted, (set, frozenset, dict)) else set(wanted)
    return {key: found for key, found in zip(keys, candidates) if key in wanted}


def default_root(environ: Mapping[str, str], home: str) -> str:
    """`$XDG_CACHE_HOME/tinybert/candidates`, or `~/.cache/tinybert/candidates` (the XDG base-directory rule)."""
    cache = environ.get("XDG_CACHE_HOME") or ""
    if not os.path.isabs(cache):  # unset, empty or relative: the specification says to ignore it
        cache = os.path.join(home, ".cache")
    return os.path.join(cache, "tinybert", "candidates")
