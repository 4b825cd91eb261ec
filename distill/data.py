"""Streaming reader of the pipelines' Parquet outputs for the distillation trainer.

    dataset = open_corpus("gs://bucket/shards", tokenizer=tok, batch_size=32, ...)   # general distillation
    dataset = open_augmented("out/sst2-aug", tokenizer=tok, max_seq_len=64, ...)     # task distillation

The dataset is an `IterableDataset` that yields ready, dynamically padded batches:
- files are split by rank, then by DataLoader worker (after an epoch-seeded shuffle shared by all ranks);
- rows are shuffled in a bounded buffer: consecutive chunks of `shuffle_buffer` rows, each permuted by a generator
  seeded from (base seed, epoch, rank, worker, chunk), so any position can be rebuilt without replaying the epoch;
- a position is (epoch, examples emitted per worker, last worker read): `set_position` resumes exactly there,
  skipping whole Parquet row groups, so time to first batch does not grow with the corpus.
It never loads a whole dataset: at most one chunk per worker is in memory.
"""

import concurrent.futures
import dataclasses
import logging
import posixpath
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from contract.errors import UserError, describe
from contract.fingerprint import tokenizer_fingerprint
from contract.layout import AUGMENTED_KIND, CORPUS_KIND, MANIFEST_NAME, SUCCESS_MARKER
from contract.manifest import decode_manifest

logger = logging.getLogger(__name__)

_READ_BATCH_ROWS = 2048
_CHECK_THREADS = 8  # shard footers are read in parallel: on object stores each one is a request


# ---------------------------------------------------------------------------------------------------------------
# Output directories and their manifests


@dataclasses.dataclass(frozen=True)
class OutputDir:
    """A finished pipeline output: its filesystem, root path and manifest."""
    fs: Any
    root: str
    manifest: Dict[str, Any]

    def path(self, relative: str) -> str:
        return posixpath.join(self.root, relative)

    def files(self, output_name: str) -> List[str]:
        return [self.path(f["path"]) for f in self.manifest["outputs"][output_name]["files"]]

    def rows(self, output_name: str) -> int:
        return sum(int(f.get("rows", 0)) for f in self.manifest["outputs"][output_name]["files"])


def open_output_dir(path: str, *, kind: str) -> OutputDir:
    """Opens a pipeline output directory on any fsspec filesystem and checks it is finished and of `kind`.

    Raises:
      UserError: the directory is missing, has no completion marker, no manifest, a malformed one, one of a newer
        format, is of another kind, or names a file outside itself.
    """
    import fsspec
    fs, root = fsspec.core.url_to_fs(path)
    if not fs.isdir(root):
        raise UserError(f"--data {path} does not exist or is not a directory")
    if not fs.exists(posixpath.join(root, SUCCESS_MARKER)):
        raise UserError(f"{path} has no {SUCCESS_MARKER} marker: the pipeline run that writes it did not finish; "
                        "rerun it to completion, or point --data at a finished output")
    manifest_path = posixpath.join(path, MANIFEST_NAME)
    try:
        with fs.open(posixpath.join(root, MANIFEST_NAME), "rb") as handle:
            data = handle.read()
    except OSError as error:  # missing or unreadable
        raise UserError(f"{manifest_path} is missing or not readable JSON ({describe(error)}); rerun the "
                        "pipeline that wrote it") from error
    manifest = decode_manifest(data, manifest_path)  # a JSON object of a format this reader understands
    if manifest.get("kind") != kind:
        raise UserError(f"{path} holds {manifest.get('kind')!r} data but {kind!r} is needed here "
                        f"({'python -m pipelines.corpus' if kind == CORPUS_KIND else 'python -m pipelines.augment'} "
                        "writes it)")
    _check_manifest_files(manifest, manifest_path)
    return OutputDir(fs, root, manifest)


