"""python -m pipelines.corpus: readers, transforms and end-to-end runs read back with pyarrow."""

import bz2
import gzip
import json
import shutil

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from contract import layout, schemas
from contract.errors import UserError
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from contract.schemas import instance_schema
from corpus import documents as documents_lib
from corpus import wiki
from pipelines import corpus, sources
from pipelines.corpus.read import ReadDocuments, ReadSettings
from pipelines.corpus.transforms import TokenizeDocumentsFn

HEADER = b"""<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="0.10" xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <dbname>enwiki</dbname>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="10" case="first-letter">Template</namespace>
    </namespaces>
  </siteinfo>
"""
FOOTER = b"</mediawiki>\n"


def _page(page_id, title, text, *, ns=0, redirect=None):
    redirect_xml = f'    <redirect title="{redirect}" />\n' if redirect else ""
    return (f"""  <page>
    <title>{title}</title>
    <ns>{ns}</ns>
    <id>{page_id}</id>
{redirect_xml}    <revision>
      <id>{page_id}000</id>
      <timestamp>2020-01-01T00:00:00Z</timestamp>
      <contributor><username>Someone</username><id>1</id></contributor>
      <model>wikitext</model>
      <format>text/x-wiki</format>
      <text xml:space="preserve">{text}</text>
      <sha1>x</sha1>
    </revision>
  </page>
""").encode("utf-8")


ARTICLE_TEXT = """{{Infobox river|name=Alpha}}
'''Alpha River''' is a [[river]] in [[Examplestan|the north]].&lt;ref&gt;A source.&lt;/ref&gt; It flows past Dr. Smith's farm.
It is 40 km long. Fishing is common in summer.

== Course ==
The river rises in the hills. It ends in a lake.
* First bridge is old.
* Second bridge is new.
{| class="wikitable"
! Year !! Flow
|-
| 1990 || 12
|}
[[File:Alpha.jpg|thumb|A picture.]]
== See also ==
* [[Beta River]]
[[Category:Rivers]]"""

SECOND_TEXT = """The '''Beta River''' is short. It has many fish.

== History ==
Settlers arrived in 1820. They built a mill. The mill burned down in 1901."""

THIRD_TEXT = """'''Gamma''' is a village. Its population is small. The church dates from 1300.
The school closed in 1970. A new road was built later."""


def _pages():
    return [
        _page(1, "Alpha River", ARTICLE_TEXT),
        _page(2, "Beta River", SECOND_TEXT),
        _page(3, "Old name", "#REDIRECT [[Alpha River]]", redirect="Alpha River"),
        _page(4, "Template:Box", "a template", ns=10),
        _page(5, "Empty", "{{stub}}"),
        b"  <page>\n    <title>Broken</title>\n    <ns>0</ns>\n    <id>6</id>\n    <revision><text>x</revision>\n"
        b"  </page>\n",
        _page(7, "Gamma", THIRD_TEXT),
    ]


def _write_xml(path, pages):
    path.write_bytes(HEADER + b"".join(pages) + FOOTER)


def _write_multistream(path, pages, per_stream=2):
    streams = [bz2.compress(HEADER)]
    streams += [bz2.compress(b"".join(pages[i:i + per_stream])) for i in range(0, len(pages), per_stream)]
    streams.append(bz2.compress(FOOTER))
    path.write_bytes(b"".join(streams))


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, shared_data):
    from transformers import BertTokenizerFast
    vocab_dir = tmp_path_factory.mktemp("vocab")
    shutil.copy(shared_data / "bert-base-uncased-vocab.txt", vocab_dir / "vocab.txt")
    # transformers 5 ignores `vocab_file=`; a directory holding vocab.txt loads the real vocabulary.
    tokenizer = BertTokenizerFast.from_pretrained(str(vocab_dir))
    assert len(tokenizer) == 30522
    out = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(str(out))
    return str(out)


TEXT_CORPUS = (
    "The first document starts here.\nIt has a second sentence.\nAnd a third one that is a little longer.\n"
    "Then a fourth.\n\n"
    "Document two is about trains.\nTrains run on rails.\nSome trains are fast.\n\n"
    "Document three has one line only.\n\n"
    "Document four talks about the sea.\nThe sea is wide.\nShips sail on it.\nFish swim in it.\n"
    "Waves break on the shore.\n\n"
).encode("utf-8")


def _write_text_corpus(path, copies=1):
    body = b""
    for copy in range(copies):
        body += TEXT_CORPUS.replace(b"Document", b"Document %d." % copy)
    path.write_bytes(body + b"A \xff\xfe broken line.\nThe document goes on.\n")


