"""Output directories that describe themselves, shared by both pipelines.

An output directory holds:
  <subdir>/part-NNNNN-of-MMMMM.parquet   rows, explicit pyarrow schema, written by `WriteShards`
  rejects/part-...parquet                 every rejected input record with its reason
  manifest.json                           what was made, from what, with which tokenizer, and the counts
  _SUCCESS                                written last; readers refuse a directory without it

`WriteShards` is our own keyed sink (not `beam.io.WriteToParquet`): each row is assigned a shard by a stable
hash of its key, rows are grouped per shard, sorted by key inside it, written to a temporary name and renamed into
place. Output bytes therefore depend only on the rows, never on bundling, runner, worker count or retries.
"""

import dataclasses
import datetime
import json
import os
import re
import socket
import sys
import time
import uuid
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from contract.errors import InputError, UserError
from contract.layout import (CODE_VERSION, DATASET_CARD, FORMAT_VERSION, IN_PROGRESS_MARKER, MANIFEST_NAME,
                             OUTPUT_KINDS, REJECTS_SUBDIR, SUCCESS_MARKER, shard_file_name)
from contract.manifest import decode_manifest, encode_manifest
from contract.seeds import stable_hash


class OutputExistsError(RuntimeError):
    """The output directory already holds files and the user did not ask to overwrite it."""


def shard_of(key: Any, num_shards: int) -> int:
    """The shard a row with this key goes to: the keyed sink's assignment, for writers that batch rows per shard."""
    return stable_hash(key) % num_shards


def join_path(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts) if parts else base


# What our outputs write at the top of an output directory (besides the manifest's own subdirs): --overwrite deletes
# these and nothing else.
_OWN_TOP_LEVEL = frozenset({MANIFEST_NAME, SUCCESS_MARKER, IN_PROGRESS_MARKER, REJECTS_SUBDIR, "data", "candidates",
                            "train_aug.tsv", "tsv-parts", "report", "README.md"})
_OWN_SUBDIR_PATTERN = re.compile(r"epoch-\d+$")


class OutputInUseError(OutputExistsError):
    """Another run, still alive (or on another host), has claimed the output directory."""


class OutputClaimLostError(InputError):
    """Another run took this run's output directory (--overwrite) while it ran; this run must not finish it.

    An `InputError`: raised on a worker, its one line still reaches the launcher's user.
    """


def claim_output_dir(output_dir: str, *, overwrite: bool, argv: Optional[Sequence[str]] = None) -> str:
    """Claims `output_dir` for one run before any work, with an in-progress marker; returns the run's id.

    The marker (`_IN_PROGRESS`: run id, host, pid, start time, argv) stays until `FinalizeOutputFn` has written
    `_SUCCESS`, so a run that dies leaves it behind. A directory is usable when it is missing or empty; with
    `overwrite`, also when it holds only what our runs write (a manifest.json of ours, or our marker) and no run
    holds it: then the new marker is taken first and the old output deleted after, file by file, `_SUCCESS` first.

    On a local path the marker is created with O_CREAT|O_EXCL, so of two runs starting together exactly one wins.
    On other Beam filesystems (gs://, s3://) it is written, read back and compared: best effort only, two runs
    starting within the same second may both pass. A marker is live unless it was written on this host by a process
    that is gone (or by this very process, whose earlier run has returned); a marker from another host is always
    live, as its process cannot be checked from here.

    Args:
      output_dir: the output root (any Beam filesystem path).
      overwrite: replace a finished or unfinished output of ours (never a live run's, never foreign files).
      argv: the command recorded in the marker (default sys.argv).

    Returns:
      The run id, for `FinalizeOutput(run_id=...)`.

    Raises:
      OutputInUseError: a live run holds the directory (also with `overwrite`).
      OutputExistsError: `output_dir` is a file; it holds our output and `overwrite` is False; it holds files our
        runs never write (nothing is deleted).
    """
    listing = _list_output(output_dir)
    if listing is None:
        raise OutputExistsError(f"--output {output_dir} is a file, not a directory; choose a directory")
    if not listing:
        _make_dirs(output_dir)
        return _write_marker(output_dir, argv)
    marker = _check_replaceable(output_dir, listing, overwrite=overwrite)
    old = [path for path in listing if path != IN_PROGRESS_MARKER]
    if IN_PROGRESS_MARKER in listing:  # stale or damaged: moved aside first, so that exactly one new run takes it
        old.append(_move_marker_aside(output_dir, marker))
    run_id = _write_marker(output_dir, argv)
    _delete_own_output(output_dir, old)
    return run_id


