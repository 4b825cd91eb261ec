"""MediaWiki XML dumps: split into work ranges, stream pages out of a range, wiki markup to plain paragraphs.

No Beam here; `pipelines.corpus` wraps these in DoFns.

Compression is told by the file's first bytes (bz2, gzip, xz), never by its name.

Splitting (so that a large dump spreads over workers):
* uncompressed XML: byte ranges; a range owns the pages whose `<page>` tag starts inside it.
* bz2 written as a *multistream* dump (what Wikimedia publishes as `pages-articles-multistream*.xml.bz2`,
  100 pages per bz2 stream): byte ranges; a range owns the bz2 streams that start inside it. A stream start is found
  by its byte-aligned magic (`BZh` + level + the block magic 0x314159265359) and confirmed by decompressing it, so
  the companion index file is not needed. Pages never straddle streams in these dumps.
* a single-stream bz2 (or gzip, xz) cannot be entered in the middle: it is one range, still streamed.

Pages are cut out of the decompressed byte stream one at a time and each is parsed on its own with ElementTree, so
memory holds one page, and a malformed page is one reject rather than the end of the file (a whole-document
`iterparse` stops at the first XML error).
"""

import bisect
import bz2
import dataclasses
import os
import re
import unicodedata
import xml.etree.ElementTree as ElementTree
from typing import BinaryIO, Iterator, List, Optional, Tuple

import mwparserfromhell
from mwparserfromhell import nodes as wiki_nodes

from contract import compression
from contract.errors import DECOMPRESSION_ERRORS, DamagedStream, damaged_stream
from corpus import wikimarkup

_CHUNK = 1 << 20
_PAGE_OPEN = b"<page>"
_PAGE_CLOSE = b"</page>"
_DUMP_CLOSE = b"</mediawiki>"
_BZ2_STREAM_MAGIC = re.compile(rb"BZh[1-9]\x31\x41\x59\x26\x53\x59")


@dataclasses.dataclass(frozen=True)
class Page:
    """One `<page>` block. Where it sits, the same whatever range read it: `offset` is its byte offset in the XML
    (a plain dump's file offset; in a multistream bz2 dump, the decompressed offset inside its own bz2 stream, and
    `stream` is that stream's byte offset in the file). Rejects name a page by them."""
    offset: int
    xml: bytes
    stream: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class Article:
    page_id: str
    title: str
    namespace: str
    redirect: bool
    wikitext: str


class MalformedPage(ValueError):
    """A page block that is not well-formed XML or lacks the export schema's fields."""


def is_multistream_bz2(handle: BinaryIO) -> bool:
    """Whether a .bz2 file holds several streams (reads only the first one, the dump header in a real dump)."""
    handle.seek(0)
    decompressor = bz2.BZ2Decompressor()
    read = 0
    while read < 4 * _CHUNK:  # a real multistream dump's first stream is the few-KB siteinfo header
        data = handle.read(_CHUNK)
        if not data:
            return False
        read += len(data)
        decompressor.decompress(data)  # only where the stream ends matters
        if decompressor.eof:
            return bool(decompressor.unused_data) or bool(handle.read(1))
    return False


def _is_multistream_here(raw: BinaryIO) -> bool:
    """`is_multistream_bz2`, leaving `raw` where it was."""
    position = raw.tell()
    try:
        return is_multistream_bz2(raw)
    finally:
        raw.seek(position)


def compression_of(raw: BinaryIO, path: str) -> Optional[str]:
    """bz2, gzip, xz or None (plain XML), from the first bytes of the seekable `raw` (left where it was).

    Raises:
      InputError: a format that is not read here (zip, zstd).
    """
    position = raw.tell()
    raw.seek(0)
    head = raw.read(compression.HEAD_BYTES)
    raw.seek(position)
    kind = compression.compression_of(head)
    compression.check_readable(kind, path)
    return kind


def plan_ranges(path: str, size: int, *, split_bytes: int, open_fn) -> List[Tuple[str, int, int]]:
    """(path, start, end) work ranges for one dump file; see the module docstring for which files split."""
    with open_fn(path) as handle:
        kind = compression_of(handle, path)
        splittable = kind is None or (kind == "bz2" and is_multistream_bz2(handle))
    if not splittable or size <= split_bytes:
        return [(path, 0, size)]
    return [(path, start, min(start + split_bytes, size)) for start in range(0, size, split_bytes)]


