"""The readers' contract, on random files rather than listed cases (Hypothesis).

For every reader: a valid file gives back every record exactly as written; a damaged one (truncated at a random
offset, bytes flipped, compressed in a random format whatever its name) either gives every record or a reject, or
stops with the one-line error type (`UserError`); no other exception escapes. The `not slow` tier runs a short
profile; TINYBERT_FUZZ_EXAMPLES raises the number of examples (the slow tier sets 300).
"""

import bz2
import gzip
import lzma
import math
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from augment import tasks
from augment.glove import GloveFormatError, GloveIndex
from contract import compression
from contract.errors import DamagedStream, UserError
from corpus import documents, wiki
from pipelines import sources

EXAMPLES = int(os.environ.get("TINYBERT_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                              HealthCheck.too_slow])
COMPRESSORS = {"none": lambda data: data, "gzip": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}
# Names that may lie about the content: the reader decides by the first bytes.
NAMES = ("input.txt", "input.txt.gz", "input.bz2", "INPUT.XZ", "input")

text_lines = st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40),
                      max_size=30)


def _write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _read_all(path: str) -> bytes:
    with sources.open_input(path) as handle:
        return b"".join(raw + b"\n" for _, raw in sources.iter_lines(handle))


@FUZZ
@given(lines=text_lines, compression=st.sampled_from(sorted(COMPRESSORS)), name=st.sampled_from(NAMES))
def test_compressed_text_reads_back_every_line_whatever_its_name(tmp_path, lines, compression, name):
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path = _write(tmp_path, name, COMPRESSORS[compression](data))
    assert _read_all(path) == data


@FUZZ
@given(lines=text_lines.filter(lambda lines: sum(map(len, lines)) > 0),
       compression=st.sampled_from(["gzip", "bz2", "xz"]), cut=st.floats(0.0, 0.999), name=st.sampled_from(NAMES))
def test_a_truncated_compressed_file_stops_with_one_line(tmp_path, lines, compression, cut, name):
    compressed = COMPRESSORS[compression]("".join(line + "\n" for line in lines).encode("utf-8"))
    keep = max(6, int(len(compressed) * cut))  # at least the magic number: shorter is a plain file of those bytes
    path = _write(tmp_path, name, compressed[:keep])
    with pytest.raises(UserError, match=r"damaged .* stream|truncated"):
        _read_all(path)


@FUZZ
@given(lines=text_lines, compression=st.sampled_from(["gzip", "bz2", "xz"]), data=st.data())
def test_flipped_bytes_give_the_text_back_or_stop_with_one_line(tmp_path, lines, compression, data):
    original = "".join(line + "\n" for line in lines).encode("utf-8")
    damaged = bytearray(COMPRESSORS[compression](original))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at] ^= data.draw(st.integers(1, 255))
    path = _write(tmp_path, "input.txt", bytes(damaged))
    try:
        _read_all(path)
    except UserError:
        pass  # the one-line error; anything else is a failure of the contract


@FUZZ
@given(raw=st.binary(max_size=400))
def test_text_documents_keep_every_line_or_reject_it(tmp_path, raw):
    path = _write(tmp_path, "corpus.txt", raw)
    kept, rejected = [], []
    try:
        with sources.open_input(path) as handle:
            for item in documents.iter_text_documents(sources.iter_lines(handle)):
                (rejected if isinstance(item, documents.BadLine) else kept).append(item)
    except UserError:
        assert compression.compression_of(raw) is not None  # random bytes that begin like a compressed file
        return
    with sources.open_input(path) as handle:
        lines = list(sources.iter_lines(handle))
    bad = {offset for offset, line in lines if not _is_utf8(line)}
    assert {line.offset for line in rejected} == bad
    good = [documents.normalize_text(line.decode("utf-8")) for offset, line in lines if offset not in bad]
    assert sum(len(doc.lines) for doc in kept) >= sum(1 for line in good if line)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# ----------------------------------------------------------------------------------------------------- task rows