def prepare_output_dir(output_dir: str, *, overwrite: bool) -> str:
    """The former name of `claim_output_dir`."""
    return claim_output_dir(output_dir, overwrite=overwrite)


def _is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) is None


def _list_output(output_dir: str) -> Optional[List[str]]:
    """Paths under `output_dir`, relative and with "/" separators, hidden ones included; empty directories end with
    "/". [] for a missing directory, None for a file."""
    if _is_local(output_dir):
        if not os.path.exists(output_dir):
            return []
        if not os.path.isdir(output_dir):
            return None
        found = []
        for root, dirs, files in os.walk(output_dir):
            relative = os.path.relpath(root, output_dir).replace(os.sep, "/")
            prefix = "" if relative == "." else relative + "/"
            found.extend(prefix + name for name in files)
            if not dirs and not files and prefix:
                found.append(prefix)
        return sorted(found)
    base = output_dir.rstrip("/")
    if FileSystems.exists(base) and any(m.path.rstrip("/") == base for m in FileSystems.match([base])[0].metadata_list):
        return None
    metadata = FileSystems.match([join_path(output_dir, "**")])[0].metadata_list
    return sorted(m.path[len(base) + 1:] for m in metadata if m.path.startswith(base + "/"))


def _make_dirs(output_dir: str) -> None:
    if _is_local(output_dir):
        os.makedirs(output_dir, exist_ok=True)
    elif not FileSystems.exists(output_dir):
        try:
            FileSystems.mkdirs(output_dir)
        except IOError:  # another run made it first; the marker decides
            pass


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    try:
        with FileSystems.open(path) as handle:
            value = json.loads(handle.read().decode("utf-8"))
    except (IOError, OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _read_marker(output_dir: str) -> Optional[Dict[str, Any]]:
    """The marker's fields, or None for a damaged one; waits briefly for a marker that is being written."""
    for _ in range(10):
        marker = _read_json(join_path(output_dir, IN_PROGRESS_MARKER))
        if marker is not None and "run_id" in marker:
            return marker
        time.sleep(0.05)
    return None


def _our_manifest(output_dir: str) -> Optional[Dict[str, Any]]:
    manifest = _read_json(join_path(output_dir, MANIFEST_NAME))
    version = manifest.get("format_version") if manifest else None
    if isinstance(version, int) and 1 <= version <= FORMAT_VERSION and manifest.get("kind") in OUTPUT_KINDS:
        return manifest
    return None


def _process_start(pid: Any) -> Optional[str]:
    """The start time of a process in clock ticks since boot (Linux), to tell a reused pid from the marker's."""
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def _marker_is_live(marker: Mapping[str, Any]) -> bool:
    if marker.get("host") != socket.gethostname():
        return True
    pid = marker.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False  # this process's earlier run has returned (or raised)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    recorded = marker.get("pid_start")
    return recorded is None or _process_start(pid) in (None, recorded)


def _describe(marker: Mapping[str, Any]) -> str:
    return f"host {marker.get('host')}, pid {marker.get('pid')}, started {marker.get('started')}"


def _in_use_error(output_dir: str, marker: Optional[Mapping[str, Any]]) -> OutputInUseError:
    if marker is None:
        return OutputInUseError(f"output directory {output_dir} was just claimed by another run; choose another "
                                "--output or wait for it to finish")
    hint = ("" if marker.get("host") == socket.gethostname() else
            f"; if that run is gone, delete {join_path(output_dir, IN_PROGRESS_MARKER)} by hand")
    return OutputInUseError(f"output directory {output_dir} is in use by another run ({_describe(marker)}); wait for "
                            f"it to finish or choose another --output{hint}")


def _check_replaceable(output_dir: str, listing: Sequence[str], *, overwrite: bool) -> Optional[Dict[str, Any]]:
    """Raises unless `overwrite` may replace the (non-empty) directory's contents; returns the stale marker, if any."""
    marker = _read_marker(output_dir) if IN_PROGRESS_MARKER in listing else None
    if marker is not None and _marker_is_live(marker):
        raise _in_use_error(output_dir, marker)
    manifest = _our_manifest(output_dir) if MANIFEST_NAME in listing else None
    if manifest is None and IN_PROGRESS_MARKER not in listing:
        raise OutputExistsError(
            f"output directory {output_dir} holds files our runs did not write (e.g. {listing[0]}), so even "
            "--overwrite will not delete it; nothing was deleted: choose another --output or empty it yourself")
    finished = manifest is not None and SUCCESS_MARKER in listing
    if not overwrite:
        if finished:
            raise OutputExistsError(f"output directory {output_dir} already holds a finished {manifest['kind']} "
                                    "output; pass --overwrite to replace it or choose another --output")
        if marker is not None:
            raise OutputExistsError(
                f"output directory {output_dir} holds the output of an earlier run that did not finish (marker "
                f"{join_path(output_dir, IN_PROGRESS_MARKER)}: {_describe(marker)}, no longer running); pass "
                "--overwrite to replace it or choose another --output")
        raise OutputExistsError(f"output directory {output_dir} holds an unfinished output (no {SUCCESS_MARKER}); "
                                "pass --overwrite to replace it or choose another --output")
    own_subdirs = {out.get("subdir") for out in (manifest or {}).get("outputs", {}).values() if isinstance(out, dict)}
    for path in listing:
        if not _is_own_path(path, own_subdirs):
            raise OutputExistsError(
                f"output directory {output_dir} holds {path}, which our runs never write; nothing was deleted: "
                "move it away or choose another --output")
    return marker


def _is_own_path(path: str, own_subdirs: set) -> bool:
    top, _, rest = path.partition("/")
    if top.startswith(".tmp-"):
        return True
    if not rest:  # a top-level file (or an empty directory, "name/")
        return top in _OWN_TOP_LEVEL or ((top in own_subdirs or _OWN_SUBDIR_PATTERN.match(top)) and path.endswith("/"))
    if not (top in _OWN_TOP_LEVEL or top in own_subdirs or _OWN_SUBDIR_PATTERN.match(top)):
        return False
    if top == "report":  # report files are named by whatever writes them
        return True
    return "/" not in rest and (rest.startswith("part-") or rest.startswith(".tmp-"))


def _move_marker_aside(output_dir: str, marker: Optional[Mapping[str, Any]]) -> str:
    """Renames the stale marker to a temporary name (returned, relative); a run that raced us to it finds it gone,
    or finds a fresh marker that it puts back, and stops."""
    source = join_path(output_dir, IN_PROGRESS_MARKER)
    name = f".tmp-{uuid.uuid4().hex}-{IN_PROGRESS_MARKER}"
    aside = join_path(output_dir, name)
    rename = os.rename if _is_local(output_dir) else lambda a, b: FileSystems.rename([a], [b])
    try:
        rename(source, aside)
    except Exception:  # noqa: BLE001 - gone: another run moved it first (Beam wraps the filesystem's error)
        raise _in_use_error(output_dir, _read_marker(output_dir)) from None
    moved = _read_json(aside)
    if marker is not None and (moved or {}).get("run_id") != marker.get("run_id"):
        rename(aside, source)  # another run's fresh marker: give it back
        raise _in_use_error(output_dir, moved)
    return name


def _write_marker(output_dir: str, argv: Optional[Sequence[str]]) -> str:
    run_id = uuid.uuid4().hex
    marker = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
              "pid_start": _process_start(os.getpid()),
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "argv": list(sys.argv if argv is None else argv)}
    data = json.dumps(marker, indent=2).encode("utf-8")
    path = join_path(output_dir, IN_PROGRESS_MARKER)
    if _is_local(output_dir):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raise _in_use_error(output_dir, _read_marker(output_dir)) from None
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        return run_id
    # Object stores have no exclusive create through Beam's FileSystems: check, write, read back (best effort).
    if FileSystems.exists(path):
        raise _in_use_error(output_dir, _read_marker(output_dir))
    with FileSystems.create(path) as handle:
        handle.write(data)
    if (_read_json(path) or {}).get("run_id") != run_id:
        raise _in_use_error(output_dir, _read_marker(output_dir))
    return run_id


