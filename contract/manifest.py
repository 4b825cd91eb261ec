"""manifest.json as text: written by the pipelines' finalize step, read back (format_version checked) by everyone."""

import json
from typing import Any, Dict, Mapping

from contract.errors import UserError, describe
from contract.layout import FORMAT_VERSION


def encode_manifest(manifest: Mapping[str, Any]) -> str:
    """The manifest's bytes on disk (as text): sorted keys, two-space indents."""
    return json.dumps(manifest, indent=2, sort_keys=True)


def decode_manifest(data: bytes, manifest_path: str) -> Dict[str, Any]:
    """A manifest read back: a JSON object whose format_version this code understands.

    Raises:
      UserError: not UTF-8 JSON, not an object, or a format_version that is not a number or is newer than ours.
    """
    try:
        manifest = json.loads(data.decode("utf-8"))
    except ValueError as error:  # not UTF-8 or not JSON
        raise UserError(f"{manifest_path} is missing or not readable JSON ({describe(error)}); rerun the "
                        "pipeline that wrote it") from error
    if not isinstance(manifest, dict):
        raise UserError(f"{manifest_path} is not a manifest (a JSON object); rerun the pipeline that wrote it")
    check_format_version(manifest, manifest_path)
    return manifest


def check_format_version(manifest: Mapping[str, Any], manifest_path: str) -> None:
    """Refuses a manifest of a newer major format than this code (a missing version is the first format).

    Raises:
      UserError: format_version is not a version number, or its major is newer than FORMAT_VERSION.
    """
    if "format_version" not in manifest:
        return
    version = manifest["format_version"]
    try:
        major = int(str(version).split(".", 1)[0])
    except ValueError:
        raise UserError(f"{manifest_path} has format_version {version!r}, not a version number; rerun the "
                        "pipeline that wrote it") from None
    if major > FORMAT_VERSION:
        raise UserError(f"{manifest_path} has format_version {version}, newer than the {FORMAT_VERSION} this reader "
                        "understands; install the tinybert-data version that wrote it")