def _check_manifest_files(manifest: Dict[str, Any], manifest_path: str) -> None:
    """Every output lists its files as relative paths that stay inside the data folder.

    Raises:
      UserError: a malformed `outputs` entry, or an absolute, URL or `..` path.
    """
    outputs = manifest.get("outputs")
    if not isinstance(outputs, dict):
        raise UserError(f"{manifest_path} has no \"outputs\" object; rerun the pipeline that wrote it")
    for name, output in outputs.items():
        files = output.get("files") if isinstance(output, dict) else None
        if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("path"), str)
                                                  for f in files):
            raise UserError(f"{manifest_path}: output {name!r} has no list of files with paths; rerun the "
                            "pipeline that wrote it")
        for entry in files:
            relative = entry["path"]
            normal = posixpath.normpath(relative.replace("\\", "/"))
            if (not relative or "://" in relative or normal.startswith("/") or normal == ".."
                    or normal.startswith("../") or (len(normal) > 1 and normal[1] == ":")):
                raise UserError(f"{manifest_path} names the file {relative!r}, which is not inside the data folder; "
                                "a manifest lists only paths relative to its own folder: rerun the pipeline")
            if "rows" in entry and (isinstance(entry["rows"], bool) or not isinstance(entry["rows"], int)):
                raise UserError(f"{manifest_path}: {relative!r} has a row count {entry['rows']!r} that is not an "
                                "integer; rerun the pipeline that wrote it")


def check_shards(output: OutputDir, output_names: Sequence[str]) -> None:
    """Checks, from each Parquet footer only (no rows are read), that every file the manifest lists for
    `output_names` exists, is Parquet and holds the row count the manifest records.

    Raises:
      UserError: naming the first missing, damaged (e.g. truncated) or short file.
    """
    entries = [entry for name in output_names for entry in output.manifest["outputs"][name]["files"]]
    with concurrent.futures.ThreadPoolExecutor(max_workers=_CHECK_THREADS) as pool:
        problems = list(pool.map(lambda entry: _shard_problem(output, entry), entries))
    for problem in problems:
        if problem:
            raise UserError(problem)


def _shard_problem(output: OutputDir, entry: Dict[str, Any]) -> Optional[str]:
    path = output.path(entry["path"])
    rerun = "rerun the pipeline that wrote it (into a new folder, or with --overwrite)"
    try:
        with output.fs.open(path, "rb") as handle:
            rows = pq.ParquetFile(handle).metadata.num_rows
    except FileNotFoundError:
        return f"{path} is listed in the manifest but missing; {rerun}"
    except (OSError, pa.ArrowException) as error:
        return f"{path} is not a readable Parquet file, e.g. truncated ({describe(error)}); {rerun}"
    if "rows" in entry and rows != int(entry["rows"]):
        return f"{path} holds {rows} rows but the manifest records {entry['rows']}; {rerun}"
    return None


def check_tokenizer(manifest: Dict[str, Any], tokenizer, tokenizer_name: str, data_path: str) -> None:
    """Refuses token ids made with another vocabulary than the model's.

    Raises:
      UserError: the vocab SHA-256 (or lower-casing) differs.
    """
    recorded = manifest.get("tokenizer") or {}
    ours = tokenizer_fingerprint(tokenizer, tokenizer_name)
    if recorded.get("vocab_sha256") != ours["vocab_sha256"]:
        raise UserError(
            f"{data_path} was tokenized with {recorded.get('name_or_path')!r} (vocab sha256 "
            f"{str(recorded.get('vocab_sha256'))[:12]}..., {recorded.get('vocab_size')} tokens) but the model's "
            f"tokenizer {tokenizer_name!r} has vocab sha256 {ours['vocab_sha256'][:12]}... ({ours['vocab_size']} "
            "tokens); regenerate the shards with the teacher's tokenizer or pass the matching --teacher/--tokenizer")
    if "do_lower_case" in recorded and bool(recorded["do_lower_case"]) != ours["do_lower_case"]:
        raise UserError(f"{data_path} was tokenized with do_lower_case={recorded['do_lower_case']} but the model's "
                        f"tokenizer lower-cases: {ours['do_lower_case']}; regenerate the shards with the teacher's "
                        "tokenizer")


# ---------------------------------------------------------------------------------------------------------------
# Encoded rows and batches


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


# ---------------------------------------------------------------------------------------------------------------
# The streaming dataset


@dataclasses.dataclass
class ReaderPosition:
    """Where a rank's reader is: the epoch, examples emitted per logical worker, and the worker read last."""
    epoch: int = 0
    emitted: Dict[int, int] = dataclasses.field(default_factory=dict)
    last_worker: int = -1

    def advance(self, batch: Dict[str, Any]) -> None:
        worker = int(batch["worker"])
        self.emitted[worker] = int(batch["emitted"])
        self.last_worker = worker

    def next_epoch(self) -> None:
        self.epoch, self.emitted, self.last_worker = self.epoch + 1, {}, -1

    def to_dict(self) -> Dict[str, Any]:
        return {"epoch": self.epoch, "emitted": {str(k): v for k, v in self.emitted.items()},
                "last_worker": self.last_worker}

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "ReaderPosition":
        return cls(int(values["epoch"]), {int(k): int(v) for k, v in values["emitted"].items()},
                   int(values["last_worker"]))