def _delete_own_output(output_dir: str, paths: Sequence[str]) -> None:
    """Deletes the old output (checked by `_check_replaceable`), `_SUCCESS` first so readers stop trusting it."""
    order = sorted(paths, key=lambda path: (path != SUCCESS_MARKER, path != MANIFEST_NAME, path))
    if not _is_local(output_dir):
        for path in order:
            FileSystems.delete([join_path(output_dir, path)])
        return
    directories = set()
    for path in order:
        parts = path.rstrip("/").split("/")
        directories.update("/".join(parts[:depth]) for depth in range(1, len(parts) + path.endswith("/")))
        if not path.endswith("/"):
            os.remove(os.path.join(output_dir, *parts))
    for directory in sorted(directories, key=lambda d: d.count("/"), reverse=True):
        full = os.path.join(output_dir, *directory.split("/"))
        if os.path.isdir(full) and not os.listdir(full):
            os.rmdir(full)


def check_claim(output_dir: str, run_id: Optional[str]) -> None:
    """Raises unless the in-progress marker still carries `run_id` (None: no check).

    Raises:
      OutputClaimLostError: another run took the directory (--overwrite after this run's driver was gone).
    """
    if run_id is None:
        return
    marker = _read_json(join_path(output_dir, IN_PROGRESS_MARKER))
    if (marker or {}).get("run_id") != run_id:
        taken = f" by run {marker.get('run_id')} ({_describe(marker)})" if marker else ""
        raise OutputClaimLostError(f"output directory {output_dir} was taken{taken} while run {run_id} was writing "
                                   f"it; this run writes no manifest and no {SUCCESS_MARKER}")