def _run(tmp_path, name, input_path, input_format, tokenizer_dir, *extra):
    output = tmp_path / name
    manifest = corpus.run([
        f"--input={input_path}", f"--input_format={input_format}", f"--output={output}",
        f"--tokenizer={tokenizer_dir}", "--num_shards=3", "--epochs=2", "--seed=7", "--docs_per_bucket=3",
        "--max_reject_fraction=0.5", *extra])
    return output, manifest


def _read_all(output, manifest, epoch):
    rows = []
    for entry in manifest["outputs"][f"epoch-{epoch}"]["files"]:
        table = pq.read_table(output / entry["path"])
        assert table.schema.equals(instance_schema(30522))
        assert table.num_rows == entry["rows"]
        rows += table.to_pylist()
    return rows


def _check_rows(rows, *, max_seq_len, mode="pairs"):
    assert rows
    for row in rows:
        ids = row["input_ids"]
        assert len(ids) <= max_seq_len
        assert ids[0] == 101 and ids[-1] == 102 and 101 not in ids[1:] and 0 not in ids
        if mode == "pairs":
            a_len = row["segment_a_len"]
            assert 3 <= a_len < len(ids) - 1
            assert ids[a_len - 1] == 102 and ids[1:-1].count(102) == 1
        else:
            assert row["segment_a_len"] == len(ids) and 102 not in ids[1:-1] and not row["is_random_next"]
        assert row["masked_lm_positions"] == [] and row["masked_lm_labels"] == []
    assert len({row["instance_id"] for row in rows}) == len(rows)


def _rejects(output, manifest):
    rows = []
    for entry in manifest["outputs"][layout.REJECTS_SUBDIR]["files"]:
        rows += pq.read_table(output / entry["path"]).to_pylist()
    return rows


def test_wikitext_to_paragraphs_keeps_sentences_whole():
    paragraphs = wiki.wikitext_to_paragraphs(ARTICLE_TEXT.replace("&lt;", "<").replace("&gt;", ">"))
    assert paragraphs == [
        "Alpha River is a river in the north. It flows past Dr. Smith's farm.",
        "It is 40 km long. Fishing is common in summer.",
        "The river rises in the hills. It ends in a lake.",
        "First bridge is old.",
        "Second bridge is new.",
    ]


def test_iter_pages_splits_multistream_ranges_exactly(tmp_path):
    pages = _pages()
    path = tmp_path / "dump-multistream.xml.bz2"
    _write_multistream(path, pages)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        whole = [page.xml for page in wiki.iter_pages(handle, str(path), 0, size, size)]
        ranges = wiki.plan_ranges(str(path), size, split_bytes=150, open_fn=lambda p: open(p, "rb"))
        assert len(ranges) > 2
        pieces = [page.xml for _, start, end in ranges
                  for page in wiki.iter_pages(handle, str(path), start, end, size)]
    assert [p.strip() for p in whole] == [p.strip() for p in pages]
    assert pieces == whole


def test_read_documents_routes_bad_pages_to_rejects(tmp_path):
    path = tmp_path / "dump.xml"
    _write_xml(path, _pages())
    files = sources.input_files(str(path))
    with TestPipeline() as p:
        read = p | ReadDocuments(files, ReadSettings(input_format="wikipedia-xml", split_bytes=700))
        keys = read.documents | beam.Map(lambda doc: doc[0])
        reasons = read.rejects | beam.Map(lambda row: (row["reason"], row["record"].split("\t")[0].split("\n")[0]))
        assert_that(keys, equal_to(["dump.xml#1", "dump.xml#2", "dump.xml#7"]), label="Documents")
        assert_that(reasons, equal_to([("redirect", "3"), ("not_article", "ns=10"), ("empty_article", "5"),
                                       ("malformed_page", "not well-formed XML: mismatched tag: line 5, column 23")]),
                    label="Rejects")


def test_text_reader_rejects_non_utf8_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"One.\nTwo.\n\nBad \xff line.\nThree.\n")
    files = sources.input_files(str(path))
    with TestPipeline() as p:
        read = p | ReadDocuments(files, ReadSettings(input_format="text", split_bytes=1 << 20))
        assert_that(read.documents, equal_to([("corpus.txt#0", ["One.", "Two."], True),
                                              ("corpus.txt#23", ["Three."], True)]), label="Documents")
        assert_that(read.rejects | beam.Map(lambda r: (r["row_index"], r["reason"], r["record"])),
                    equal_to([(11, "non_utf8_line", "Bad \\xff line.")]), label="Rejects")


