"""corpus.text_ranges: a text file cut into byte ranges of any size gives the whole file's documents and bad lines,
once each, at the same offsets (Hypothesis, random texts, line ends and range sizes down to one byte)."""

import io
import os

from hypothesis import HealthCheck, given, settings, strategies as st

from corpus import documents, text_ranges
from pipelines import sources

EXAMPLES = int(os.environ.get("TINYBERT_FUZZ_EXAMPLES", "150"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

words = st.text(st.sampled_from("abc xyz.é東\t"), min_size=1, max_size=12).filter(lambda text: text.strip())
lines = st.one_of(
    words.map(lambda text: text.encode("utf-8")),  # a sentence
    st.sampled_from([b"", b" ", b"\t ", "\u00a0".encode("utf-8")]),  # blank lines (a no-break space is blank too)
    st.sampled_from([b"bad \xff line", b"\xc3", b"\xe6\x9d"]),  # not UTF-8
)
line_ends = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def texts(draw):
    pieces = draw(st.lists(st.tuples(lines, line_ends), max_size=30))
    data = b"".join(line + end for line, end in pieces)
    if pieces and draw(st.booleans()):
        data = data[:-1] if not data.endswith(b"\r\n") else data[:-2]  # no end after the last line
    return data


def _whole(data):
    return list(documents.iter_text_documents(sources.iter_lines(io.BytesIO(data))))


def _by_ranges(data, split_bytes):
    items = []
    handle = io.BytesIO(data)
    for start, end in text_ranges.plan_ranges(len(data), split_bytes):
        items.extend(text_ranges.iter_range_documents(handle, start, end, iter_lines=sources.iter_lines))
    return items


def _as_rows(items):
    return sorted((type(item).__name__, item.offset, repr(getattr(item, "lines", None) or item.raw))
                  for item in items)


@PROPERTY
@given(data=texts(), split_bytes=st.integers(1, 80))
def test_ranges_of_any_size_give_the_whole_files_documents_once(data, split_bytes):
    whole = _whole(data)
    ranged = _by_ranges(data, split_bytes)
    assert _as_rows(ranged) == _as_rows(whole)
    assert len({(type(i).__name__, i.offset) for i in ranged}) == len(ranged)  # no duplicates


@PROPERTY
@given(data=texts(), position=st.integers(0, 200))
def test_next_line_start_is_where_the_reader_starts_a_line(data, position):
    starts = {offset for offset, _ in sources.iter_lines(io.BytesIO(data))}
    found = text_ranges.next_line_start(io.BytesIO(data), position)
    expected = min([s for s in starts if s >= position], default=None)
    if expected is None:
        assert found >= min(position, len(data)) and not [s for s in starts if s >= found]
    else:
        assert found == expected


def test_ranges_smaller_than_a_document_and_long_lines_before_a_range():
    long_line = b"x" * 10000
    data = b"One.\r\nTwo.\r\n\r\n" + long_line + b"\n" + long_line + b"\n\nThree.\rFour.\r\r" + b"\xff\n\nFive."
    whole = _whole(data)
    assert [d.offset for d in whole if isinstance(d, documents.TextDocument)] == [0, 14, 20017, 20034]
    for split_bytes in (1, 3, 7, 100, 4097, 10001, len(data)):
        assert _as_rows(_by_ranges(data, split_bytes)) == _as_rows(whole), split_bytes


def test_plan_ranges_covers_the_file():
    assert text_ranges.plan_ranges(0, 10) == [(0, 0)]
    assert text_ranges.plan_ranges(10, 10) == [(0, 10)]
    assert text_ranges.plan_ranges(25, 10) == [(0, 10), (10, 20), (20, 25)]