def release_claim(output_dir: str, run_id: Optional[str]) -> None:
    """Removes this run's in-progress marker once `_SUCCESS` is written (None: leaves any marker alone)."""
    if run_id is not None:
        FileSystems.delete([join_path(output_dir, IN_PROGRESS_MARKER)])


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
    with FileSystems.create(tmp_path) as handle:
        handle.write(data)
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
        yield _write_shard(self._output_dir, self._shard_set, shard, rows)
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


def _write_shard(output_dir: str, shard_set: ShardSet, shard: int, rows: Union[List[Any], pa.Table]
                 ) -> Dict[str, Any]:
    """Writes one shard from a list of rows (dicts, or lines for TSV) or an already sorted pa.Table."""
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
        yield _write_shard(self._output_dir, shard_set, shard, table)
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


class FinalizeOutputFn(beam.DoFn):
    """Writes missing (empty) shards, then manifest.json, then the completion marker, once every input is done."""

    def __init__(self, output_dir: str, header: Mapping[str, Any], shard_sets: Mapping[str, ShardSet],
                 count_names: Sequence[str], named_count_names: Sequence[str] = (), *,
                 quality: Optional["QualityRule"] = None, dataset_card: Optional[Dict[str, Any]] = None,
                 run_id: Optional[str] = None):
        self._quality = quality
        self._dataset_card = dataset_card
        self._output_dir = output_dir
        self._run_id = run_id  # the claim's id (claim_output_dir); None: no check
        self._header = dict(header)
        self._shard_sets = dict(shard_sets)
        self._count_names = list(count_names)
        self._named_count_names = list(named_count_names)

    def process(self, unused_element, *side_inputs, manifest_fields=()):
        set_names = sorted(self._shard_sets)
        if self._named_count_names:
            *side_inputs, named_pairs = side_inputs
        num_stats = len(side_inputs) - len(self._count_names)
        stats = [item for stats_list in side_inputs[:num_stats] for item in stats_list]
        count_lists = list(side_inputs[num_stats:])
        count_names = list(self._count_names)
        for name in self._named_count_names:
            count_names.append(name)
            count_lists.append([(key, value) for (owner, key), value in named_pairs if owner == name])
        outputs = {}
        for name in set_names:
            shard_set = self._shard_sets[name]
            own = [item for item in stats if item["path"].startswith(shard_set.subdir + "/")]
            outputs[name] = _complete_shard_set(self._output_dir, shard_set, own)
            _remove_stray_temporaries(join_path(self._output_dir, shard_set.subdir))
        counts = {name: dict(sorted((str(k), int(v)) for k, v in pairs))
                  for name, pairs in zip(count_names, count_lists)}
        manifest = {"format_version": FORMAT_VERSION, "code_version": CODE_VERSION, **self._header,
                    "outputs": outputs, "counts": counts}
        for fields in manifest_fields:  # e.g. {"report": "report/report.md"}, written before this step ran
            manifest.update(fields)
        check_claim(self._output_dir, self._run_id)  # another run took the folder: write nothing further
        failure = self._quality.failure(counts) if self._quality is not None else None
        if failure is not None:  # the rows are kept for a look, but nothing marks them usable
            manifest["status"] = "failed"
            manifest["failure"] = failure
        if self._dataset_card is not None:
            rejected = outputs.get(REJECTS_SUBDIR, {}).get("totals", {}).get("rows", 0)
            _write_text(join_path(self._output_dir, DATASET_CARD),
                        dataset_card(**self._dataset_card, with_rejects=rejected > 0))
        _write_text(join_path(self._output_dir, MANIFEST_NAME), encode_manifest(manifest))
        if failure is None:
            _write_text(join_path(self._output_dir, SUCCESS_MARKER), "")
            release_claim(self._output_dir, self._run_id)
        yield manifest