class ShardStream(IterableDataset):
    """Dynamically padded batches streamed from Parquet files; use with `DataLoader(batch_size=None)`.

    Each batch is a dict of (batch, seq) int64 tensors (and float32 "labels" (batch,) when the encoder reads them)
    plus "worker" (the logical worker that read it) and "emitted" (how many examples that worker has emitted this
    epoch, this batch included), which the trainer folds into a `ReaderPosition`.

    Args:
      fs: an fsspec filesystem.
      files_by_epoch: the Parquet paths of each data epoch; training epoch e reads entry e % len(files_by_epoch).
      columns: the columns to read.
      encoder: turns a pyarrow Table of rows into `EncodedRows`.
      batch_size: examples per batch (the last batch of a worker's epoch may be smaller; it is kept).
      shuffle_buffer: rows per shuffled chunk.
      seed: base seed.
      rank, world_size: this process's place in the DDP group.
      num_workers: DataLoader workers that will iterate this dataset (0 = the main process).
      pad_id: the tokenizer's padding id.
      pad_to: pad every batch to this many tokens (the reference's fixed width) instead of its longest row.
    """

    def __init__(self, *, fs, files_by_epoch: Sequence[Sequence[str]], columns: Sequence[str],
                 encoder: Callable[[pa.Table], EncodedRows], batch_size: int, shuffle_buffer: int, seed: int,
                 rank: int = 0, world_size: int = 1, num_workers: int = 0, pad_id: int = 0,
                 pad_to: Optional[int] = None):
        super().__init__()
        self.fs = fs
        self.files_by_epoch = [list(files) for files in files_by_epoch]
        self.columns = list(columns)
        self.encoder = encoder
        self.batch_size = batch_size
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.num_workers = num_workers
        self.pad_id = pad_id
        self.pad_to = pad_to
        self.position = ReaderPosition()
        smallest = min(len(files) for files in self.files_by_epoch)
        if smallest < world_size:
            raise UserError(f"the data has {smallest} files per epoch, fewer than the {world_size} training "
                            "processes; write more shards (--num_shards) or use fewer processes")
        if smallest < world_size * max(num_workers, 1):
            logger.warning("%d files per epoch for %d processes x %d workers: some workers will be idle",
                           smallest, world_size, max(num_workers, 1))

    def set_position(self, position: ReaderPosition) -> None:
        """Where the next iteration starts; set before creating the DataLoader iterator."""
        self.position = ReaderPosition.from_dict(position.to_dict())

    def worker_files(self, epoch: int, worker: int) -> List[str]:
        """The files logical `worker` of this rank reads in `epoch`: shuffled per epoch, then rank, then worker."""
        files = self.files_by_epoch[epoch % len(self.files_by_epoch)]
        order = np.random.default_rng([self.seed, epoch]).permutation(len(files))  # the same on every rank
        rank_files = [files[i] for i in order][self.rank::self.world_size]
        return rank_files[worker::max(self.num_workers, 1)]

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        info = get_worker_info()
        workers = max(self.num_workers, 1)
        physical = info.id if info is not None else 0
        if info is not None and info.num_workers != workers:
            raise RuntimeError(f"ShardStream built for {self.num_workers} workers but the DataLoader has "
                               f"{info.num_workers}")
        # The DataLoader asks its workers in turn starting from worker 0; rotating the logical ids makes physical
        # worker 0 play the worker whose batch comes next, so a resumed run sees batches in the original order.
        logical = (physical + self.position.last_worker + 1) % workers
        epoch = self.position.epoch
        start = self.position.emitted.get(logical, 0)
        emitted = start
        for indices, rows in self._shuffled_examples(epoch, logical, start):
            batch = collate(rows, indices, self.pad_id, self.pad_to)
            emitted += len(indices)
            batch["worker"], batch["emitted"] = logical, emitted
            yield batch

    def _shuffled_examples(self, epoch: int, worker: int, start: int) -> Iterator[Tuple[np.ndarray, EncodedRows]]:
        """(indices into rows, rows) per batch, from example `start` of this worker's epoch stream."""
        chunk_index, skip = divmod(start, self.shuffle_buffer)
        chunks = self._chunks(self.worker_files(epoch, worker), chunk_index * self.shuffle_buffer)
        pending: List[Tuple[np.ndarray, EncodedRows]] = []  # a batch can straddle two chunks
        pending_count = 0
        for table in chunks:
            rows = self.encoder(table)
            rng = np.random.default_rng([self.seed, epoch, self.rank, worker, chunk_index])
            order = rng.permutation(len(rows))[skip:]
            chunk_index, skip = chunk_index + 1, 0
            cursor = 0
            while cursor < len(order):
                take = min(self.batch_size - pending_count, len(order) - cursor)
                pending.append((order[cursor:cursor + take], rows))
                pending_count += take
                cursor += take
                if pending_count == self.batch_size:
                    yield _merge(pending)
                    pending, pending_count = [], 0
        if pending_count:
            yield _merge(pending)

    def _chunks(self, files: Sequence[str], start_row: int) -> Iterator[pa.Table]:
        """Tables of `shuffle_buffer` consecutive rows (the last may be shorter), from row `start_row` on."""
        buffered: List[pa.RecordBatch] = []
        buffered_rows = 0
        for record_batch in self._record_batches(files, start_row):
            buffered.append(record_batch)
            buffered_rows += record_batch.num_rows
            while buffered_rows >= self.shuffle_buffer:
                table = pa.Table.from_batches(buffered)
                yield table.slice(0, self.shuffle_buffer)
                rest = table.slice(self.shuffle_buffer)
                buffered, buffered_rows = rest.to_batches(), rest.num_rows
        if buffered_rows:
            yield pa.Table.from_batches(buffered)

    def _record_batches(self, files: Sequence[str], start_row: int) -> Iterator[pa.RecordBatch]:
        skip = start_row
        for path in files:
            try:
                with self.fs.open(path, "rb") as handle:
                    parquet = pq.ParquetFile(handle)
                    if skip >= parquet.metadata.num_rows:
                        skip -= parquet.metadata.num_rows
                        continue
                    groups = []
                    for group in range(parquet.metadata.num_row_groups):
                        group_rows = parquet.metadata.row_group(group).num_rows
                        if skip >= group_rows:  # whole row groups are skipped without being read
                            skip -= group_rows
                        else:
                            groups.append(group)
                    for record_batch in parquet.iter_batches(batch_size=_READ_BATCH_ROWS, row_groups=groups,
                                                             columns=self.columns):
                        if skip:
                            dropped = min(skip, record_batch.num_rows)
                            record_batch, skip = record_batch.slice(dropped), skip - dropped
                        if record_batch.num_rows:
                            yield record_batch
            except (OSError, pa.ArrowException) as error:  # damaged past the footer that open checked
                raise UserError(f"{path} cannot be read ({describe(error)}); rerun the pipeline that wrote "
                                "it") from error