def test_text_splits_into_ranges_and_compressed_text_says_once_why_not(tmp_path, caplog):
    from pipelines.corpus.read import SplitInputFn
    plain, packed = tmp_path / "corpus.txt", tmp_path / "corpus.txt.gz"
    _write_text_corpus(plain, copies=2)
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    split = SplitInputFn(ReadSettings(input_format="text", split_bytes=100))
    size = plain.stat().st_size
    ranges = list(split.process({"path": str(plain), "bytes": size, "name": "corpus.txt"}))
    assert [(r["start"], r["end"]) for r in ranges] == [(s, min(s + 100, size)) for s in range(0, size, 100)]
    with caplog.at_level("WARNING"):
        whole = list(split.process({"path": str(packed), "bytes": packed.stat().st_size, "name": "corpus.txt.gz"}))
    assert len(whole) == 1 and whole[0]["compressed"]
    assert [r.getMessage() for r in caplog.records if "cannot be split" in r.getMessage()] == [
        f"{packed}: gzip text cannot be split into --split_bytes ranges (a gzip stream is only read from its "
        "start), so one worker reads all of it; decompress it to spread it over the workers"]
    for path in (plain, packed):
        with TestPipeline() as p:
            documents = (p | ReadDocuments(sources.input_files(str(path)), ReadSettings(
                input_format="text", split_bytes=100))).documents
            assert_that(documents | beam.Map(lambda doc: (doc[0].split("#")[1], doc[1])),
                        equal_to(_documents_of(plain)))


def _documents_of(path):
    with open(path, "rb") as handle:
        return [(str(item.offset), item.lines) for item in
                documents_lib.iter_text_documents(sources.iter_lines(handle))
                if isinstance(item, documents_lib.TextDocument)]


def test_end_to_end_wikipedia_xml(tmp_path, tokenizer_dir):
    path = tmp_path / "enwiki-test-multistream.xml.bz2"
    _write_multistream(path, _pages())
    output, manifest = _run(tmp_path, "out", path, "wikipedia-xml", tokenizer_dir, "--split_bytes=200",
                            "--max_seq_len=24")
    assert manifest["kind"] == "general-distillation"
    assert manifest["tokenizer"]["vocab_size"] == 30522 and manifest["tokenizer"]["do_lower_case"]
    assert manifest["max_seq_len"] == 24 and manifest["instance_mode"] == "pairs" and manifest["epochs"] == 2
    assert sorted(manifest["outputs"]) == ["epoch-0", "epoch-1", "rejects"]
    assert (output / "_SUCCESS").exists()
    counts = manifest["counts"]
    assert counts["rejects"] == {"empty_article": 1, "malformed_page": 1, "not_article": 1, "redirect": 1}
    assert counts["corpus"]["documents"] == 3
    assert counts["corpus"]["sentences"] == 18
    total = 0
    for epoch in range(2):
        rows = _read_all(output, manifest, epoch)
        _check_rows(rows, max_seq_len=24)
        assert manifest["outputs"][f"epoch-{epoch}"]["totals"]["tokens"] == sum(len(r["input_ids"]) for r in rows)
        total += len(rows)
    assert counts["corpus"]["instances"] == total
    rejects = _rejects(output, manifest)
    assert sorted(r["reason"] for r in rejects) == ["empty_article", "malformed_page", "not_article", "redirect"]


def test_end_to_end_text_single_mode_and_rerun_guard(tmp_path, tokenizer_dir, monkeypatch):
    # The DirectRunner as the pipelines run it never tries Prism (a binary downloaded from GitHub at run time, and a
    # beam-temp folder left in the temp directory when that fails): pipelines.runners.
    from apache_beam.runners.portability import prism_runner
    prism_attempts = []

    def no_prism(self, pipeline, options):
        prism_attempts.append(pipeline)
        raise RuntimeError("Prism was tried")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", no_prism)
    path = tmp_path / "corpus.txt"
    _write_text_corpus(path)
    output, manifest = _run(tmp_path, "out", path, "text", tokenizer_dir, "--instance_mode=single",
                            "--max_seq_len=16")
    assert manifest["counts"]["rejects"] == {"non_utf8_line": 1}
    assert manifest["counts"]["corpus"]["documents"] == 5
    assert manifest["counts"]["corpus"]["sentences"] == 14
    for epoch in range(2):
        _check_rows(_read_all(output, manifest, epoch), max_seq_len=16, mode="single")
    assert prism_attempts == []
    with pytest.raises(UserError, match="--overwrite"):
        _run(tmp_path, "out", path, "text", tokenizer_dir)
    with pytest.raises(UserError, match="no input file"):
        _run(tmp_path, "other", tmp_path / "missing*.txt", "text", tokenizer_dir)
    with pytest.raises(UserError, match="cannot load a tokenizer"):
        _run(tmp_path, "other", path, "text", str(tmp_path / "no-such-tokenizer"))
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())