def _complete_shard_set(output_dir: str, shard_set: ShardSet, stats: List[Dict[str, Any]]) -> Dict[str, Any]:
    by_shard = {s["shard"]: s for s in stats}  # a retried shard reports the same stats twice at most
    for shard in range(shard_set.num_shards):
        if shard not in by_shard:
            by_shard[shard] = _write_shard(output_dir, shard_set, shard, [])
    files = [by_shard[i] for i in range(shard_set.num_shards)]
    totals: Dict[str, int] = {}
    for item in files:
        for key, value in item.items():
            if key not in ("path", "shard") and isinstance(value, int):
                totals[key] = totals.get(key, 0) + value
    schema = shard_set.schema.to_string() if shard_set.schema is not None else shard_set.file_format
    return {"subdir": shard_set.subdir, "num_shards": shard_set.num_shards, "schema": schema,
            "files": [{k: v for k, v in f.items() if k != "shard"} for f in files], "totals": totals}


def _remove_stray_temporaries(directory: str) -> None:
    """Deletes temporary files of writers that died before their rename (a killed worker; the retry wrote anew)."""
    stray = [m.path for m in FileSystems.match([join_path(directory, ".tmp-*")])[0].metadata_list]
    if stray:
        FileSystems.delete(stray)


def _write_text(path: str, text: str) -> None:
    with FileSystems.create(path) as handle:
        handle.write(text.encode("utf-8"))