def _merge(parts: List[Tuple[np.ndarray, EncodedRows]]) -> Tuple[np.ndarray, EncodedRows]:
    if len(parts) == 1:
        return parts[0]
    # Rebase the second chunk's examples after the first's so one collate call pads them all.
    values, offsets, segment_a, indices, labels = [], [np.zeros(1, np.int64)], [], [], []
    base_values, base_rows = 0, 0
    for part_indices, rows in parts:
        starts, ends = rows.offsets[part_indices], rows.offsets[part_indices + 1]
        pieces = [rows.values[s:e] for s, e in zip(starts, ends)]
        values.extend(pieces)
        lengths = ends - starts
        offsets.append(base_values + np.cumsum(lengths))
        segment_a.append(rows.segment_a_len[part_indices])
        if rows.labels is not None:
            labels.append(rows.labels[part_indices])  # in the same order as the rows above
        indices.append(np.arange(len(part_indices)) + base_rows)
        base_values += int(lengths.sum())
        base_rows += len(part_indices)
    merged = EncodedRows(np.concatenate(values), np.concatenate(offsets), np.concatenate(segment_a),
                         np.concatenate(labels) if labels else None)
    return np.concatenate(indices), merged


def _epoch_outputs(manifest: Dict[str, Any]) -> List[str]:
    names = sorted((name for name in manifest["outputs"] if name.startswith("epoch-")),
                   key=lambda name: int(name.split("-", 1)[1]))
    if not names:
        raise UserError("the corpus manifest lists no epoch-N outputs; rerun python -m pipelines.corpus")
    return names


