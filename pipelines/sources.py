"""Reading input files on any Beam filesystem without losing a row: damaged streams, line ends, CSV, directories.

- Compression is told by a file's first bytes (gzip, bz2, xz magic numbers), never by its name: a `.gz` that holds
  plain text is read as text, a `data.txt` that holds gzip is decompressed. A zip or zstd file is one line that
  names the format. Compressed inputs are decompressed with Python's own readers, which notice a stream that ends
  early (a download cut short); Beam's decompressing reader returns what it had and reports nothing. A damaged
  stream raises `InputError` naming the file and the compressed byte offset, and the run stops without `_SUCCESS`.
- Lines end at `\\n`, `\\r\\n` or a lone `\\r` (old Mac exports), as Python's universal newlines read them, and as the
  reference scripts read their TSVs (text mode).
- CSV is parsed as CSV: a quoted field may hold the delimiter, quotes and newlines.
- An input that names a directory means the files in it (not hidden, not `_`-prefixed markers).
"""

import codecs
import csv
import io
import os
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from contract import compression
from contract.errors import DECOMPRESSION_ERRORS, InputError, UserError, damaged_stream

CHUNK = 1 << 20
BOM = codecs.BOM_UTF8


class _CheckedStream(io.RawIOBase):
    """A decompressing reader that turns a damaged or truncated stream into an `InputError` naming the file."""

    def __init__(self, path: str, raw: BinaryIO, decompressed: BinaryIO, kind: str):
        super().__init__()
        self._path = path
        self._raw = raw
        self._inner = decompressed
        self._kind = kind

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._inner.read(size)
        except DECOMPRESSION_ERRORS as error:
            damage = damaged_stream(error, self._raw)
            raise InputError(f"{self._path}: damaged {self._kind} stream near compressed byte {damage.offset}: "
                             f"{damage.cause}; download or copy the file again") from None

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._raw.close()
        super().close()


class _Prefixed(io.RawIOBase):
    """A stream that cannot seek back, with the bytes already read from it put in front again."""

    def __init__(self, head: bytes, raw: BinaryIO):
        super().__init__()
        self._head = head
        self._raw = raw

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size is None or size < 0:
                data, self._head = self._head + self._raw.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._raw.read(size)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self._raw.tell() - len(self._head)

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_input(path: str) -> BinaryIO:
    """The decompressed bytes of `path` (compression from its first bytes), checked for truncation.

    Raises:
      InputError: a zip or zstd file (formats a stream of records is not read from).
    """
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    head = raw.read(compression.HEAD_BYTES)
    try:
        raw.seek(0)
    except (OSError, AttributeError, ValueError):
        raw = _Prefixed(head, raw)
    kind = compression.compression_of(head)
    if kind is None:
        return raw
    try:
        compression.check_readable(kind, path)
    except InputError:
        raw.close()
        raise
    return io.BufferedReader(_CheckedStream(path, raw, compression.open_stream(kind, raw), kind), CHUNK)


def iter_lines(handle: BinaryIO) -> Iterator[Tuple[int, bytes]]:
    """(byte offset, line without its end) for every line; ends are `\\n`, `\\r\\n` or `\\r`. Streams in chunks.

    Linear in the input: the next `\\n` and the next `\\r` are each searched for once per line they end, not once
    per line (a file of lone `\\r` ends would otherwise rescan its chunk for a `\\n` at every line).
    """
    offset = 0  # offset of buffer[0]
    buffer = b""
    while True:
        chunk = handle.read(CHUNK)
        if not chunk:
            break
        buffer += chunk
        start = 0
        next_lf = buffer.find(b"\n")
        next_cr = buffer.find(b"\r")
        while True:
            if next_lf != -1 and next_lf < start:
                next_lf = buffer.find(b"\n", start)
            if next_cr != -1 and next_cr < start:
                next_cr = buffer.find(b"\r", start)
            if next_cr != -1 and (next_lf == -1 or next_cr < next_lf):
                if next_cr + 1 == len(buffer):
                    break  # a `\r` at the end of the chunk: `\r\n` or not is told by the next chunk
                end, step = next_cr, 2 if next_lf == next_cr + 1 else 1
            elif next_lf != -1:
                end, step = next_lf, 1
            else:
                break
            yield offset + start, buffer[start:end]
            start = end + step
        buffer = buffer[start:]
        offset += start
    if buffer:
        yield offset, buffer[:-1] if buffer.endswith(b"\r") else buffer


