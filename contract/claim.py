"""The output claim: a run takes its output directory before any work, and `--overwrite` deletes only what is ours.

A run writes an in-progress marker (`_IN_PROGRESS`: run id, host, pid, start time, argv) into its output directory
first, and removes it only after `_SUCCESS`, so a run that dies leaves it behind. A directory is usable when it is
missing or empty; with `overwrite`, also when it holds only what our runs write (a manifest.json of ours, or our
marker) and no live run holds it: then the new marker is taken first and the old output deleted after, file by
file, `_SUCCESS` first. Files our runs never write are never deleted: such a directory is refused whole.

Everything goes through a small `contract.filesystem.Filesystem`, so the same rule serves local paths and, through
the pipelines' adaptor, any Beam filesystem.
"""

import datetime
import json
import os
import re
import socket
import sys
import time
import uuid
from typing import Any, Dict, Mapping, Optional, Sequence

from contract.errors import ERRORS_SUBDIR, InputError
from contract.filesystem import Filesystem
from contract.layout import (FORMAT_VERSION, IN_PROGRESS_MARKER, MANIFEST_NAME, OUTPUT_KINDS, REJECTS_SUBDIR,
                             SUCCESS_MARKER, TRAINING_MARKER)


class OutputExistsError(RuntimeError):
    """The output directory already holds files and the user did not ask to overwrite it."""


class OutputInUseError(OutputExistsError):
    """Another run, still alive (or on another host), has claimed the output directory."""


class OutputClaimLostError(InputError):
    """Another run took this run's output directory (--overwrite) while it ran; this run must not finish it.

    An `InputError`: raised on a worker, its one line still reaches the launcher's user.
    """


# What our runs write at the top of an output directory (besides the manifest's own subdirs): --overwrite deletes
# these and nothing else. ERRORS_SUBDIR holds the error records of a run's failing workers.
_OWN_TOP_LEVEL = frozenset({MANIFEST_NAME, SUCCESS_MARKER, IN_PROGRESS_MARKER, REJECTS_SUBDIR, ERRORS_SUBDIR, "data",
                            "candidates", "train_aug.tsv", "tsv-parts", "report", "README.md"})
_FREELY_NAMED = frozenset({"report", ERRORS_SUBDIR})  # folders whose files are named by whatever writes them
_OWN_SUBDIR_PATTERN = re.compile(r"epoch-\d+$")


def claim_output_dir(output_dir: str, *, fs: Filesystem, overwrite: bool,
                     argv: Optional[Sequence[str]] = None) -> str:
    """Claims `output_dir` for one run before any work, with an in-progress marker; returns the run's id.

    Where `fs` can create a file exclusively (local paths: O_CREAT|O_EXCL), of two runs starting together exactly
    one wins; elsewhere (object stores) the marker is written, read back and compared: best effort, two runs
    starting within the same second may both pass. A marker is live unless it was written on this host by a process
    that is gone (or by this very process, whose earlier run has returned); a marker from another host is always
    live, as its process cannot be checked from here.

    Args:
      output_dir: the output root.
      fs: the filesystem `output_dir` is on.
      overwrite: replace a finished or unfinished output of ours (never a live run's, never foreign files).
      argv: the command recorded in the marker (default sys.argv).

    Returns:
      The run id, for `check_claim` and `release_claim`.

    Raises:
      OutputInUseError: a live run holds the directory (also with `overwrite`).
      OutputExistsError: `output_dir` is the filesystem's root or a file; it holds our output and `overwrite` is
        False; it holds files our runs never write (nothing is deleted).
    """
    if fs.is_root(output_dir):  # refused before listing: a walk of the whole filesystem would take forever
        raise OutputExistsError(f"--output {output_dir} is the root of the filesystem; choose a directory inside it")
    listing = fs.list(output_dir)
    if listing is None:
        raise OutputExistsError(f"--output {output_dir} is a file, not a directory; choose a directory")
    if not listing:
        fs.mkdirs(output_dir)
        return _write_marker(fs, output_dir, argv)
    marker = _check_replaceable(fs, output_dir, listing, overwrite=overwrite)
    old = [path for path in listing if path != IN_PROGRESS_MARKER]
    if IN_PROGRESS_MARKER in listing:  # stale or damaged: moved aside first, so that exactly one new run takes it
        old.append(_move_marker_aside(fs, output_dir, marker))
    run_id = _write_marker(fs, output_dir, argv)
    _delete_own_output(fs, output_dir, old)
    return run_id