def test_end_to_end_parquet_with_dedup(tmp_path, tokenizer_dir):
    path = tmp_path / "train-00000-of-00001.parquet"
    table = pa.table({
        "id": ["12", "13", "14", "15"],
        "url": ["u"] * 4,
        "title": ["A", "B", "C", "D"],
        "text": [SECOND_TEXT.replace("'''", "").replace("== History ==", "History"), THIRD_TEXT.replace("'''", ""),
                 "", THIRD_TEXT.replace("'''", "")],
    })
    pq.write_table(table, path, row_group_size=2)
    output, manifest = _run(tmp_path, "out", path, "wikipedia-parquet", tokenizer_dir, "--dedup")
    assert manifest["counts"]["rejects"] == {"duplicate_document": 1, "empty_article": 1}
    assert manifest["counts"]["corpus"]["documents"] == 2
    rows = _read_all(output, manifest, 0)
    _check_rows(rows, max_seq_len=128)
    assert {r["instance_id"].split(":")[0] for r in rows} == {"train-00000-of-00001.parquet#12",
                                                              "train-00000-of-00001.parquet#13"}


def test_same_shards_whatever_the_runner_mode_and_range_size(tmp_path, tokenizer_dir):
    path = tmp_path / "corpus.txt"
    _write_text_corpus(path, copies=4)
    processes = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    runs = {
        "one": ["--direct_num_workers=1"],
        "threads": ["--direct_num_workers=2", "--direct_running_mode=multi_threading"],
        "processes": processes,
        # Text files split into byte ranges: ranges smaller than a line, than a document, and of a few documents.
        "split-1": ["--split_bytes=1", *processes],
        "split-37": ["--split_bytes=37"],
        "split-300": ["--split_bytes=300", *processes],
    }
    results = {}
    for name, flags in runs.items():
        output, manifest = _run(tmp_path, name, path, "text", tokenizer_dir, "--max_seq_len=20", *flags)
        files = sorted(p.relative_to(output) for p in output.rglob("*.parquet"))
        results[name] = (files, {f: (output / f).read_bytes() for f in files},
                         json.loads((output / "manifest.json").read_text()))
    files, blobs, manifest = results["one"]
    assert len(files) == 9 and manifest["counts"]["corpus"]["instances"] > 10
    for name in runs:
        assert results[name][0] == files
        assert results[name][1] == blobs, name
        assert results[name][2]["outputs"] == manifest["outputs"] and results[name][2]["counts"] == manifest["counts"]


def test_real_wikipedia_dump(tmp_path, tokenizer_dir, shared_data):
    # The real dump up to its 12th article (templates, tables, references, redirects), cut after a page and
    # closed, so that the test stays quick; the whole dump runs in bench/corpus.py.
    source = bz2.open(shared_data / "enwiki-sample-pages-articles.xml.bz2").read()
    cut = pages = articles = 0
    while articles < 12:
        end = source.index(b"</page>", cut) + len(b"</page>")
        articles += b"<ns>0</ns>" in source[cut:end] and b"<redirect" not in source[cut:end]
        cut, pages = end, pages + 1
    path = tmp_path / "enwiki-sample.xml.bz2"
    path.write_bytes(bz2.compress(source[:cut] + b"\n</mediawiki>\n"))
    output, manifest = _run(tmp_path, "out", path, "wikipedia-xml", tokenizer_dir, "--epochs=1")
    counts = manifest["counts"]
    assert counts["corpus"]["documents"] == 12 and counts["rejects"]["redirect"] >= 10
    assert counts["corpus"]["documents"] + sum(counts["rejects"].values()) == pages
    rows = _read_all(output, manifest, 0)
    _check_rows(rows, max_seq_len=128)
    assert sum(r["is_random_next"] for r in rows) / len(rows) == pytest.approx(0.5, abs=0.1)
    assert sum(len(r["input_ids"]) for r in rows) / len(rows) > 100  # instances are filled up to the target


def _tokenize_documents(fn, documents):
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.timestamp import MIN_TIMESTAMP
    fn.start_bundle()
    results = [*(item for doc in documents for item in fn.process(doc, MIN_TIMESTAMP, GlobalWindow())),
               *fn.finish_bundle()]
    # Main outputs are WindowedValues; tagged ones (rejects, counts) are TaggedOutput(tag, WindowedValue).
    return [(item.tag, item.value.value) if isinstance(item, beam.pvalue.TaggedOutput) else (None, item.value)
            for item in results]