def iter_csv_records(handle: BinaryIO, *, delimiter: str = ",") -> Iterator[Tuple[Optional[List[str]], str]]:
    """(cells, raw text) per CSV record; cells is None where the record is not valid UTF-8.

    Quoted fields may hold delimiters, quotes and newlines; a UTF-8 byte-order mark before the header is dropped.
    """
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape", newline="")
    lines = _TeeLines(text)
    reader = csv.reader(lines, delimiter=delimiter)
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise InputError(f"CSV parse error at record {reader.line_num}: {error}; check the quoting") from None
        raw = lines.take()
        if any(_has_surrogates(cell) for cell in cells):
            yield None, raw.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")
        else:
            yield cells, raw


class _TeeLines:
    """Feeds lines to csv.reader and keeps the ones the current record was made of (for rejects)."""

    def __init__(self, text: io.TextIOWrapper):
        self._text = text
        self._taken: List[str] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self._text.readline()
        if not line:
            raise StopIteration
        self._taken.append(line)
        return line

    def take(self) -> str:
        raw = "".join(self._taken).rstrip("\r\n")
        self._taken = []
        return raw


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def strip_bom(data: bytes) -> bytes:
    return data[len(BOM):] if data.startswith(BOM) else data


def sniff(path: str, size: int = 4096) -> bytes:
    """The first decompressed bytes of `path` (for telling a format apart in an error message)."""
    try:
        with open_input(path) as handle:
            return handle.read(size)
    except (InputError, OSError):
        return b""


def input_files(pattern: str) -> List[Dict[str, Any]]:
    """The files an --input names, with their sizes, sorted by path: a glob, a file, or a directory's files.

    Raises:
      UserError: nothing matches, or a directory holds no file.
    """
    if os.path.isdir(pattern) or pattern.endswith("/"):
        directory = pattern.rstrip("/") or "/"
        metadata = FileSystems.match([FileSystems.join(directory, "*")])[0].metadata_list
        metadata = [m for m in metadata if not os.path.basename(m.path).startswith((".", "_"))
                    and not os.path.isdir(m.path)]
        if not metadata:
            raise UserError(f"--input {pattern} is a directory with no input file in it")
    else:
        metadata = FileSystems.match([pattern])[0].metadata_list
        metadata = [m for m in metadata if not os.path.isdir(m.path)]
        if not metadata:
            raise UserError(f"no input file matches {pattern}; check --input")
    # Local paths absolute: workers elsewhere (a Dask worker's cwd) must find the same files.
    return [{"path": absolute(m.path), "bytes": m.size_in_bytes} for m in sorted(metadata, key=lambda m: m.path)]


def absolute(path: Optional[str], *, may_be_hub_name: bool = False) -> Optional[str]:
    """A local path as an absolute one; URLs (`gs://...`), `none` and None unchanged, and with `may_be_hub_name` a
    name that is no local path (`bert-base-uncased`, `org/model`) too, for the loader to find on the hub."""
    if path is None or "://" in path or path.lower() == "none":
        return path
    if may_be_hub_name and not os.path.exists(path):
        return path
    return os.path.abspath(path)


def relative_names(paths: List[str]) -> Dict[str, str]:
    """Each path's name relative to the deepest folder all of them share: unique, and stable when the set moves.

    One file, or files in one folder, keep their base names; files with one name in different folders (the
    `wikimedia/wikipedia` layout, `20231101.en/train-00000-of-00041.parquet`) keep as much of their folders as
    tells them apart.
    """
    if not paths:
        return {}
    split = [p.replace("\\", "/").split("/") for p in paths]
    common = 0
    while all(len(parts) > common + 1 for parts in split) and len({parts[common] for parts in split}) == 1:
        common += 1
    return {path: "/".join(parts[common:]) for path, parts in zip(paths, split)}
