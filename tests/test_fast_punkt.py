"""corpus.fast_punkt.FastPunkt splits exactly as NLTK's PunktSentenceTokenizer with the same parameters."""

import os
import pathlib
import random
import subprocess
import sys

import pytest
from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

from corpus import documents, wiki
from corpus.fast_punkt import FastPunkt

PIECES = [
    "The", "the", "It's", "it", "acting", "Acting", "well-known", "co-op", "Mr.", "Dr.", "mr.", "U.S.", "U.S", "u.s.",
    "e.g.", "i.e.", "etc.", "No.", "no.", "Fig.", "J.", "A.", "a.", "x.", "1990.", "3.", "3", "1,000.", "-5.", "9%.",
    "(see", "below).", "(", ")", "\"", "\"Quoted.\"", "'", "'single.'", "...", "..", "?", "!", "!!!", "?!", ",", ";",
    ":", "--", "\u2014", "\u201cCurly.\u201d", "\u00abGuillemet.\u00bb", "Ångström.", "é.", "x.y.", "Gen.", "St.",
    "vs.", "approx.", "p.m.", "pp.", "Inc.", "Ltd.", "2nd.", "B.C.", "ex-Gen.", "Lt-Col.", "non-Dr.", "said.",
    "said,", "said:", "[1].", "{x}.",
    "end.)", "end.\"", "again?", "Really!", "Wow!\"", "word.word", "a.b.c.", "ABC.", "abc.def", "\n", "\n\n", "  ",
]


def _pair():
    params = PunktParameters()
    params.abbrev_types = set(documents.ENGLISH_ABBREVIATIONS)
    return PunktSentenceTokenizer(params), FastPunkt(params)


def test_every_paragraph_of_the_real_sample(shared_data):
    nltk_punkt, fast = _pair()
    dump = shared_data / "enwiki-sample-pages-articles.xml.bz2"
    paragraphs = [paragraph for article in wiki.local_articles(str(dump))
                  for paragraph in wiki.wikitext_to_paragraphs(article.wikitext)]
    assert len(paragraphs) > 5000
    assert [fast.tokenize(p) for p in paragraphs] == [nltk_punkt.tokenize(p) for p in paragraphs]


@pytest.mark.parametrize("seed", range(4))
def test_random_soups_of_the_hard_cases(seed):
    nltk_punkt, fast = _pair()
    rng = random.Random(seed)
    texts = []
    for _ in range(3000):
        words = [rng.choice(PIECES) for _ in range(rng.randrange(1, 12))]
        texts.append("".join(word + rng.choice([" ", " ", " ", "", "  ", "\t"]) for word in words))
    assert [fast.tokenize(t) for t in texts] == [nltk_punkt.tokenize(t) for t in texts]


def test_the_rule_answers_most_contexts_and_the_splitter_uses_it():
    """The rule is not dead code: it decides the plain cases itself (NLTK is not asked)."""
    _, fast = _pair()
    asked = []
    original = PunktSentenceTokenizer.text_contains_sentbreak
    try:
        PunktSentenceTokenizer.text_contains_sentbreak = lambda self, text: asked.append(text) or original(self, text)
        sentences = fast.tokenize("He left. The end came in 1990. It rained! Then Mr. Smith left etc. and so on.")
    finally:
        PunktSentenceTokenizer.text_contains_sentbreak = original
    assert sentences == ["He left.", "The end came in 1990.", "It rained!", "Then Mr. Smith left etc. and so on."]
    assert asked == []
    assert isinstance(documents.make_sentence_splitter(), FastPunkt)


def test_refuses_parameters_the_rule_does_not_hold_for():
    params = PunktParameters()
    params.collocations = {("a", "b")}
    with pytest.raises(ValueError):
        FastPunkt(params)


def test_punkt_imports_without_scipy_stats_and_leaves_it_importable():
    """make_sentence_splitter holds scipy.stats back while NLTK imports (0.56 s of a splitting process's start-up),
    splits as before, and a later `import scipy.stats` works."""
    probe = ("import sys\n"
             "from corpus import documents\n"
             "splitter = documents.make_sentence_splitter()\n"
             "print('SENTENCES', documents.split_sentences(splitter, ['Mr. Smith went home. He slept.']))\n"
             "print('STATS_AFTER_SPLITTER', 'scipy.stats' in sys.modules)\n"
             "import scipy.stats\n"
             "print('STATS_IMPORTABLE', callable(scipy.stats.fisher_exact))\n")
    root = pathlib.Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(root)})
    assert result.returncode == 0, result.stderr
    assert "SENTENCES ['Mr. Smith went home.', 'He slept.']" in result.stdout
    assert "STATS_AFTER_SPLITTER False" in result.stdout
    assert "STATS_IMPORTABLE True" in result.stdout