def open_corpus(path: str, *, tokenizer, tokenizer_name: str, batch_size: int, shuffle_buffer: int, seed: int,
                rank: int = 0, world_size: int = 1, num_workers: int = 0,
                pad_to_max_length: bool = False) -> Tuple[ShardStream, OutputDir]:
    """A stream over general-distillation shards, refused unless finished and tokenized like the model.

    Args:
      pad_to_max_length: pad every batch to the corpus's `max_seq_len` (from its manifest), as the reference does.

    Raises:
      UserError: see `open_output_dir`, `check_tokenizer` and `check_shards`.
    """
    output = open_output_dir(path, kind=CORPUS_KIND)
    check_tokenizer(output.manifest, tokenizer, tokenizer_name, path)
    epochs = _epoch_outputs(output.manifest)
    check_shards(output, epochs)
    files_by_epoch = [output.files(name) for name in epochs]
    stream = ShardStream(fs=output.fs, files_by_epoch=files_by_epoch, columns=["input_ids", "segment_a_len"],
                         encoder=encode_corpus_rows, batch_size=batch_size, shuffle_buffer=shuffle_buffer, seed=seed,
                         rank=rank, world_size=world_size, num_workers=num_workers, pad_id=tokenizer.pad_token_id or 0,
                         pad_to=int(output.manifest["max_seq_len"]) if pad_to_max_length else None)
    return stream, output


def corpus_rows_per_epoch(output: OutputDir) -> int:
    names = _epoch_outputs(output.manifest)
    return max(1, min(output.rows(name) for name in names))


def open_augmented(path: str, *, tokenizer, max_seq_len: int, batch_size: int, shuffle_buffer: int, seed: int,
                   rank: int = 0, world_size: int = 1, num_workers: int = 0, regression_labels: bool = False,
                   class_labels: Optional[Sequence[str]] = None, pad_to_max_length: bool = False,
                   text_fields: Optional[Sequence[str]] = None) -> Tuple[ShardStream, OutputDir]:
    """A stream over an augmented task directory, tokenized on the fly with the (teacher's) fast tokenizer.

    Args:
      pad_to_max_length: pad every batch to `max_seq_len`, as the reference does.
      regression_labels: also read the label column as float and add `labels` (batch,) to each batch (STS-B's
        prediction stage against the gold labels); rows without a numeric label get NaN.
      class_labels: also read the label column as the index of each row's label in this list (fine-tuning);
        rows with another label get NaN.
      text_fields: the text columns to read (default: the manifest's).

    Raises:
      UserError: see `open_output_dir` and `check_shards`; also a manifest without text fields, or regression labels asked of a
        classification task's data.
    """
    output = open_output_dir(path, kind=AUGMENTED_KIND)
    text_fields = list(text_fields or output.manifest.get("text_fields") or [])
    if not text_fields or "data" not in output.manifest.get("outputs", {}):
        raise UserError(f"{path}: the manifest names no text_fields or data output; rerun python -m pipelines.augment")
    check_shards(output, ["data"])
    label_field = None
    if regression_labels:
        if output.manifest.get("label_list") is not None:
            raise UserError(f"{path} holds a classification task ({output.manifest.get('task')}, labels "
                            f"{output.manifest['label_list']}); regression labels need a regression task such as STS-B")
        label_field = output.manifest.get("label_field") or "label"
    if class_labels:
        label_field = output.manifest.get("label_field") or "label"
    columns = list(text_fields) + ([label_field] if label_field and label_field not in text_fields else [])
    stream = ShardStream(fs=output.fs, files_by_epoch=[output.files("data")], columns=columns,
                         encoder=augmented_encoder(tokenizer, text_fields, max_seq_len, label_field=label_field,
                                                   class_labels=class_labels),
                         batch_size=batch_size, shuffle_buffer=shuffle_buffer, seed=seed, rank=rank,
                         world_size=world_size, num_workers=num_workers, pad_id=tokenizer.pad_token_id or 0,
                         pad_to=max_seq_len if pad_to_max_length else None)
    return stream, output


def make_loader(stream: ShardStream) -> torch.utils.data.DataLoader:
    """The DataLoader for a stream: batches are already made, so batch_size=None; workers persist per iterator."""
    # Its own generator: creating an iterator must not draw from the global RNG that drives dropout, or a resumed
    # run (which creates its iterator at another moment) would diverge.
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=stream.num_workers,
                                       prefetch_factor=4 if stream.num_workers else None,
                                       generator=torch.Generator().manual_seed(stream.seed))
