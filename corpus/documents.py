"""Documents out of plain-text and Parquet inputs, and sentence splitting. No Beam here.

Sentence splitting uses NLTK's Punkt algorithm without downloading a model: `PunktSentenceTokenizer` with fixed
parameters, namely the untrained defaults plus a fixed list of English abbreviations (`ENGLISH_ABBREVIATIONS`). A
model trained on the run's own corpus would need a global pass over the corpus before any splitting and would make
the output depend on which documents are in the run; fixed parameters split a sentence the same way whatever else
is in the corpus, on every worker, with nothing to install. `corpus.fast_punkt.FastPunkt` is that tokenizer with its
common decisions made by a short rule instead of NLTK's token objects (the same sentences, tested; twice as fast).

Punkt only ends a sentence at `.`, `!` or `?` followed by whitespace, so Chinese and Japanese text (no spaces, its own
sentence-final marks) would come out as one sentence per paragraph. `split_cjk` splits after `。！？｡．` (ideographic
and full-width full stop, full-width `!` and `?`, half-width ideographic full stop), with the closing quotes and
brackets that follow them (`」』”’）】〕》〉"')`); it runs after Punkt on every paragraph, and on every line of text
input (the only re-splitting of text input: a line in the one-sentence-per-line format may still hold several CJK
sentences, while English text is never touched by it). `…`/`……` is not a sentence end: Chinese uses it inside
sentences as often as at their end, and a sentence that ends with it usually goes on to `。`.
"""

import dataclasses
import re
import sys
import unicodedata
from typing import TYPE_CHECKING, Iterable, Iterator, List, Optional, Tuple, Union

if TYPE_CHECKING:
    from nltk.tokenize.punkt import PunktSentenceTokenizer

# Lower-case, without the final period, as Punkt stores them. Common in Wikipedia prose.
ENGLISH_ABBREVIATIONS = frozenset("""
a.d a.m approx apr assn aug ave b.c b.c.e bros c ca capt c.e cf ch co col corp cpl dec dept dr e.g ed eds est etc
feb fig figs fl ft gen gov hon i.e inc jan jr jul jun lt ltd maj mar mr mrs ms mt no nos nov oct op p p.m pp prof
pt rev sen sep sept sgt sr st vol vols vs u.k u.n u.s u.s.a u.s.s.r
""".split())

# A run of CJK sentence ends and the closing quotes/brackets after it.
_CJK_SENTENCE_END = re.compile("[\u3002\uff01\uff1f\uff61\uff0e]+[\u300d\u300f\u201d\u2019\uff09\u3011\u3015\u300b\u3009\"')]*")


def split_cjk(text: str) -> List[str]:
    """`text` cut after each CJK sentence end (see the module docstring); `[text]` when it holds none."""
    if text.isascii() or _CJK_SENTENCE_END.search(text) is None:  # every sentence end it knows is non-ASCII
        return [text]
    pieces = []
    start = 0
    for match in _CJK_SENTENCE_END.finditer(text):
        piece = text[start:match.end()].strip()
        if piece:
            pieces.append(piece)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        pieces.append(tail)
    return pieces


def make_sentence_splitter() -> "PunktSentenceTokenizer":
    """Punkt with fixed parameters (see the module docstring); deterministic and download-free."""
    # Imported here: text input, already split, never needs Punkt.
    _import_punkt()
    from nltk.tokenize.punkt import PunktParameters
    from corpus.fast_punkt import FastPunkt  # Punkt's own sentences, its common decisions made faster
    params = PunktParameters()
    params.abbrev_types = set(ENGLISH_ABBREVIATIONS)
    return FastPunkt(params)