class FinalizeOutput(beam.PTransform):
    """Completes an output directory from the shard stats and counts of a pipeline; apply it to the pipeline root.

    Args:
      output_dir: the output root.
      header: manifest fields known before the run (inputs, tokenizer, seed, options...).
      shard_stats: {name: (ShardSet, PCollection of stats dicts from WriteShards)}; several names may share
        one collection (WriteBatchedShards): each set takes the stats under its subdir.
      counts: {name: PCollection of (key, count)}, e.g. rejects by reason.
      named_counts: (names, PCollection of ((name, key), count)): several manifest count tables from one
        collection, so that a pipeline sums all its counts in one CombinePerKey (each is a stage of its own);
        every name appears in the manifest, empty if it has no pairs.
      quality: when the counts break it, the manifest says `"status": "failed"` and no `_SUCCESS` is written.
      dataset_card: the keyword arguments of `dataset_card()` for the README.md written into the output (the
        `datasets` loader's configs and features).
      run_id: the id `claim_output_dir` returned: the manifest and `_SUCCESS` are written only while the in-progress
        marker still carries it, and the marker is removed after `_SUCCESS`. None: no check, the marker is left.
      manifest_fields: a PCollection of dicts merged into the manifest, from steps that must finish before it (the
        report/ writer): the manifest and `_SUCCESS` wait for them.

    Returns:
      A PCollection holding the manifest dict, once written.
    """

    def __init__(self, *, output_dir: str, header: Mapping[str, Any],
                 shard_stats: Mapping[str, Tuple[ShardSet, beam.PCollection]],
                 counts: Optional[Mapping[str, beam.PCollection]] = None,
                 named_counts: Optional[Tuple[Sequence[str], beam.PCollection]] = None,
                 quality: Optional["QualityRule"] = None, dataset_card: Optional[Dict[str, Any]] = None,
                 run_id: Optional[str] = None, manifest_fields: Optional[beam.PCollection] = None):
        super().__init__()
        self._manifest_fields = manifest_fields
        self._run_id = run_id
        self._quality = quality
        self._dataset_card = dataset_card
        self._output_dir = output_dir
        self._header = header
        self._shard_stats = dict(shard_stats)
        self._counts = dict(counts or {})
        self._named_counts = named_counts

    def expand(self, pipeline):
        set_names = sorted(self._shard_stats)
        count_names = sorted(self._counts)
        stats_collections = []  # one side input per collection: several sets may share one (WriteBatchedShards)
        for name in set_names:
            if not any(self._shard_stats[name][1] is seen for seen in stats_collections):
                stats_collections.append(self._shard_stats[name][1])
        side_inputs = ([beam.pvalue.AsList(pcoll) for pcoll in stats_collections]
                       + [beam.pvalue.AsList(self._counts[n]) for n in count_names])
        named_names: Sequence[str] = ()
        if self._named_counts is not None:
            named_names, named_pcoll = self._named_counts
            side_inputs.append(beam.pvalue.AsList(named_pcoll))
        shard_sets = {n: self._shard_stats[n][0] for n in set_names}
        extra = {} if self._manifest_fields is None else {
            "manifest_fields": beam.pvalue.AsList(self._manifest_fields)}
        return (pipeline
                | "Trigger" >> beam.Impulse()
                | "WriteManifest" >> beam.ParDo(
                    FinalizeOutputFn(self._output_dir, self._header, shard_sets, count_names, named_names,
                                     quality=self._quality, dataset_card=self._dataset_card, run_id=self._run_id),
                    *side_inputs, **extra))


def read_manifest(output_dir: str, *, require_success: bool = True) -> Dict[str, Any]:
    """Reads a finished output directory's manifest.

    Args:
      require_success: refuse a directory without the completion marker (a run that did not finish or failed).

    Raises:
      FileNotFoundError: no completion marker (the run did not finish) or no manifest.
    """
    if require_success and not FileSystems.exists(join_path(output_dir, SUCCESS_MARKER)):
        raise FileNotFoundError(
            f"{output_dir} has no {SUCCESS_MARKER} marker: the run that wrote it did not finish; rerun it")
    path = join_path(output_dir, MANIFEST_NAME)
    with FileSystems.open(path) as handle:
        return decode_manifest(handle.read(), path)


@dataclasses.dataclass(frozen=True)
class QualityRule:
    """When a run's counts mean failure: no accepted record, or more than `max_reject_fraction` rejected.

    Attributes:
      accepted: (count table, key) of the records that were used, e.g. ("stats", "examples").
      rejects: the count table of rejects by reason.
      ignore: reject reasons that are skips by design, not bad input (a dump's redirects), left out of the fraction.
      max_reject_fraction: the most of the records (accepted + counted rejects) that may be rejected.
    """
    accepted: Tuple[str, str]
    rejects: str
    max_reject_fraction: float
    ignore: Tuple[str, ...] = ()

    def failure(self, counts: Mapping[str, Mapping[str, int]]) -> Optional[Dict[str, Any]]:
        accepted = int(counts.get(self.accepted[0], {}).get(self.accepted[1], 0))
        reasons = {k: int(v) for k, v in counts.get(self.rejects, {}).items() if k not in self.ignore}
        rejected = sum(reasons.values())
        total = accepted + rejected
        fraction = rejected / total if total else 0.0
        if accepted > 0 and fraction <= self.max_reject_fraction:
            return None
        top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        return {"accepted": accepted, "rejected": rejected, "reject_fraction": round(fraction, 4),
                "max_reject_fraction": self.max_reject_fraction, "top_reasons": dict(top)}