def _bz2_range(handle: BinaryIO, start: int, end: int, at_end: List[bool],
               streams: List[Tuple[int, int]]) -> Iterator[bytes]:
    """Decompressed bytes of the bz2 streams that start in [start, end); appends True to `at_end` once the streams
    it decompressed run to the end of the file (the range that holds the dump's last stream), and (offset of the
    stream's first byte in the bytes yielded, the stream's file offset) to `streams` before each stream's bytes."""
    yielded = 0
    handle.seek(start)
    buffer = b""
    position = start  # file offset of buffer[0]
    # Find the first stream start at or after `start`.
    while True:
        data = handle.read(_CHUNK)
        buffer += data
        match = _BZ2_STREAM_MAGIC.search(buffer)
        while match is not None:
            stream_start = position + match.start()
            if stream_start >= end:
                return
            if _is_stream_start(buffer[match.start():]):
                buffer = buffer[match.start():]
                position = stream_start
                break
            match = _BZ2_STREAM_MAGIC.search(buffer, match.start() + 1)
        else:
            if not data or position + len(buffer) >= end + 10:
                return
            keep = min(len(buffer), 9)  # a magic may straddle two reads
            position += len(buffer) - keep
            buffer = buffer[len(buffer) - keep:]
            continue
        break
    while position < end and buffer:
        decompressor = bz2.BZ2Decompressor()
        consumed = 0
        pending = buffer
        streams.append((yielded, position))
        while True:
            out = decompressor.decompress(pending)
            if out:
                yielded += len(out)
                yield out
            if decompressor.eof:
                consumed += len(pending) - len(decompressor.unused_data)
                buffer = decompressor.unused_data
                break
            consumed += len(pending)
            pending = handle.read(_CHUNK)
            if not pending:  # the file ends inside the stream: a truncated dump
                raise DamagedStream(f"the bz2 stream that starts at byte {position} ends at byte "
                                    f"{position + consumed} without its end-of-stream marker (truncated)",
                                    position + consumed)
        position += consumed
        if not buffer:
            buffer = handle.read(_CHUNK)
            if not buffer:
                at_end.append(True)


def _page(offset: int, xml: bytes, streams: List[Tuple[int, int]]) -> Page:
    """A page at `offset` of the bytes read: in a bz2 range, named by its stream (see Page)."""
    if not streams:
        return Page(offset, xml)
    first, stream = streams[bisect.bisect_right(streams, (offset, float("inf"))) - 1]
    return Page(offset - first, xml, stream)


def _is_stream_start(data: bytes) -> bool:
    try:
        bz2.BZ2Decompressor().decompress(data[:_CHUNK], max_length=1)
        return True
    except OSError:
        return False


