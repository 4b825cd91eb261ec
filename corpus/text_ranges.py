"""Plain-text input cut into byte ranges that own the documents starting in them, so that one file spreads over
many workers. No Beam here.

A document starts at its first non-blank line (`corpus.documents.iter_text_documents`); the range [start, end)
owns the documents whose first line starts in it and the non-UTF-8 lines that start in it. Its reader seeks to
`start`, moves to the first line start at or after it, learns from the few lines before that whether a document is
open there (the last UTF-8 line before it is not blank), leaves that document's lines to the range it started in,
and reads on past `end` only to finish the last document it owns. So every range size, down to one byte, gives the
whole file's documents once each, with the same offsets (a document's key is its file and that offset), and no
range reads the file from its start.

Only uncompressed files seek; a gzip, bz2 or xz text file is read whole by one worker (the caller says so).
"""

import io
from typing import BinaryIO, Callable, Iterable, Iterator, List, Tuple, Union

from corpus.documents import BadLine, TextDocument, iter_text_documents, text_line

Lines = Callable[[BinaryIO], Iterable[Tuple[int, bytes]]]  # `pipelines.sources.iter_lines`: (offset, line) pairs
_LOOK_BACK = 4096  # bytes read before a range's first line to learn whether a document is open there (doubles)
_SCAN = 1 << 16


def plan_ranges(size: int, split_bytes: int) -> List[Tuple[int, int]]:
    """[start, end) ranges of at most `split_bytes` covering a file of `size` bytes (one range for an empty file)."""
    if size <= split_bytes:
        return [(0, size)]
    return [(start, min(start + split_bytes, size)) for start in range(0, size, split_bytes)]


def iter_range_documents(handle: BinaryIO, start: int, end: int, *,
                         iter_lines: Lines) -> Iterator[Union[TextDocument, BadLine]]:
    """The documents and bad lines that the range [start, end) of an uncompressed text file owns (module docstring).

    Args:
      handle: the file, opened for binary reading; it must seek.
      start, end: the range.
      iter_lines: splits a handle into (offset from where it was, line without its end) pairs.
    """
    first_line = next_line_start(handle, start)
    if first_line >= end:
        return  # no line starts in the range
    continues = first_line > 0 and _document_open_at(handle, first_line, iter_lines)
    handle.seek(first_line)
    lines = ((first_line + offset, raw) for offset, raw in iter_lines(handle))
    yield from iter_text_documents(lines, continues_document=continues, end=end)


def next_line_start(handle: BinaryIO, position: int) -> int:
    """The first offset at or after `position` where a line starts (after `\\n`, `\\r\\n` or a lone `\\r`); the
    file's size where none does."""
    if position <= 0:
        return 0
    handle.seek(position - 1)
    before = handle.read(1)
    if before == b"\n":
        return position
    if before == b"\r":
        return position + 1 if handle.read(1) == b"\n" else position
    offset = position
    while True:
        chunk = handle.read(_SCAN)
        if not chunk:
            return offset  # the end of the file: no line starts after it
        lf, cr = chunk.find(b"\n"), chunk.find(b"\r")
        if lf == -1 and cr == -1:
            offset += len(chunk)
            continue
        if cr == -1 or (lf != -1 and lf < cr):
            return offset + lf + 1
        if cr + 1 < len(chunk):
            return offset + cr + (2 if chunk[cr + 1:cr + 2] == b"\n" else 1)
        return offset + cr + (2 if handle.read(1) == b"\n" else 1)  # a `\r` that ends the chunk


def _document_open_at(handle: BinaryIO, line_start: int, iter_lines: Lines) -> bool:
    """Whether a document is open where the line at `line_start` (> 0) begins: the last UTF-8 line before it is not
    blank. Reads a few kilobytes back, more only where the lines just before are longer or not UTF-8."""
    look_back = _LOOK_BACK
    while True:
        begin = max(0, line_start - look_back)
        first = next_line_start(handle, begin)
        if first < line_start:
            handle.seek(first)
            open_document = None  # unknown until a UTF-8 line is seen (known to be closed at the file's start)
            if first == 0:
                open_document = False
            for _, raw in iter_lines(io.BytesIO(handle.read(line_start - first))):
                line = text_line(raw)
                if line is not None:
                    open_document = bool(line)
            if open_document is not None:
                return open_document
        if begin == 0:
            return False
        look_back *= 2
