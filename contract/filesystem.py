"""The few file operations that the output claim and the reader of a finished output need, on any storage.

`ReadableFilesystem` is what the reader (`contract.finished`) uses, `Filesystem` what the claim (`contract.claim`)
uses. Here are local paths (`LocalFilesystem`) and, read only, any fsspec URL (`FsspecFilesystem`); the pipelines
add Beam's `FileSystems` (`pipelines/outputs/filesystem.py`), so that the contract never imports Beam.
"""

import os
import posixpath
from typing import Any, List, Optional, Protocol


class ReadableFilesystem(Protocol):
    """Reading single files by path."""

    def join(self, base: str, *parts: str) -> str:
        """`base` and `parts` as one path of this filesystem."""

    def exists(self, path: str) -> bool:
        """Whether a file or directory is at `path`."""

    def read(self, path: str) -> bytes:
        """The whole file. Raises OSError where there is none or it cannot be read."""


class Filesystem(ReadableFilesystem, Protocol):
    """What the output claim needs beyond reading: list, create, rename and delete."""

    def is_root(self, path: str) -> bool:
        """Whether `path` is the root of the whole filesystem (never an output directory)."""

    def list(self, directory: str) -> Optional[List[str]]:
        """Paths under `directory`, relative, with "/" separators, hidden ones included; empty directories end with
        "/". [] for a missing directory, None when `directory` is a file."""

    def mkdirs(self, directory: str) -> None:
        """Makes `directory` and its parents; one that exists (made by another run a moment before) is fine."""

    def write_new(self, path: str, data: bytes) -> None:
        """Writes a new file. Raises FileExistsError when `path` exists, or when another writer's file won a race
        (exactly one of two writers wins where the storage can tell; see the implementation)."""

    def rename(self, source: str, target: str) -> None:
        """Moves a file. Raises OSError when `source` is gone."""

    def delete(self, path: str) -> None:
        """Deletes a file."""

    def remove_dir(self, path: str) -> None:
        """Removes the directory `path` if it is empty (where directories exist at all); else does nothing."""


class LocalFilesystem:
    """Local paths, through `os`: creating a new file is atomic (O_CREAT|O_EXCL)."""

    def join(self, base: str, *parts: str) -> str:
        return os.path.join(base, *parts)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def read(self, path: str) -> bytes:
        with open(path, "rb") as handle:
            return handle.read()

    def is_root(self, path: str) -> bool:
        absolute = os.path.abspath(path)
        return os.path.dirname(absolute) == absolute

    def list(self, directory: str) -> Optional[List[str]]:
        if not os.path.exists(directory):
            return []
        if not os.path.isdir(directory):
            return None
        found = []
        for root, dirs, files in os.walk(directory):
            relative = os.path.relpath(root, directory).replace(os.sep, "/")
            prefix = "" if relative == "." else relative + "/"
            found.extend(prefix + name for name in files)
            if not dirs and not files and prefix:
                found.append(prefix)
        return sorted(found)

    def mkdirs(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)

    def write_new(self, path: str, data: bytes) -> None:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)  # FileExistsError if it exists
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)

    def rename(self, source: str, target: str) -> None:
        os.rename(source, target)

    def delete(self, path: str) -> None:
        os.remove(path)

    def remove_dir(self, path: str) -> None:
        if os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)


class FsspecFilesystem:
    """Reading from any fsspec filesystem (local, memory://, gs:// with gcsfs, s3:// with s3fs, ...).

    Args:
      fs: an fsspec filesystem; paths are the ones it takes (e.g. the root `fsspec.core.url_to_fs` returns).
    """

    def __init__(self, fs: Any):
        self.fs = fs

    def join(self, base: str, *parts: str) -> str:
        return posixpath.join(base, *parts)

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def read(self, path: str) -> bytes:
        with self.fs.open(path, "rb") as handle:
            return handle.read()
