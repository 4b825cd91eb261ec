"""Our keyed sink: Parquet (or TSV) shards written atomically, named `part-NNNNN-of-MMMMM`.

`WriteShards` is our own sink (not `beam.io.WriteToParquet`): each row is assigned a shard by a stable hash of its
key, rows are grouped per shard, sorted by key inside it, written to a temporary name and renamed into place. Output
bytes therefore depend only on the rows, never on bundling, runner, worker count or retries. `WriteBatchedShards`
is the same sink for writers that batch their own rows (Arrow IPC payloads, `encode_batch`).
"""

import dataclasses
import uuid
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from contract.layout import shard_file_name
from contract.seeds import stable_hash
from contract.errors import disk_full


def shard_of(key: Any, num_shards: int) -> int:
    """The shard a row with this key goes to: the keyed sink's assignment, for writers that batch rows per shard."""
    return stable_hash(key) % num_shards


def join_path(base: str, *parts: str) -> str:
    """`base` and `parts` joined as the filesystem of `base` joins them."""
    return FileSystems.join(base, *parts) if parts else base


def write_table_atomically(table: pa.Table, directory: str, name: str) -> str:
    """Writes `table` as Parquet to directory/name through a temporary name, so readers never see half a file."""
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd", row_group_size=65536)
    return write_bytes_atomically(buffer.getvalue().to_pybytes(), directory, name)


def write_bytes_atomically(data: bytes, directory: str, name: str) -> str:
    """Writes `data` to directory/name through a temporary name and a rename."""
    final_path = join_path(directory, name)
    tmp_path = join_path(directory, f".tmp-{uuid.uuid4().hex}-{name}")
    if not FileSystems.exists(directory):
        try:
            FileSystems.mkdirs(directory)
        except IOError:  # another worker made it first
            pass
    try:
        with FileSystems.create(tmp_path) as handle:
            handle.write(data)
    except OSError as error:
        full = disk_full(error, final_path)
        if full is None:
            raise
        raise full from None
    if FileSystems.exists(final_path):  # a retried or duplicated bundle: same rows, same bytes
        FileSystems.delete([final_path])
    FileSystems.rename([tmp_path], [final_path])
    return final_path


@dataclasses.dataclass(frozen=True)
class ShardSet:
    """One set of Parquet shards in an output directory.

    Attributes:
      subdir: directory under the output root, e.g. "data", "epoch-0" or "rejects".
      num_shards: how many part files the set has (empty shards are written too).
      schema: the explicit pyarrow schema of every file.
      stats: optional function from the rows of one shard to extra integer counts for the manifest (e.g. tokens).
      file_format: "parquet" (rows are dicts) or "tsv" (rows are lines of text; `schema` is ignored).
    """
    subdir: str
    num_shards: int
    schema: Optional[pa.Schema]
    stats: Optional[Callable[[List[Any]], Dict[str, int]]] = None
    file_format: str = "parquet"

    def file_name(self, shard: int) -> str:
        name = shard_file_name(shard, self.num_shards)
        return name if self.file_format == "parquet" else name[:-len(".parquet")] + "." + self.file_format


class WriteShardFn(beam.DoFn):
    """Writes one shard: rows sorted by key, to a temporary name, then renamed into place. Yields its stats."""

    def __init__(self, output_dir: str, shard_set: ShardSet):
        self._output_dir = output_dir
        self._shard_set = shard_set
        self._rows_written = Metrics.counter("WriteShards", f"rows_{shard_set.subdir}")

    def process(self, element: Tuple[int, Iterable[Tuple[Any, Dict[str, Any]]]]):
        shard, keyed_rows = element
        rows = [row for _, row in _sorted_by_key(keyed_rows)]
        yield write_shard(self._output_dir, self._shard_set, shard=shard, rows=rows)
        self._rows_written.inc(len(rows))


def _sorted_by_key(keyed_rows: Iterable[Tuple[Any, Any]]) -> List[Tuple[Any, Any]]:
    """Rows sorted by key, so that a shard's bytes never depend on the order in which bundles reached it.

    Rows that share a key (callers should not repeat keys, but a retry must not change bytes if one does) are
    ordered by their content.
    """
    ordered = sorted(keyed_rows, key=lambda kv: kv[0])
    result: List[Tuple[Any, Any]] = []
    start = 0
    for end in range(1, len(ordered) + 1):
        if end == len(ordered) or ordered[end][0] != ordered[start][0]:
            run = ordered[start:end]
            result.extend(run if len(run) == 1 else sorted(run, key=lambda kv: repr(kv[1])))
            start = end
    return result


