"""Compressed inputs, told by their first bytes (magic numbers), never by their names: the one table every reader
uses (pipelines.sources for task and text inputs, corpus.wiki for dumps)."""

import bz2
import gzip
import lzma
from typing import BinaryIO, Optional

from contract.errors import InputError

# (first bytes, name) of the compressed formats a file may be in; the readable ones have an opener below.
MAGIC_NUMBERS = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"), (b"PK\x03\x04", "zip"),
                 (b"(\xb5/\xfd", "zstd"))
HEAD_BYTES = 8  # enough for every magic number above
_OPENERS = {"gzip": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"), "bz2": lambda raw: bz2.BZ2File(raw, mode="rb"),
            "xz": lambda raw: lzma.LZMAFile(raw, mode="rb")}


def compression_of(head: bytes) -> Optional[str]:
    """The compressed format whose magic number `head` starts with, or None (not compressed, as far as we read)."""
    for magic, name in MAGIC_NUMBERS:
        if head.startswith(magic):
            return name
    return None


def check_readable(kind: Optional[str], path: str) -> None:
    """Refuses a compressed format that is not read here.

    Raises:
      InputError: a zip or zstd file (formats a stream of records is not read from).
    """
    if kind is not None and kind not in _OPENERS:
        raise InputError(f"{path} is a {kind} file, which is not read here; decompress it (gzip, bz2 and xz files "
                         "are read as they are)")


def open_stream(kind: str, raw: BinaryIO) -> BinaryIO:
    """The decompressing reader of format `kind` (gzip, bz2 or xz) over the compressed file object `raw`."""
    return _OPENERS[kind](raw)
