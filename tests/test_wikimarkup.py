"""corpus/wikimarkup.py (the default wikitext stripper) and CJK sentence ends on every corpus input format."""

import bz2
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from contract.errors import UserError

from corpus import documents, wiki
from pipelines.corpus.config import WIKI_MARKUPS
from pipelines.corpus.read import ReadDocumentsFn, ReadSettings, SplitInputFn
from pipelines.corpus.transforms import SplitSentencesFn
from corpus.wikimarkup import wikitext_to_paragraphs as strip
from tests.test_corpus import FOOTER, HEADER, _page, _pages, _run, _write_xml, tokenizer_dir  # noqa: F401 (fixture)

# (wikitext, expected paragraphs): one construct each.
CASES = {
    "template": ("A {{convert|3|km}} walk.", ["A walk."]),
    "nested templates": ("A{{Infobox|x={{a|{{b}}}}|y=[[Z]]}} b {{{param|{{c}}}}}c.", ["A b c."]),
    "templates closing together": ("A {{a|{{b|{{c}}}}}} b {{{{{1}}}|x}} c.", ["A b c."]),
    "unbalanced closer": ("A }} b.", ["A b."]),
    "unclosed template drops only its braces": ("A {{ b. C.", ["A b. C."]),
    "table": ("Before.\n{| class=\"wikitable\"\n|+ Caption\n! H1 !! H2\n|-\n| a || b\n|}\nAfter.",
              ["Before.", "After."]),
    "nested table": ("X.\n{|\n| a\n{|\n| b\n|}\n| c\n|}\nY.", ["X.", "Y."]),
    "ref with body": ("Fact.<ref name=\"a\">{{cite web|url=x}} Source.</ref> More.", ["Fact. More."]),
    "self-closing ref": ("Fact.<ref name=a /> More.<REF name=\"b\"/>", ["Fact. More."]),
    "dropped tags": ("Area <math>\\pi r^2</math> here.<gallery>\nA.jpg|x\n</gallery>\n<timeline>x</timeline>"
                     "<score>c d</score><syntaxhighlight lang=\"c\">int x;</syntaxhighlight> End.",
                     ["Area here. End."]),
    "formatting tags keep text": ("<b>Bold</b> and <span style=\"x\">span</span> and km<sup>2</sup>.",
                                  ["Bold and span and km2."]),
    "block tags break": ("Line one<br/>line two.<div>Three.</div>", ["Line one", "line two.", "Three."]),
    "nowiki": ("Type <nowiki>''not italic'' &amp;</nowiki> here.<nowiki/> Done.\n\n"
               "Markup <nowiki>{{x}}</nowiki> shown: the paragraph goes.", ["Type ''not italic'' & here. Done."]),
    "comment": ("A <!-- hidden [[x]] {{y}} --> b.<!-- unclosed", ["A b."]),
    "file with nested links": ("[[File:A.jpg|thumb|A [[cat]] on a [[mat|rug]].]]Text.\n"
                               "[[Image:B.png|left]] More.", ["Text. More."]),
    "category and interwiki": ("Text.[[Category:X|y]][[fr:Texte]][[zh-yue:X]][[wikt:word|word]]",
                               ["Text."]),
    "colon title is a link": ("See [[Ali: The Movie]] and [[:Category:Rivers|rivers]].",
                              ["See Ali: The Movie and rivers."]),
    "magic words": ("__TOC__\nText.__NOTOC__", ["Text."]),
    "external links": ("See [http://example.com the site] and [https://x.org] now.",
                       ["See the site and now."]),
    "internal links": ("[[Paris|The city]] and [[Rome]] and [[bus]]es and [[Lyon#History]].",
                       ["The city and Rome and buses and Lyon."]),
    "bold and italic": ("'''Bold''' and ''italic'' and '''''both'''''.", ["Bold and italic and both."]),
    "entities": ("A&nbsp;&amp;&nbsp;B &lt;x&gt; &mdash; &#233;t&#xE9;.", ["A & B <x> — été."]),
    "headings dropped, end a paragraph": ("Intro.\n== History ==\nBody one.\n=== Early ===\nBody two.",
                                          ["Intro.", "Body one.", "Body two."]),
    "skipped sections": ("Text.\n== See also ==\n* [[X]]\nProse.\n=== Sub ===\nGone.\n== Later ==\nKept.",
                         ["Text.", "Kept."]),
    "lists are paragraphs": ("Intro:\n* First item.\n** Nested item.\n# Numbered.\n; Term : Definition.\n: Indent.",
                             ["Intro:", "First item.", "Nested item.", "Numbered.", "Term", "Definition.",
                              "Indent."]),
    "lines join, blank lines split": ("One\ntwo.\n\nThree.", ["One two.", "Three."]),
    "empty brackets and punctuation": ("Paris ({{lang|fr|Paris}}) is big {{efn|x}}, old.", ["Paris is big, old."]),
    "no letters dropped": ("Text.\n\n123 -- 456\n\n{{x}}", ["Text."]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_construct(name):
    wikitext, expected = CASES[name]
    assert strip(wikitext) == expected


def test_unclosed_link_keeps_text_and_stray_closers_go():
    assert strip("A [[b c. D]] e ]] f.") == ["A b c. D e f."]
    assert strip("A [[b c. D.") == ["A b c. D."]


def test_linear_on_pathological_pages():
    """1 MB of nested or unclosed markup: each construct in well under a second (quadratic would take minutes)."""
    pages = [
        "{{" * 250_000 + "}}" * 250_000,
        "{{" * 500_000,
        "[[" * 250_000 + "x" + "]]" * 250_000,
        "[http://x " * 100_000,
        "<ref>" * 200_000,
        "<!--" * 250_000,
        "{|\n" * 330_000,
        "=" * 1_000_000,
        "'" * 1_000_000,
        "<a " * 330_000,
        "(" * 1_000_000 + "word",
    ]
    for page in pages:
        started = time.perf_counter()
        strip(page)
        assert time.perf_counter() - started < 3.0, page[:20]  # a loose bound: only catches super-linear work


def test_same_contract_as_mwparserfromhell_on_plain_article():
    text = "'''Gamma''' is a [[village]]. Its population is small.\n\nThe school closed in 1970."
    assert strip(text) == wiki.wikitext_to_paragraphs(text)


def test_real_dump_has_no_markup_left(shared_data):
    dump = shared_data / "enwiki-sample-pages-articles.xml.bz2"
    paragraphs = []
    for article in wiki.local_articles(str(dump)):
        paragraphs += strip(article.wikitext)
    assert len(paragraphs) > 3000
    text = "\n".join(paragraphs)
    for marker in ("{{", "}}", "[[", "]]", "{|", "|}", "<ref", "</", "&lt;", "&amp;", "__TOC__", "__NOTOC__",
                   "Category:", "File:", "Image:", "thumb|", "'''"):
        assert marker not in text, marker


# -------------------------------------------------------------------------------------------------------------
# CJK sentence ends, every input format (the readers' DoFns called directly: no runner start-up).

ZH_SENTENCES = ["维基百科是一个自由的网络百科全书。", "它由志愿者共同编写！", "你知道它有多少条目吗？",
                "他说：“我明天来。”", "然后就走了……再也没有回来。"]
ZH_PARAGRAPH = "".join(ZH_SENTENCES)


def _sentences(input_format, path, wiki_markup="fast"):
    import os
    size = os.path.getsize(path)
    splitter_fn = SplitSentencesFn()
    splitter_fn.setup()
    settings = ReadSettings(input_format=input_format, split_bytes=1 << 20, wiki_markup=wiki_markup)
    read_fn = ReadDocumentsFn(settings)
    work_items = list(SplitInputFn(settings).process({"path": str(path), "bytes": size, "name": path.name}))
    out = []
    for work in work_items:
        for document in read_fn.process(work):
            assert isinstance(document, tuple), document
            out += [sentences for _, sentences in splitter_fn.process(document)]
    return out


def test_split_cjk():
    assert documents.split_cjk(ZH_PARAGRAPH) == ZH_SENTENCES
    assert documents.split_cjk("全角句号．半角｡Next") == ["全角句号．", "半角｡", "Next"]
    assert documents.split_cjk("Dr. Smith. No CJK.") == ["Dr. Smith. No CJK."]


def test_cjk_sentence_ends_in_text_input(tmp_path):
    path = tmp_path / "zh.txt"
    path.write_text(ZH_PARAGRAPH + "\nAn English line. Not re-split.\n\n单独一句。\n", encoding="utf-8")
    assert _sentences("text", path) == [ZH_SENTENCES + ["An English line. Not re-split."], ["单独一句。"]]


def test_cjk_sentence_ends_in_parquet_input(tmp_path):
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.table({"id": ["1"], "url": ["https://zh.wikipedia.org/wiki?curid=1"], "title": ["维基百科"],
                             "text": [ZH_PARAGRAPH + "\n\n第二段。It ends here. Really."]}), path)
    assert _sentences("wikipedia-parquet", path) == [ZH_SENTENCES + ["第二段。", "It ends here.", "Really."]]


@pytest.mark.parametrize("wiki_markup", WIKI_MARKUPS)
def test_cjk_sentence_ends_in_wikipedia_xml_input(tmp_path, wiki_markup):
    text = "'''维基百科'''是一个[[网络]]百科全书。它由志愿者共同编写！你知道它有多少条目吗？{{lang|en|x}}\n\n" \
           "== 历史 ==\n他说：“我明天来。”然后就走了……再也没有回来。"
    path = tmp_path / "zhwiki-sample.xml.bz2"
    path.write_bytes(bz2.compress(HEADER + _page(1, "维基百科", text) + FOOTER))
    assert _sentences("wikipedia-xml", path, wiki_markup) == [
        ["维基百科是一个网络百科全书。", "它由志愿者共同编写！", "你知道它有多少条目吗？", "他说：“我明天来。”",
         "然后就走了……再也没有回来。"]]


def test_wiki_markup_option_reaches_the_reader_and_manifest(tmp_path, tokenizer_dir):
    path = tmp_path / "dump.xml"
    _write_xml(path, _pages())
    counts = {}
    for markup in WIKI_MARKUPS:
        _, manifest = _run(tmp_path, markup, path, "wikipedia-xml", tokenizer_dir, f"--wiki_markup={markup}",
                           "--epochs=1")
        assert manifest["wiki_markup"] == markup
        counts[markup] = manifest["counts"]["corpus"]["sentences"]
    assert counts["fast"] == counts["mwparserfromhell"] == 18
    with pytest.raises(UserError, match="invalid choice: 'regex'"):
        _run(tmp_path, "bad", path, "wikipedia-xml", tokenizer_dir, "--wiki_markup=regex")