def _plain_bytes(handle: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    """Bytes of an uncompressed dump from `start` to the end of the last page that opens before `end`."""
    handle.seek(start)
    while True:
        data = handle.read(_CHUNK)
        if not data:
            return
        yield data


def iter_pages(raw: BinaryIO, path: str, start: int, end: int, size: int) -> Iterator[Page]:
    """The page blocks a work range owns, one at a time, each as raw XML bytes.

    A `<page>` without its `</page>` before the next `<page>` (or the end of the data) comes out as it is, so
    that parsing it fails and it becomes a reject.

    Raises:
      DamagedStream: the range that holds the end of the file finds no `</mediawiki>` after its last page. A dump
        cut exactly between two pages (plain XML) or two bz2 streams (multistream) decompresses without an error
        and would silently lose every page after the cut; the closing tag is the only sign left that it was cut.
    """
    at_end: List[bool] = []  # filled by a bz2 range that decompresses through the file's last stream
    streams: List[Tuple[int, int]] = []  # a multistream bz2's streams: (offset in the chunks, file offset)
    kind = compression_of(raw, path)
    # A multistream bz2 dump is read stream by stream, also whole, so that a page has the same name (its stream and
    # its offset there) whatever --split_bytes made of the file.
    ranged_bz2 = kind == "bz2" and (start > 0 or end < size or _is_multistream_here(raw))
    if ranged_bz2:
        chunks, owns_all = _bz2_range(raw, start, end, at_end, streams), True
    elif kind is not None:
        chunks, owns_all = _decompressed(compression.open_stream(kind, raw), raw), True
    else:
        chunks, owns_all = _plain_bytes(raw, start, end), False
    buffer = b""
    base = start if not owns_all else 0  # stream offset of buffer[0]
    closed = False  # whether `</mediawiki>` came after the last page so far
    owned_page = False
    for chunk in chunks:
        buffer += chunk
        while True:
            open_at = buffer.find(_PAGE_OPEN)
            if open_at < 0:
                closed = closed or _DUMP_CLOSE in buffer
                keep = len(_DUMP_CLOSE) - 1  # a tag may straddle two chunks
                base += max(0, len(buffer) - keep)
                buffer = buffer[-keep:] if len(buffer) > keep else buffer
                break
            closed = False
            if not owns_all and base + open_at >= end:
                return
            owned_page = True
            close_at = buffer.find(_PAGE_CLOSE, open_at)
            next_open = buffer.find(_PAGE_OPEN, open_at + 1)
            if close_at < 0 and next_open < 0:
                base += open_at
                buffer = buffer[open_at:]
                break  # the page goes on in the next chunk
            if close_at < 0 or (0 <= next_open < close_at):
                yield _page(base + open_at, buffer[open_at:next_open], streams)  # unclosed page
                base += next_open
                buffer = buffer[next_open:]
                continue
            stop = close_at + len(_PAGE_CLOSE)
            yield _page(base + open_at, buffer[open_at:stop], streams)
            base += stop
            buffer = buffer[stop:]
    open_at = buffer.find(_PAGE_OPEN)
    if open_at >= 0 and (owns_all or base + open_at < end):
        yield _page(base + open_at, buffer[open_at:], streams)  # truncated at the end of the data
    # Here every chunk is consumed. Which range checks the end: a whole file; a bz2 range that decompressed the
    # file's last stream; a plain range that owns a page and read on to the end of the file (it owns the last page:
    # a range with a page after it returned above; a later range may start inside the closing tag).
    elif (bool(at_end) if ranged_bz2 else owns_all or owned_page) and not (closed or _DUMP_CLOSE in buffer):
        raise DamagedStream(f"the XML ends at byte {base + len(buffer)} without the dump's closing </mediawiki> "
                            f"tag: the file was cut short (between two pages or two bz2 streams, so nothing failed "
                            f"to decompress, but every page after the cut is missing)", -1)


def _decompressed(stream, raw: BinaryIO) -> Iterator[bytes]:
    while True:
        try:
            data = stream.read(_CHUNK)
        except DECOMPRESSION_ERRORS as error:
            raise damaged_stream(error, raw) from None
        if not data:
            return
        yield data


def local_articles(path: str) -> Iterator[Article]:
    """Every article (namespace 0, not a redirect) of a whole local dump file, in order.

    For tests and benchmarks that read a sample dump directly; the pipeline's reader also routes the other pages to
    its rejects, with their reasons.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as raw:
        for page in iter_pages(raw, path, 0, size, size):
            article = parse_page(page.xml)
            if article.namespace == "0" and not article.redirect:
                yield article


def parse_page(xml: bytes) -> Article:
    """One `<page>` block of the export schema (any version) to its fields.

    Raises:
      MalformedPage: not well-formed XML, or no id/ns/title.
    """
    try:
        element = ElementTree.fromstring(xml)
    except ElementTree.ParseError as error:
        raise MalformedPage(f"not well-formed XML: {error}") from None
    page_id = (element.findtext("id") or "").strip()
    namespace = (element.findtext("ns") or "").strip()
    title = element.findtext("title")
    if not page_id or not namespace or title is None:
        raise MalformedPage("page without id, ns or title")
    text = element.find("revision/text")
    return Article(page_id=page_id, title=title, namespace=namespace,
                   redirect=element.find("redirect") is not None,
                   wikitext=(text.text or "") if text is not None else "")


# Sections that hold lists of links and citations, not prose.
_SKIPPED_SECTIONS = frozenset({
    "references", "external links", "see also", "further reading", "notes", "bibliography", "sources",
    "notes and references", "footnotes", "citations", "works cited", "general references", "gallery"})
# Tags whose contents are not running text.
_SKIPPED_TAGS = frozenset({
    "ref", "references", "table", "gallery", "math", "chem", "ce", "code", "pre", "syntaxhighlight", "source",
    "score", "timeline", "imagemap", "graph", "mapframe", "maplink", "templatedata", "noinclude", "hiero",
    "inputbox", "categorytree", "sup", "sub", "nowiki", "poem", "caption", "td", "th", "tr"})
_BREAK_TAGS = frozenset({"br", "p", "li", "dd", "dt", "div", "blockquote", "hr", "center"})
_SKIPPED_LINK_PREFIXES = frozenset({"file", "image", "media", "category", "wikipedia", "wp", "template", "help",
                                    "portal", "user", "special", "talk", "module", "draft", "wikt", "wiktionary"})
_SPACES = re.compile(r"[ \t\u00a0\u2009\u200b]+")
_EMPTY_BRACKETS = re.compile(r"\(\s*[,;:]?\s*\)|\[\s*\]")
_SPACE_BEFORE_PUNCT = re.compile(r" +([,.;:!?])")
_LETTER = re.compile(r"[^\W\d_]")
_QUOTE_MARKUP = re.compile(r"'{2,}")  # bold/italic markup, left as text by skip_style_tags (faster, never fails)


def wikitext_to_paragraphs(wikitext: str) -> List[str]:
    """Plain-text paragraphs of an article: markup rendered, templates/refs/tables/files dropped (mwparserfromhell).

    `--wiki_markup mwparserfromhell`; the default is `wikimarkup.wikitext_to_paragraphs` (same contract, ~7x faster).

    Headings and list items end a paragraph, so a sentence never runs into a heading or the next item; sections
    of references and links are dropped; each returned paragraph is NFC-normalized with single spaces.
    """
    code = mwparserfromhell.parse(wikitext, skip_style_tags=True)
    parts: List[str] = []
    skip_level: Optional[int] = None
    for node in code.nodes:
        if isinstance(node, wiki_nodes.Heading):
            title = _render(node.title.nodes).strip().lower()
            if skip_level is not None and node.level <= skip_level:
                skip_level = None
            if skip_level is None and title in _SKIPPED_SECTIONS:
                skip_level = node.level
            parts.append("\n")
            continue
        if skip_level is None:
            parts.append(_render([node]))
    paragraphs = []
    for line in "".join(parts).split("\n"):
        line = _clean_line(line)
        if line:
            paragraphs.append(line)
    return paragraphs


def _render(nodes) -> str:
    out: List[str] = []
    for node in nodes:
        if isinstance(node, wiki_nodes.Text):
            out.append(node.value)
        elif isinstance(node, wiki_nodes.Wikilink):
            target = str(node.title).strip()
            prefix = target.split(":", 1)[0].strip().lower().lstrip(":") if ":" in target else ""
            if prefix in _SKIPPED_LINK_PREFIXES or (prefix and len(prefix) <= 3 and prefix.isalpha()):
                continue  # files, categories, interlanguage links
            out.append(_render(node.text.nodes) if node.text is not None else target.split("#")[0])
        elif isinstance(node, wiki_nodes.ExternalLink):
            if node.title is not None:
                out.append(_render(node.title.nodes))
        elif isinstance(node, wiki_nodes.Tag):
            tag = str(node.tag).strip().lower()
            if tag in _SKIPPED_TAGS:
                continue
            if node.wiki_markup in ("*", "#", ";", ":") or tag in _BREAK_TAGS:
                out.append("\n")
            if node.contents is not None and not node.self_closing:
                out.append(_render(node.contents.nodes))
        elif isinstance(node, wiki_nodes.HTMLEntity):
            out.append(node.normalize())
        elif isinstance(node, wiki_nodes.Heading):
            out.append("\n")
        # Templates (infoboxes, citations, navigation), comments and arguments carry no running text.
    return "".join(out)


def _clean_line(line: str) -> str:
    line = unicodedata.normalize("NFC", line)
    line = _SPACES.sub(" ", line).strip()
    if not line or line[0] in "{|!}" or line.startswith("__"):
        return ""  # leftovers of tables and magic words that the parser kept as text
    line = _EMPTY_BRACKETS.sub("", _QUOTE_MARKUP.sub("", line))
    line = _SPACE_BEFORE_PUNCT.sub(r"\1", _SPACES.sub(" ", line)).strip()
    return line if _LETTER.search(line) else ""


# The ways wikitext becomes paragraphs, by the name `--wiki_markup` takes; the first is the default.
MARKUP_STRIPPERS = {"fast": wikimarkup.wikitext_to_paragraphs, "mwparserfromhell": wikitext_to_paragraphs}