def raise_if_failed(manifest: Mapping[str, Any], output_dir: str, *,
                    hint: Optional[Callable[[], str]] = None) -> None:
    """The one line a failed run ends with: what was rejected, why, the likely cause, where the rejects are.

    Args:
      hint: gives the likely cause as a clause, or ""; called only for a failed run (it may read the input).

    Raises:
      UserError: the manifest says the run failed its QualityRule.
    """
    if manifest.get("status") != "failed":
        return
    hint = hint() if hint is not None else ""
    failure = manifest["failure"]
    reasons = ", ".join(f"{k} {v}" for k, v in failure["top_reasons"].items())
    if failure["accepted"] == 0 and failure["rejected"] == 0:
        what = "the input holds no record"
    elif failure["accepted"] == 0:
        what = f"all {failure['rejected']} input records were rejected ({reasons})"
    else:
        what = (f"{failure['rejected']} of {failure['accepted'] + failure['rejected']} input records were rejected "
                f"({100 * failure['reject_fraction']:.0f}% > --max_reject_fraction "
                f"{failure['max_reject_fraction']}; {reasons})")
    where = f"; see {join_path(output_dir, REJECTS_SUBDIR)}/" if failure["rejected"] else ""
    raise UserError(f"{what}{'; ' + hint if hint else ''}{where}; no {SUCCESS_MARKER} written")


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def summary(pipeline: str, manifest: Mapping[str, Any], output_dir: str, seconds: float, *,
            rows_output: str, extra: Sequence[str] = ()) -> str:
    """The end-of-run summary a person reads: inputs, rows out, rejects by reason, output path, wall time."""
    inputs = manifest.get("inputs", [])
    rejects = manifest.get("counts", {}).get("rejects", {})
    lines = [f"{pipeline} finished in {seconds:.1f} s -> {output_dir}",
             f"  inputs   {len(inputs)} file{'s' * (len(inputs) != 1)}, "
             f"{human_bytes(sum(i.get('bytes', 0) for i in inputs))}"]
    for name, out in sorted(manifest["outputs"].items()):
        if name == "rejects":
            continue
        rows = out["totals"].get("rows", 0)
        label = "rows" if name == rows_output else f"{name}"
        lines.append(f"  {label:<8} {rows:,} rows in {out['subdir']}/ ({out['num_shards']} files)")
    lines.extend(f"  {line}" for line in extra)
    total = sum(rejects.values())
    lines.append(f"  rejects  {total:,}" + (" (" + ", ".join(f"{k} {v:,}" for k, v in sorted(
        rejects.items(), key=lambda kv: -kv[1])) + f") in {REJECTS_SUBDIR}/" if total else ""))
    return "\n".join(lines)


def dataset_card(*, data_glob: str, label_names: Optional[Sequence[str]] = None,
                 text_fields: Sequence[str] = (), with_rejects: bool = True) -> str:
    """A dataset card whose YAML tells `datasets.load_dataset(OUTPUT_DIR)` the `train` split and label names.

    Without it the loader names the split after the shard files' prefix (`part`) and would also try the rejects.
    Labels are stored as strings (the reference's own labels); with `label_names`, the card declares a
    `ClassLabel`, which the loader casts the strings to, so `features["label"].int2str` works. A `rejects` config
    is declared where there are rejects (the loader fails on a Parquet file of zero rows).
    """
    lines = ["---", "configs:", "- config_name: default", "  data_files:", "  - split: train",
             f"    path: {data_glob}"]
    if with_rejects:
        lines += ["- config_name: rejects", "  data_files:", "  - split: train", f"    path: {REJECTS_SUBDIR}/*.parquet"]
    if label_names:
        lines += ["dataset_info:", "  config_name: default", "  features:"]
        # The card's features must list every column, in order: the augmented schema's.
        columns = [("example_id", "string"), ("row_index", "int64"), ("aug_index", "int32"),
                   ("augmented_field", "string")] + [(f, "string") for f in text_fields]
        for name, dtype in columns:
            lines += [f"  - name: {json.dumps(name)}", f"    dtype: {dtype}"]
        lines += ["  - name: label", "    dtype:", "      class_label:", "        names:"]
        lines += [f"          '{i}': {json.dumps(n)}" for i, n in enumerate(label_names)]
        lines += ["  - name: replaced_word_indices", "    sequence: int32"]
    lines += ["---", "", "Written by tinybert-data. `datasets.load_dataset(THIS_FOLDER)` gives the rows as the `train` "
              "split; `manifest.json` describes them (inputs, tokenizer, options, counts).", ""]
    return "\n".join(lines)