def claim_training_dir(output_dir: str, *, fs: Filesystem, argv: Optional[Sequence[str]] = None) -> str:
    """Claims a training run's --output before anything is loaded; returns the run's id (for `release_claim`).

    A training output carries a lasting mark (`_TINYBERT_TRAINING`) beside the in-progress marker, so that a later
    run knows the folder is a training run's: it may continue from its checkpoint there (or start afresh with
    --no_resume, replacing only the files training writes). A folder without the mark that holds anything (a copy
    of a teacher, someone's config.json) is refused whole; a live run's folder is refused.

    Raises:
      OutputInUseError: a live run holds the directory.
      OutputExistsError: the root, a file, or a non-empty folder that no training run of ours wrote.
    """
    if fs.is_root(output_dir):
        raise OutputExistsError(f"--output {output_dir} is the root of the filesystem; choose a directory inside it")
    listing = fs.list(output_dir)
    if listing is None:
        raise OutputExistsError(f"--output {output_dir} is a file, not a directory; choose a directory")
    if listing and TRAINING_MARKER not in listing:
        raise OutputExistsError(
            f"--output {output_dir} holds files no training run of ours wrote (e.g. {sorted(listing)[0]}); nothing "
            "was changed: choose a new or empty folder")
    if not listing:
        fs.mkdirs(output_dir)
        fs.write_new(fs.join(output_dir, TRAINING_MARKER), json.dumps({"kind": "training"}).encode("utf-8"))
    elif IN_PROGRESS_MARKER in listing:
        marker = _read_marker(fs, output_dir)
        if marker is not None and _marker_is_live(marker):
            raise _in_use_error(fs, output_dir, marker)
        fs.delete(fs.join(output_dir, _move_marker_aside(fs, output_dir, marker)))
    return _write_marker(fs, output_dir, argv)


def check_claim(output_dir: str, run_id: Optional[str], *, fs: Filesystem) -> None:
    """Raises unless the in-progress marker still carries `run_id` (None: no check).

    Raises:
      OutputClaimLostError: another run took the directory (--overwrite after this run's driver was gone).
    """
    if run_id is None:
        return
    marker = _read_json(fs, fs.join(output_dir, IN_PROGRESS_MARKER))
    if (marker or {}).get("run_id") != run_id:
        taken = f" by run {marker.get('run_id')} ({_describe(marker)})" if marker else ""
        raise OutputClaimLostError(f"output directory {output_dir} was taken{taken} while run {run_id} was writing "
                                   f"it; this run writes no manifest and no {SUCCESS_MARKER}")


def release_claim(output_dir: str, run_id: Optional[str], *, fs: Filesystem) -> None:
    """Removes this run's in-progress marker once `_SUCCESS` is written (None: leaves any marker alone)."""
    if run_id is not None:
        fs.delete(fs.join(output_dir, IN_PROGRESS_MARKER))