json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True)
                           | st.text(max_size=8), lambda inner: st.lists(inner, max_size=2)
                           | st.dictionaries(st.text(max_size=3), inner, max_size=2), max_leaves=4)


@FUZZ
@given(text=json_values, label=json_values, labels=st.sampled_from([None, ("0", "1"), ("a", "b", "1")]))
def test_a_named_record_is_kept_as_given_or_rejected_with_a_reason(text, label, labels):
    task = tasks.generic_task(["text"], "label", labels)
    try:
        example = tasks.parse_named_row(task, {"text": text, "label": label}, 3, label_field="label", id_field=None)
    except tasks.RejectedRecord as rejected:
        assert rejected.reason in ("bad_label", "bad_text", "empty_text")
        return
    assert example.texts == (text,) and isinstance(text, str) and text.strip()
    assert isinstance(label, (str, int, float)) and not (isinstance(label, float) and not math.isfinite(label))
    assert example.label == tasks.label_text(label).strip()
    assert labels is None or example.label in labels


@FUZZ
@given(label=json_values)
def test_a_hub_label_is_a_class_or_a_reject(label):
    sst2 = tasks.resolve_task("SST-2")
    try:
        text = tasks.parse_hub_row(sst2, {"sentence": "a film", "label": label, "idx": 0}, 0, None).label
    except tasks.RejectedRecord as rejected:
        assert rejected.reason == "bad_label"
        return
    assert text in ("0", "1")
    assert label in (0, 1) or label in ("0", "1")  # 1.0 == 1: the same label; 0.7, NaN, null never


# ----------------------------------------------------------------------------------------------------------- GloVe
vectors = st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=3, max_size=3)
glove_rows = st.lists(st.tuples(st.text("abcdefgh", min_size=1, max_size=6), vectors), min_size=1, max_size=20)


def _glove_lines(rows):
    return [f"{word} {' '.join(repr(v) for v in vector)}\n" for word, vector in rows]


@FUZZ
@given(rows=glove_rows)
def test_a_valid_glove_file_keeps_every_vector(rows):
    index = GloveIndex.from_lines(_glove_lines(rows), vocab_limit=1000)
    assert index.words == [word for word, _ in rows]


@FUZZ
@given(rows=glove_rows, data=st.data())
def test_a_damaged_glove_line_stops_with_its_line_number(rows, data):
    rows = rows + rows[:1]  # two lines at least: the first line sets the dimension, so it is never the odd one out
    lines = _glove_lines(rows)
    damage = data.draw(st.sampled_from(["extra", "missing", "inf", "nan", "word"]))
    at = data.draw(st.integers(1 if damage in ("extra", "missing") else 0, len(lines) - 1))
    word, vector = rows[at]
    if damage == "extra":
        lines[at] = lines[at].rstrip("\n") + " 0.5\n"
    elif damage == "missing":
        lines[at] = f"{word} {' '.join(repr(v) for v in vector[:-1])}\n"
    elif damage in ("inf", "nan"):
        lines[at] = f"{word} {damage} {' '.join(repr(v) for v in vector[1:])}\n"
    else:
        lines[at] = f"{word} {' '.join(repr(v) for v in vector[:-1])} x\n"
    with pytest.raises(GloveFormatError, match=f"glove.txt line {at + 1}"):
        GloveIndex.from_lines(lines, vocab_limit=1000, source="glove.txt")
    assert issubclass(GloveFormatError, UserError)


# ------------------------------------------------------------------------------------------------------ XML dumps
def _dump(titles) -> bytes:
    pages = "".join(f"<page><title>{t}</title><ns>0</ns><id>{i}</id><revision><text>{t} text.</text></revision>"
                    f"</page>\n" for i, t in enumerate(titles))
    return f"<mediawiki>\n{pages}</mediawiki>\n".encode("utf-8")


