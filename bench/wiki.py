"""Wikitext stripping speed and output, and Wikipedia XML to shards in one step vs WikiExtractor + text in two.

Usage:
  pip install --target /tmp/wx wikiextractor      # only to compare; never a project dependency
  python -m bench.wiki [--wikiextractor_path /tmp/wx] [--repeats 3] [--shared_data ../shared/data]

Input: the real shortened English Wikipedia dump (../shared/data/enwiki-sample-pages-articles.xml.bz2, 206 pages,
6.09 MB of XML, 106 articles). Prints (no assertions; a benchmark):
  1. Per core, in this process, on the same article wikitexts (pages already parsed out of the XML): our stripper
     (`corpus.wikimarkup`), mwparserfromhell (`corpus.wiki.wikitext_to_paragraphs`) and, when importable,
     WikiExtractor's `Extractor.clean_text` (html_safe off, so that entities come out as text like ours; with and
     without its template expansion, the faster one compared). Best of --repeats; MB/s of XML (the dump's XML
     bytes / the stripping time; also MB/s of wikitext), and ratios to ours.
  2. BERT WordPiece tokens kept by each, and a seeded sample of sentences (Punkt + CJK split, as the pipeline
     does) that only one side keeps (ours vs WikiExtractor, or vs mwparserfromhell without it).
  3. Whole runs, each in its own subprocess, wall time including the interpreter start:
     one step: `python -m pipelines.corpus --input_format wikipedia-xml` on the dump;
     two steps: `python -m wikiextractor.WikiExtractor --processes 2 --json` on the dump, then the glue a user
     needs (its paragraphs to the text format: Punkt sentences, one a line, a blank line between documents; run
     as `python -m bench.wiki --glue`, its own process like a user's script, so it pays the NLTK import), then
     `python -m pipelines.corpus --input_format text` on that; the ratio two-step / one-step (with and without
     the glue). Both corpus runs: --epochs 1 --num_shards 4, DirectRunner defaults.
"""

import argparse
import bz2
import json
import os
import pathlib
import random
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_SHARED = pathlib.Path(os.environ.get("TINYBERT_SHARED_DATA") or ROOT.parent / "shared" / "data")


def _articles(dump: pathlib.Path):
    """(xml bytes of the whole dump, [(page id, title, wikitext)] of its articles)."""
    from corpus import wiki
    articles = [(article.page_id, article.title, article.wikitext) for article in wiki.local_articles(str(dump))]
    return len(bz2.decompress(dump.read_bytes())), articles