def _import_punkt() -> None:
    """Imports NLTK's Punkt without scipy.stats where neither is imported yet.

    `import nltk` (which any `nltk.*` import runs) imports its collocation metrics, whose Fisher's exact test
    imports `scipy.stats` when it can: 0.56 of the 0.79 s that the import takes, paid by every process that splits
    sentences (the launcher of a DirectRunner run, each worker of a cluster) and by no sentence Punkt splits. NLTK
    guards that import and falls back to a stub that raises NotImplementedError: scipy.stats is held back while
    NLTK imports, so that only `nltk.metrics.association`'s Fisher score in this process is the stub; every other
    use of scipy, including a later `import scipy.stats`, is unchanged."""
    if "nltk" in sys.modules or "scipy.stats" in sys.modules:
        return
    sys.modules["scipy.stats"] = None  # an ImportError for `from scipy.stats import ...` (Python's import rule)
    try:
        import nltk.tokenize.punkt  # noqa: F401
    finally:
        if sys.modules.get("scipy.stats", 0) is None:
            del sys.modules["scipy.stats"]


def normalize_text(text: str) -> str:
    """NFC, whitespace runs to one space, trimmed."""
    # str.split() splits on exactly the characters that re's \s matches (str.isspace), and drops the ends.
    return " ".join(unicodedata.normalize("NFC", text).split())


def split_sentences(splitter: "PunktSentenceTokenizer", paragraphs: List[str]) -> List[str]:
    """Sentences of each paragraph in order (Punkt, then `split_cjk`); a sentence never spans two paragraphs."""
    sentences = []
    for paragraph in paragraphs:
        for sentence in splitter.tokenize(paragraph):
            for piece in split_cjk(normalize_text(sentence)):
                if piece:
                    sentences.append(piece)
    return sentences


@dataclasses.dataclass(frozen=True)
class TextDocument:
    offset: int  # byte offset of its first line
    lines: List[str]  # one sentence per line, normalized


@dataclasses.dataclass(frozen=True)
class BadLine:
    offset: int
    reason: str
    raw: bytes


def text_line(raw: bytes) -> Optional[str]:
    """A line of text input as the reader takes it: normalized ("" for a blank line), or None where it is not UTF-8."""
    try:
        return normalize_text(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None


def iter_text_documents(lines: Iterable[Tuple[int, bytes]], *, continues_document: bool = False,
                        end: Optional[int] = None) -> Iterator[Union[TextDocument, BadLine]]:
    """Documents of the reference's text format: one sentence per line, a blank line between documents.

    Args:
      lines: (byte offset, line without its end) pairs, e.g. `pipelines.sources.iter_lines` (which reads `\\n`,
        `\\r\\n` and `\\r` ends alike).
      continues_document: the lines start inside a document that began before them (`corpus.text_ranges`): its
        lines up to the next blank line are someone else's and left out (bad lines among them still come out).
      end: read only what starts before this offset: lines at or after it are read just to finish a document that
        started before it; None reads every line.

    Streams line by line. A line that is not UTF-8 comes out as a `BadLine` (the rest of its document is kept).
    A line holding several CJK sentences is cut into them (`split_cjk`).
    """
    lines_of_document: List[str] = []
    first: Optional[int] = None
    inherited = continues_document
    for line_offset, raw in lines:
        if end is not None and line_offset >= end and (inherited or not lines_of_document):
            return  # nothing at or after `end` is ours unless it finishes our open document
        line = text_line(raw)
        if line is None:
            if end is None or line_offset < end:
                yield BadLine(line_offset, "non_utf8_line", raw)
            continue
        if line:
            if inherited:
                continue
            if first is None:
                first = line_offset
            lines_of_document.extend(split_cjk(line))
        elif lines_of_document:
            yield TextDocument(first, lines_of_document)
            lines_of_document, first = [], None
        else:
            inherited = False
    if lines_of_document:
        yield TextDocument(first, lines_of_document)


def document_key(name: str, local_id: Union[int, str]) -> str:
    """A document's stable key: the input's name + its local id.

    `name` is the input path relative to the folder all inputs share (`pipelines.sources.relative_names`): the base
    name for one file or one folder of files (so a moved corpus keeps its keys), more of the path where two inputs
    in different folders share a base name.
    """
    return f"{name}#{local_id}"
