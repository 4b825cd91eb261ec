"""The one reader of a finished output: its completion marker, then its manifest, checked before anyone trusts it.

The pipelines read back the manifest they wrote (through Beam's filesystems) and the trainer reads its input
(through fsspec) with the same function: an output without `_SUCCESS` is refused, and a manifest is a JSON object
of a format this code understands, of the expected kind, whose files are paths inside the output directory.
"""

import posixpath
from typing import Any, Dict, Mapping, Optional

from contract.errors import UserError, describe
from contract.filesystem import ReadableFilesystem
from contract.layout import AUGMENTED_KIND, CORPUS_KIND, MANIFEST_NAME, SUCCESS_MARKER
from contract.manifest import decode_manifest

_WRITERS = {CORPUS_KIND: "python -m pipelines.corpus", AUGMENTED_KIND: "python -m pipelines.augment"}


def read_finished(root: str, *, fs: ReadableFilesystem, kind: Optional[str] = None, require_success: bool = True,
                  shown: Optional[str] = None) -> Dict[str, Any]:
    """The manifest of the output directory `root`, once it is known to be finished and well formed.

    Args:
      root: the output directory, as `fs` names it.
      fs: the filesystem it is on.
      kind: the manifest's `kind` this reader needs (None: any).
      require_success: refuse a directory without the completion marker (a run that did not finish, or failed).
      shown: how messages name the directory (default `root`), e.g. the URL a user typed.

    Raises:
      UserError: no completion marker; a manifest that is missing, not JSON, not an object or of a newer format;
        another kind; an `outputs` entry without its list of files, or a file outside the directory.
    """
    shown = shown or root
    if require_success and not fs.exists(fs.join(root, SUCCESS_MARKER)):
        raise UserError(f"{shown} has no {SUCCESS_MARKER} marker: the pipeline run that writes it did not finish; "
                        "rerun it to completion, or use a finished output")
    manifest_path = fs.join(shown, MANIFEST_NAME)
    try:
        data = fs.read(fs.join(root, MANIFEST_NAME))
    except OSError as error:  # missing or unreadable
        raise UserError(f"{manifest_path} is missing or not readable JSON ({describe(error)}); rerun the "
                        "pipeline that wrote it") from error
    manifest = decode_manifest(data, manifest_path)  # a JSON object of a format this reader understands
    if kind is not None and manifest.get("kind") != kind:
        raise UserError(f"{shown} holds {manifest.get('kind')!r} data but {kind!r} is needed here "
                        f"({_WRITERS.get(kind, 'a pipeline')} writes it)")
    _check_files(manifest, manifest_path)
    return manifest


def _check_files(manifest: Mapping[str, Any], manifest_path: str) -> None:
    """Every output lists its files as relative paths that stay inside the output directory.

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
