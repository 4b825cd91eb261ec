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
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from contract.errors import UserError, describe
from contract.filesystem import FsspecFilesystem
from contract.fingerprint import tokenizer_fingerprint
from contract.finished import read_finished
from contract.layout import AUGMENTED_KIND, CORPUS_KIND
from distill.encoding import EncodedRows, augmented_encoder, collate, encode_corpus_rows

logger = logging.getLogger(__name__)

_READ_BATCH_ROWS = 2048
_CHECK_THREADS = 8  # shard footers are read in parallel: on object stores each one is a request
_WORKER_ERROR = "user_error"  # a DataLoader worker's UserError message, yielded in place of a batch


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
      UserError: the directory is missing, or see `contract.finished.read_finished` (no completion marker, no
        manifest, a malformed one, one of a newer format, of another kind, or naming a file outside itself).
    """
    import fsspec
    fs, root = fsspec.core.url_to_fs(path)
    if not fs.isdir(root):
        raise UserError(f"--data {path} does not exist or is not a directory")
    manifest = read_finished(root, fs=FsspecFilesystem(fs), kind=kind, shown=path)
    return OutputDir(fs, root, manifest)


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
        try:
            yield from self._batches(info)
        except UserError as error:
            if info is None:
                raise
            # A DataLoader worker's exception reaches the main process only as its traceback's text: the error
            # travels as a value instead, in place of a batch, and `read_batches` raises it there.
            yield {_WORKER_ERROR: error.message}

    def _batches(self, info) -> Iterator[Dict[str, Any]]:
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


def read_batches(stream: ShardStream) -> Iterator[Dict[str, Any]]:
    """The batches of a stream, through a DataLoader (batches are already made, so batch_size=None; its workers
    live as long as this iterator).

    Raises:
      UserError: one raised while reading, in this process or in a DataLoader worker.
    """
    # Its own generator: creating an iterator must not draw from the global RNG that drives dropout, or a resumed
    # run (which creates its iterator at another moment) would diverge.
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=stream.num_workers,
                                         prefetch_factor=4 if stream.num_workers else None,
                                         generator=torch.Generator().manual_seed(stream.seed))
    for batch in loader:
        if _WORKER_ERROR in batch:
            raise UserError(batch[_WORKER_ERROR])
        yield batch


def load_tokenizer(name_or_path: str):
    """The fast tokenizer of a hub name or directory (the pipelines' loader: `corpus.tokenizer`).

    Raises:
      UserError: none can be loaded.
    """
    from corpus.tokenizer import TokenizerError, load_transformers_tokenizer
    try:
        return load_transformers_tokenizer(name_or_path)
    except TokenizerError as error:
        raise UserError(f"{error}; save one beside the model or pass --tokenizer") from None