def write_shard(output_dir: str, shard_set: ShardSet, *, shard: int, rows: Union[List[Any], pa.Table]
                ) -> Dict[str, Any]:
    """Writes one shard from a list of rows (dicts, or lines for TSV) or an already sorted pa.Table; returns its
    stats ({"path", "shard", "rows", ...})."""
    name = shard_set.file_name(shard)
    directory = join_path(output_dir, shard_set.subdir)
    if isinstance(rows, pa.Table):
        write_table_atomically(rows, directory, name)
    elif shard_set.file_format == "parquet":
        write_table_atomically(pa.Table.from_pylist(rows, schema=shard_set.schema), directory, name)
    else:
        write_bytes_atomically("".join(line + "\n" for line in rows).encode("utf-8"), directory, name)
    stats = {"path": f"{shard_set.subdir}/{name}", "shard": shard, "rows": len(rows)}
    if shard_set.stats is not None:
        stats.update(shard_set.stats(rows))
    return stats


class WriteShards(beam.PTransform):
    """Writes a PCollection of (key, row dict) as `num_shards` Parquet files under output_dir/subdir.

    Args:
      output_dir: the output root (any Beam filesystem path).
      shard_set: subdir, shard count, schema and optional stats function.
      key_fn: for a PCollection of bare rows: the row's key, computed in the step that assigns the shard (one
        step fewer than keying the rows first).

    Returns:
      A PCollection of one stats dict per non-empty shard ({"path", "shard", "rows", ...}); `FinalizeOutput`
      writes the empty shards and the manifest from them.
    """

    def __init__(self, output_dir: str, shard_set: ShardSet, *, key_fn: Optional[Callable[[Any], Any]] = None):
        super().__init__()
        self._output_dir = output_dir
        self._shard_set = shard_set
        self._key_fn = key_fn

    def expand(self, rows):
        return (rows
                | "AssignShard" >> beam.Map(_assign_shard, self._shard_set.num_shards, self._key_fn)
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShard" >> beam.ParDo(WriteShardFn(self._output_dir, self._shard_set)))


def _assign_shard(element: Any, num_shards: int, key_fn: Optional[Callable[[Any], Any]]) -> Tuple[int, Any]:
    """(shard, (key, row)) from (key, row), or from a bare row and its key_fn."""
    keyed = element if key_fn is None else (key_fn(element), element)
    return shard_of(keyed[0], num_shards), keyed


def encode_batch(batch: Union[pa.RecordBatch, pa.Table]) -> bytes:
    """Rows for `WriteBatchedShards`, serialized (Arrow IPC stream): a few bytes per value between stages instead
    of a pickled dict per row."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write(batch)
    return sink.getvalue().to_pybytes()


class WriteBatchedShardFn(beam.DoFn):
    """((set index, shard), [encoded batches]) to one Parquet shard: the batches joined, sorted by `sort_by`."""

    def __init__(self, output_dir: str, shard_sets: Sequence[ShardSet], sort_by: str):
        self._output_dir = output_dir
        self._shard_sets = list(shard_sets)
        self._sort_by = sort_by
        self._rows_written = Metrics.counter("WriteShards", "rows_batched")

    def process(self, element: Tuple[Tuple[int, int], Iterable[bytes]]):
        (set_index, shard), payloads = element
        shard_set = self._shard_sets[set_index]
        # A GroupByKey group is never empty.
        table = pa.concat_tables([pa.ipc.open_stream(payload).read_all() for payload in payloads]).cast(
            shard_set.schema)
        # Sorted by key (a stable sort; keys are unique, and a retried bundle repeats identical rows), so a shard's
        # bytes never depend on the order in which batches reached it.
        table = table.take(pc.sort_indices(table, sort_keys=[(self._sort_by, "ascending")]))
        yield write_shard(self._output_dir, shard_set, shard=shard, rows=table)
        self._rows_written.inc(table.num_rows)


class WriteBatchedShards(beam.PTransform):
    """The keyed sink for writers that batch their own rows: shards of several sets from one collection.

    Takes ((set index, shard), payload) where payload is `encode_batch` of rows of `shard_sets[set index]`'s schema,
    all bound for `shard` (the caller assigns it per row with `shard_of(key, num_shards)`, as `WriteShards` would).
    Same files as `WriteShards` given the same rows: grouped per shard, sorted by key, written atomically.

    Args:
      output_dir: the output root.
      shard_sets: the sets the set index refers to.
      sort_by: the key column (unique per row).

    Returns:
      A PCollection of one stats dict per non-empty shard of any set ("path" starts with the set's subdir).
    """

    def __init__(self, output_dir: str, shard_sets: Sequence[ShardSet], *, sort_by: str):
        super().__init__()
        self._output_dir = output_dir
        self._shard_sets = list(shard_sets)
        self._sort_by = sort_by

    def expand(self, batches):
        return (batches
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShard" >> beam.ParDo(WriteBatchedShardFn(self._output_dir, self._shard_sets, self._sort_by)))


class CountByKey(beam.PTransform):
    """(key, n) pairs summed per key; used for manifest counts such as rejects by reason."""

    def expand(self, pcoll):
        return pcoll | "SumPerKey" >> beam.CombinePerKey(sum)