def test_documents_tokenized_as_one_text_equal_sentence_by_sentence(tmp_path, tokenizer_dir, shared_data,
                                                                    monkeypatch):
    """The three ways TokenizeDocumentsFn tokenizes give the same rows (real Wikipedia text: the sample dump's first
    10 articles): the cached WordPiece of a BERT tokenizer; for other tokenizers, a document's sentences joined by
    the separator token; and one call per sentence, where a sentence holds a newline or the join disagrees."""
    from corpus import documents, tokenizer, wordpiece
    splitter = documents.make_sentence_splitter()
    dump = shared_data / "enwiki-sample-pages-articles.xml.bz2"
    docs = []
    for article in wiki.local_articles(str(dump)):
        sentences = documents.split_sentences(splitter, wiki.wikitext_to_paragraphs(article.wikitext))
        if sentences:
            docs.append((f"doc{len(docs)}", sentences))
        if len(docs) == 10:
            break
    docs.append(("odd", ["\u200b\x00", "Plain words.", "\u3000"]))  # sentences without tokens are left out
    docs.append(("empty", ["\u200b"]))  # a document without tokens is rejected
    backend_json = tokenizer.load(tokenizer_dir).to_json()
    cached = TokenizeDocumentsFn(backend_json, "H")
    cached.setup()
    assert cached._fast is not None and cached._joining is None
    monkeypatch.setattr(wordpiece.CachedWordPiece, "from_backend", classmethod(lambda cls, backend: None))
    joined = TokenizeDocumentsFn(backend_json, "H")
    joined.setup()
    assert joined._fast is None and joined._joining is not None
    # The vocab travels one token per line inside the DoFn: the tokenizer rebuilt from it is the same.
    assert joined._tokenizer_parts[1] is not None
    assert joined._tokenizer.to_str() == tokenizer.load(tokenizer_dir).backend.to_str()
    alone = TokenizeDocumentsFn(backend_json, "H")
    alone.setup()
    alone._joining = None
    expected = _tokenize_documents(alone, docs)
    assert sum(len(sentences) for _, sentences in docs) > 2000
    assert _tokenize_documents(joined, docs) == expected
    assert _tokenize_documents(cached, docs) == expected
    assert ("rejects", schemas.reject("empty", 0, "no_tokens", ["\u200b"])) in expected
    # A newline inside a sentence (no reader of this pipeline makes one) must not split it.
    newline = [("nl", ["First line\nstill the first sentence.", "Second."])]
    assert _tokenize_documents(joined, newline) == _tokenize_documents(alone, newline)
    assert _tokenize_documents(cached, newline) == _tokenize_documents(alone, newline)


def test_end_to_end_whole_word_masking_rows(tmp_path, tokenizer_dir):
    """--masked_lm_prob with --whole_word_mask: the optional columns are written and read back consistent."""
    from transformers import AutoTokenizer
    vocab = AutoTokenizer.from_pretrained(tokenizer_dir).get_vocab()
    continuation = {i for token, i in vocab.items() if token.startswith("##")}
    path = tmp_path / "corpus.txt"
    text = ("Unbelievably overwrought melodramas dominated the festival programme.\n"
            "Cinematographers photographed extraordinary landscapes.\n"
            "Reviewers characterised the screenplays as unconvincing.\n\n")
    path.write_bytes(b"".join(text.replace("festival", f"festival {n}").encode() for n in range(6)))
    output, manifest = _run(tmp_path, "out", path, "text", tokenizer_dir, "--masked_lm_prob=0.15",
                            "--whole_word_mask", "--max_predictions_per_seq=6", "--epochs=1", "--max_seq_len=32")
    rows = _read_all(output, manifest, 0)
    assert rows and manifest["whole_word_mask"] is True
    masked = 0
    for row in rows:
        ids, positions, labels = row["input_ids"], row["masked_lm_positions"], row["masked_lm_labels"]
        assert 1 <= len(positions) == len(labels) <= 6 and positions == sorted(positions)
        original = list(ids)
        for position, label in zip(positions, labels):
            assert 0 < position < len(ids) - 1 and position != row["segment_a_len"] - 1
            original[position] = label
            masked += ids[position] == 103
        # Whole words: a masked piece's "##" continuation is masked with it.
        chosen = set(positions)
        for position in positions:
            if position + 1 < len(original) and original[position + 1] in continuation:
                assert position + 1 in chosen
    assert masked / sum(len(r["masked_lm_positions"]) for r in rows) > 0.6  # 80% [MASK], 10% kept, 10% random
