"""The contract's filesystem interface on Beam's `FileSystems`, and the contract's output claim and finished-output
reader bound to it.

Local paths go through `contract.filesystem.LocalFilesystem` (an exclusive create that exactly one of two racing
runs wins); every other Beam filesystem (gs://, s3://, hdfs://, ...) through `BeamFilesystem`.
"""

from typing import Any, Dict, List, Optional, Sequence

from apache_beam.io.filesystems import FileSystems

from contract import claim, finished
from contract.filesystem import Filesystem, LocalFilesystem


class BeamFilesystem:
    """A Beam filesystem by URL. Object stores have neither an exclusive create nor directories: `write_new` is
    best effort (check, write, read back) and a directory is at most a placeholder object ("name/")."""

    def join(self, base: str, *parts: str) -> str:
        return FileSystems.join(base, *parts) if parts else base

    def exists(self, path: str) -> bool:
        return FileSystems.exists(path)

    def read(self, path: str) -> bytes:
        with FileSystems.open(path) as handle:
            return handle.read()

    def is_root(self, path: str) -> bool:
        return False  # a bucket's root is a usable output directory, and is listed by prefix, not walked

    def list(self, directory: str) -> Optional[List[str]]:
        base = directory.rstrip("/")
        if FileSystems.exists(base) and any(m.path.rstrip("/") == base
                                            for m in FileSystems.match([base])[0].metadata_list):
            return None
        metadata = FileSystems.match([FileSystems.join(directory, "**")])[0].metadata_list
        return sorted(m.path[len(base) + 1:] for m in metadata if m.path.startswith(base + "/"))

    def mkdirs(self, directory: str) -> None:
        if not FileSystems.exists(directory):
            try:
                FileSystems.mkdirs(directory)
            except IOError:  # another run made it first
                pass

    def write_new(self, path: str, data: bytes) -> None:
        if FileSystems.exists(path):
            raise FileExistsError(path)
        with FileSystems.create(path) as handle:
            handle.write(data)
        try:
            written = self.read(path)
        except OSError:
            written = None
        if written != data:  # another writer's file replaced ours
            raise FileExistsError(path)

    def rename(self, source: str, target: str) -> None:
        try:
            FileSystems.rename([source], [target])
        except Exception as error:  # noqa: BLE001 - Beam wraps the filesystem's own error
            raise OSError(f"cannot rename {source} to {target}: {error}") from error

    def delete(self, path: str) -> None:
        FileSystems.delete([path])

    def remove_dir(self, path: str) -> None:
        placeholder = path.rstrip("/") + "/"
        if FileSystems.exists(placeholder):
            FileSystems.delete([placeholder])


def filesystem(path: str) -> Filesystem:
    """The filesystem of a path: local, or the Beam filesystem its scheme names."""
    return LocalFilesystem() if FileSystems.get_scheme(path) is None else BeamFilesystem()


def claim_output_dir(output_dir: str, *, overwrite: bool, argv: Optional[Sequence[str]] = None) -> str:
    """`contract.claim.claim_output_dir` on any Beam filesystem path; returns the run id for `FinalizeOutput`."""
    return claim.claim_output_dir(output_dir, fs=filesystem(output_dir), overwrite=overwrite, argv=argv)


def check_claim(output_dir: str, run_id: Optional[str]) -> None:
    """`contract.claim.check_claim` on any Beam filesystem path."""
    claim.check_claim(output_dir, run_id, fs=filesystem(output_dir))


def release_claim(output_dir: str, run_id: Optional[str]) -> None:
    """`contract.claim.release_claim` on any Beam filesystem path."""
    claim.release_claim(output_dir, run_id, fs=filesystem(output_dir))


def read_manifest(output_dir: str, *, require_success: bool = True) -> Dict[str, Any]:
    """An output directory's manifest (`contract.finished.read_finished`), on any Beam filesystem path.

    Args:
      require_success: refuse a directory without the completion marker (a run that did not finish or failed).
    """
    return finished.read_finished(output_dir, fs=filesystem(output_dir), require_success=require_success)