def _best_time(function, articles, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = [function(page_id, title, text) for page_id, title, text in articles]
        best = min(best, time.perf_counter() - start)
        out = result
    return best, out


def _wikiextractor(path):
    if path:
        sys.path.insert(0, path)
    try:
        from wikiextractor.extract import Extractor
    except ImportError:
        return None
    import logging
    logging.getLogger().setLevel(logging.ERROR)  # its template warnings

    def make(expand):
        return lambda page_id, title, text: Extractor(page_id, 0, "", title, []).clean_text(
            text, expand_templates=expand, html_safe=False)
    return make


def _make_tokenizer(directory: pathlib.Path, shared: pathlib.Path) -> str:
    from pipelines import demo_assets
    tokenizer = demo_assets.wordpiece_tokenizer(vocab=demo_assets.read_vocab(str(shared / "bert-base-uncased-vocab.txt")))
    tokenizer.save_pretrained(str(directory))
    return str(directory)


def _run(command, env=None):
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _glue(extracted: pathlib.Path, out: pathlib.Path) -> int:
    """WikiExtractor's --json files to the text format (Punkt sentences a line, blank line between documents)."""
    from corpus import documents
    splitter = documents.make_sentence_splitter()
    count = 0
    with open(out, "w", encoding="utf-8") as sink:
        for path in sorted(extracted.rglob("wiki_*")):
            for line in path.read_text(encoding="utf-8").splitlines():
                doc = json.loads(line)
                # Its first paragraph is the title; then one paragraph a line.
                paragraphs = [p for p in doc["text"].split("\n") if p.strip()]
                sentences = documents.split_sentences(splitter, paragraphs)
                if sentences:
                    sink.write("\n".join(sentences) + "\n\n")
                    count += 1
    return count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wikiextractor_path", default=None, help="a directory where wikiextractor is installed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shared_data", default=str(DEFAULT_SHARED))
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--glue", nargs=2, metavar=("EXTRACTED_DIR", "TEXT_FILE"),
                        help="only run the two-step run's glue (in its own process, as a user's script would)")
    args = parser.parse_args(argv)
    if args.glue:
        print(_glue(pathlib.Path(args.glue[0]), pathlib.Path(args.glue[1])))
        return
    shared = pathlib.Path(args.shared_data)
    dump = shared / "enwiki-sample-pages-articles.xml.bz2"
    if not dump.exists():
        raise SystemExit(f"error: {dump} not found (pass --shared_data)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from corpus import documents, wiki, wikimarkup

    xml_bytes, articles = _articles(dump)
    wikitext_bytes = sum(len(text.encode("utf-8")) for _, _, text in articles)
    print(f"input: {dump.name}, {xml_bytes / 1e6:.2f} MB of XML, {len(articles)} articles, "
          f"{wikitext_bytes / 1e6:.2f} MB of wikitext; {os.cpu_count()} CPUs; best of {args.repeats}")

    strippers = {"ours (wikimarkup)": lambda i, t, text: wikimarkup.wikitext_to_paragraphs(text),
                 "mwparserfromhell": lambda i, t, text: wiki.wikitext_to_paragraphs(text)}
    make_extractor = _wikiextractor(args.wikiextractor_path)
    if make_extractor is not None:
        strippers["WikiExtractor (templates expanded)"] = make_extractor(True)
        strippers["WikiExtractor (no template expansion)"] = make_extractor(False)
    else:
        print("WikiExtractor: not importable (pass --wikiextractor_path)")
    times, outputs = {}, {}
    for name, function in strippers.items():
        times[name], outputs[name] = _best_time(function, articles, args.repeats)
    ours = "ours (wikimarkup)"
    print("\n1. stripping, one core, in process")
    for name, seconds in times.items():
        print(f"  {name:40s} {seconds:6.2f} s  {xml_bytes / 1e6 / seconds:6.2f} MB/s of XML  "
              f"{wikitext_bytes / 1e6 / seconds:6.2f} MB/s of wikitext  ours is {seconds / times[ours]:5.2f}x faster")
    extractor_names = [name for name in times if name.startswith("WikiExtractor")]
    other = min(extractor_names, key=times.get) if extractor_names else "mwparserfromhell"

    from tokenizers import Tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_dir = _make_tokenizer(pathlib.Path(tmp) / "tokenizer", shared)
        backend = Tokenizer.from_file(str(pathlib.Path(tokenizer_dir) / "tokenizer.json"))
        print("\n2. output")
        splitter = documents.make_sentence_splitter()
        sentence_sets = {}
        for name, pages in outputs.items():
            paragraphs = [p for page in pages for p in page]
            tokens = sum(len(e.ids) for e in backend.encode_batch_fast(paragraphs, add_special_tokens=False))
            sentences = documents.split_sentences(splitter, paragraphs)
            sentence_sets[name] = set(sentences)
            print(f"  {name:40s} {len(paragraphs):6d} paragraphs {len(sentences):7d} sentences {tokens:9d} tokens")
        rng = random.Random(0)
        for left, right in ((ours, other), (other, ours)):
            only = sorted(sentence_sets[left] - sentence_sets[right])
            print(f"  only {left} ({len(only)} sentences), e.g.:")
            for sentence in rng.sample(only, min(args.samples, len(only))):
                print(f"    | {sentence[:160]}")

        print("\n3. whole runs (subprocesses, wall time)")
        python = sys.executable
        flags = [f"--tokenizer={tokenizer_dir}", "--epochs=1", "--num_shards=4", "--overwrite"]
        one = _run([python, "-m", "pipelines.corpus", f"--input={dump}", "--input_format=wikipedia-xml",
                    f"--output={tmp}/one", *flags])
        manifest = json.loads((pathlib.Path(tmp) / "one" / "manifest.json").read_text())
        print(f"  one step  corpus wikipedia-xml             {one:6.1f} s  "
              f"{manifest['counts']['corpus']['documents']} documents, {manifest['counts']['corpus']['tokens']} tokens")
        if make_extractor is None:
            return
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [args.wikiextractor_path, str(ROOT)])))
        extract = _run([python, "-m", "wikiextractor.WikiExtractor", str(dump), "--processes", "2", "--json",
                        "-o", f"{tmp}/extracted", "-q"], env=env)
        glue = _run([python, "-m", "bench.wiki", "--glue", f"{tmp}/extracted", f"{tmp}/extracted.txt"])
        text = _run([python, "-m", "pipelines.corpus", f"--input={tmp}/extracted.txt", "--input_format=text",
                     f"--output={tmp}/two", *flags])
        manifest = json.loads((pathlib.Path(tmp) / "two" / "manifest.json").read_text())
        print(f"  two steps WikiExtractor --processes 2       {extract:6.1f} s\n"
              f"            glue (paragraphs -> sentences)   {glue:6.1f} s  (its own process: NLTK import, Punkt)\n"
              f"            corpus text                      {text:6.1f} s  "
              f"{manifest['counts']['corpus']['documents']} documents, {manifest['counts']['corpus']['tokens']} tokens")
        print(f"  two steps / one step: {(extract + glue + text) / one:.2f}x with the glue, "
              f"{(extract + text) / one:.2f}x without it")


if __name__ == "__main__":
    main()