def _read_json(fs: Filesystem, path: str) -> Optional[Dict[str, Any]]:
    try:
        value = json.loads(fs.read(path).decode("utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _read_marker(fs: Filesystem, output_dir: str) -> Optional[Dict[str, Any]]:
    """The marker's fields, or None for a damaged one; waits briefly for a marker that is being written."""
    for _ in range(10):
        marker = _read_json(fs, fs.join(output_dir, IN_PROGRESS_MARKER))
        if marker is not None and "run_id" in marker:
            return marker
        time.sleep(0.05)
    return None


def _our_manifest(fs: Filesystem, output_dir: str) -> Optional[Dict[str, Any]]:
    manifest = _read_json(fs, fs.join(output_dir, MANIFEST_NAME))
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


def _in_use_error(fs: Filesystem, output_dir: str, marker: Optional[Mapping[str, Any]]) -> OutputInUseError:
    if marker is None:
        return OutputInUseError(f"output directory {output_dir} was just claimed by another run; choose another "
                                "--output or wait for it to finish")
    hint = ("" if marker.get("host") == socket.gethostname() else
            f"; if that run is gone, delete {fs.join(output_dir, IN_PROGRESS_MARKER)} by hand")
    return OutputInUseError(f"output directory {output_dir} is in use by another run ({_describe(marker)}); wait for "
                            f"it to finish or choose another --output{hint}")


def _check_replaceable(fs: Filesystem, output_dir: str, listing: Sequence[str], *,
                       overwrite: bool) -> Optional[Dict[str, Any]]:
    """Raises unless `overwrite` may replace the (non-empty) directory's contents; returns the stale marker, if any."""
    marker = _read_marker(fs, output_dir) if IN_PROGRESS_MARKER in listing else None
    if marker is not None and _marker_is_live(marker):
        raise _in_use_error(fs, output_dir, marker)
    manifest = _our_manifest(fs, output_dir) if MANIFEST_NAME in listing else None
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
                f"{fs.join(output_dir, IN_PROGRESS_MARKER)}: {_describe(marker)}, no longer running); pass "
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
    if top in _FREELY_NAMED:
        return True
    return "/" not in rest and (rest.startswith("part-") or rest.startswith(".tmp-"))


def _move_marker_aside(fs: Filesystem, output_dir: str, marker: Optional[Mapping[str, Any]]) -> str:
    """Renames the stale marker to a temporary name (returned, relative); a run that raced us to it finds it gone,
    or finds a fresh marker that it puts back, and stops."""
    source = fs.join(output_dir, IN_PROGRESS_MARKER)
    name = f".tmp-{uuid.uuid4().hex}-{IN_PROGRESS_MARKER}"
    aside = fs.join(output_dir, name)
    try:
        fs.rename(source, aside)
    except OSError:  # gone: another run moved it first
        raise _in_use_error(fs, output_dir, _read_marker(fs, output_dir)) from None
    moved = _read_json(fs, aside)
    if marker is not None and (moved or {}).get("run_id") != marker.get("run_id"):
        fs.rename(aside, source)  # another run's fresh marker: give it back
        raise _in_use_error(fs, output_dir, moved)
    return name


def _write_marker(fs: Filesystem, output_dir: str, argv: Optional[Sequence[str]]) -> str:
    run_id = uuid.uuid4().hex
    marker = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
              "pid_start": _process_start(os.getpid()),
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "argv": list(sys.argv if argv is None else argv)}
    try:
        fs.write_new(fs.join(output_dir, IN_PROGRESS_MARKER), json.dumps(marker, indent=2).encode("utf-8"))
    except FileExistsError:
        raise _in_use_error(fs, output_dir, _read_marker(fs, output_dir)) from None
    return run_id


def _delete_own_output(fs: Filesystem, output_dir: str, paths: Sequence[str]) -> None:
    """Deletes the old output (checked by `_check_replaceable`), `_SUCCESS` first so readers stop trusting it, then
    the directories it leaves empty, deepest first."""
    order = sorted(paths, key=lambda path: (path != SUCCESS_MARKER, path != MANIFEST_NAME, path))
    directories = set()
    for path in order:
        parts = path.rstrip("/").split("/")
        directories.update("/".join(parts[:depth]) for depth in range(1, len(parts) + path.endswith("/")))
        if not path.endswith("/"):
            fs.delete(fs.join(output_dir, *parts))
    for directory in sorted(directories, key=lambda d: d.count("/"), reverse=True):
        fs.remove_dir(fs.join(output_dir, *directory.split("/")))