@FUZZ
@given(titles=st.lists(st.text("abcxyz ", min_size=1, max_size=8), min_size=1, max_size=12),
       compression=st.sampled_from(sorted(COMPRESSORS)), cut=st.none() | st.floats(0.0, 0.999),
       split_bytes=st.integers(40, 2000), name=st.sampled_from(["d.xml", "D.XML.BZ2", "d.xml.gz", "d"]))
def test_a_dump_gives_every_page_or_stops_with_one_line(tmp_path, titles, compression, cut, split_bytes, name):
    data = COMPRESSORS[compression](_dump(titles))
    if cut is not None:
        data = data[:max(6, int(len(data) * cut))]
    path = _write(tmp_path, name, data)
    size = len(data)
    found = []
    try:
        for piece, start, end in wiki.plan_ranges(path, size, split_bytes=split_bytes, open_fn=lambda p: open(p, "rb")):
            with open(piece, "rb") as handle:
                found += [page.xml for page in wiki.iter_pages(handle, piece, start, end, size)]
    except (DamagedStream, UserError):
        assert cut is not None
        return
    if cut is None:
        assert len(found) == len(titles)
    else:  # a cut that still decodes can only be a plain file cut after its last page opened: its pages are kept
        assert len(found) <= len(titles)


@pytest.mark.slow
def test_the_long_profile():
    """The same properties with 300 examples each (the fast tier runs 40)."""
    import subprocess
    import sys
    env = {**os.environ, "TINYBERT_FUZZ_EXAMPLES": "300", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                             __file__], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:]


def _multistream_bz2(dump: bytes, pages_per_stream: int) -> bytes:
    """A dump as Wikipedia's multistream files are made: the header in one bz2 stream, then streams of whole pages."""
    head_end = dump.index(b"<page>")
    tail_start = dump.rindex(b"</mediawiki>")
    pages = [b"<page>" + piece for piece in dump[head_end:tail_start].split(b"<page>")[1:]]
    streams = [dump[:head_end]] + [b"".join(pages[i:i + pages_per_stream])
                                   for i in range(0, len(pages), pages_per_stream)] + [dump[tail_start:]]
    return b"".join(bz2.compress(stream) for stream in streams)


@FUZZ
@given(titles=st.lists(st.text("abcxyz ", min_size=1, max_size=8), min_size=1, max_size=12),
       multistream=st.booleans(), pages_per_stream=st.integers(1, 4), split_bytes=st.integers(30, 3000))
def test_a_page_has_the_same_name_whatever_the_range_size(tmp_path, titles, multistream, pages_per_stream,
                                                          split_bytes):
    """Rejects name a page by (stream, offset): a plain dump's file offset, a multistream bz2 dump's stream and its
    offset in that stream. Whatever --split_bytes cut the file into, every page comes once under the same name."""
    dump = _dump(titles)
    data = _multistream_bz2(dump, pages_per_stream) if multistream else dump
    path = _write(tmp_path, "d.xml.bz2" if multistream else "d.xml", data)

    def pages(split):
        found = []
        for piece, start, end in wiki.plan_ranges(path, len(data), split_bytes=split,
                                                  open_fn=lambda p: open(p, "rb")):
            with open(piece, "rb") as handle:
                found += [(page.stream, page.offset, page.xml)
                          for page in wiki.iter_pages(handle, piece, start, end, len(data))]
        return found

    whole = pages(len(data) + 1)
    assert len(whole) == len(titles)
    assert pages(split_bytes) == whole
    for stream, offset, xml in whole:
        if multistream:  # the page's bytes at its offset in the stream that starts at `stream`
            assert bz2.BZ2Decompressor().decompress(data[stream:])[offset:offset + len(xml)] == xml
        else:  # a plain dump's page is named by its file offset
            assert stream is None and dump[offset:offset + len(xml)] == xml
