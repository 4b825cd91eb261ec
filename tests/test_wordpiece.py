"""corpus.wordpiece.CachedWordPiece gives the Rust tokenizer's ids, text by text, on every tokenizer it accepts."""

import gzip
import random
import string

import pytest
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import BPE, WordPiece

from corpus import documents, wiki, wordpiece

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

ADVERSARIAL = [
    "", " ", "\t", "x", "Hello, World!", "  spaced   out  ", "Tab\tseparated\twords", "it's 3.5% (or 4.0%)",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "a-b_c.d/e:f;g<h=i>j?k@l[m\\n]o^p_q`r{s|t}u~v", "C++ and C# vs. F#",
    "unaffable", "UNAFFABLE Unaffable", "running runner runs", "x" * 100, "y" * 101, "ab" * 50 + "c",
    "[SEP]", "[sep] [Mask] [UNK]", "word[MASK]word", "[CLS]x[SEP]", "[ not a token ]", "[", "]",
    "email: someone@example.com, url: https://example.org/a?b=c&d=e#f", "1,000,000.00 and 3/4 and 2^10",
    "naïve café", "co\u2013op \u201cquoted\u201d", "東京 Tokyo", "\x00control\x07chars\x1f", "zero\u200bwidth",
    "line\x0bfeed\x0cform", "del\x7fchar", "cr\rinside", "\ufeffbom", "Ｆｕｌｌｗｉｄｔｈ", "ΑΒΓ αβγ", "🙂 emoji",
]


def _rust(vocab, *, lowercase=True, max_chars=100, prefix="##", specials=SPECIALS, **normalizer):
    tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=max_chars,
                                    continuing_subword_prefix=prefix))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, **normalizer)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.add_special_tokens(specials)
    return tokenizer


def _bert_vocab(shared_data):
    lines = (shared_data / "bert-base-uncased-vocab.txt").read_text(encoding="utf-8").splitlines()
    return {token: index for index, token in enumerate(lines)}


def _assert_same(tokenizer, texts):
    fast = wordpiece.CachedWordPiece.from_backend(tokenizer)
    assert fast is not None
    expected = [encoding.ids for encoding in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
    assert fast.encode_batch(texts) == expected
    assert fast.encode_batch(texts) == expected  # again, from the cache
    return fast


@pytest.mark.parametrize("lowercase", [True, False])
def test_adversarial_text_real_vocab(shared_data, lowercase):
    vocab = _bert_vocab(shared_data)
    rng = random.Random(0)
    soup = ["".join(rng.choice(string.printable) for _ in range(rng.randrange(0, 80))) for _ in range(500)]
    _assert_same(_rust(vocab, lowercase=lowercase), ADVERSARIAL + soup)


def test_small_vocab_unknown_pieces_prefix_and_word_limit():
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "aff", "able", "a", "b", "c", "!", ".",
              "__b", "__c", "__able", "__aff", "run", "__ning", "x", "__x"]
    vocab = {token: index for index, token in enumerate(pieces)}
    texts = ["unaffable", "unaffablez", "zebra", "running!", "abc.cba", "xxxxx", "xxxxxx", "x" * 7, "a b c",
             "UnAffable", "un aff able", "[UNK] un"]
    fast = _assert_same(_rust(vocab, prefix="__", max_chars=6), texts)
    assert fast.encode_batch(["unaffable"]) == [[vocab["[UNK]"]]]  # 9 characters > 6
    assert fast.encode_batch(["xxxxxx"]) == [[vocab["x"]] + [vocab["__x"]] * 5]


def test_real_wikipedia_and_chinese_text(shared_data):
    tokenizer = _rust(_bert_vocab(shared_data))
    texts = [paragraph for article in wiki.local_articles(str(shared_data / "enwiki-sample-pages-articles.xml.bz2"))
             for paragraph in wiki.wikitext_to_paragraphs(article.wikitext)]
    with gzip.open(shared_data / "zh-fortunes-sample.txt.gz", "rt", encoding="utf-8") as handle:
        texts += [line.rstrip("\n") for line, _ in zip(handle, range(2000))]
    assert len(texts) > 5000
    assert sum(text.isascii() for text in texts) > len(texts) // 2  # both ways are exercised
    _assert_same(tokenizer, texts)
    _assert_same(tokenizer, [documents.normalize_text(text) for text in texts[:500]])


def test_the_cache_stays_bounded(monkeypatch, shared_data):
    monkeypatch.setattr(wordpiece, "CACHE_WORDS", 50)
    tokenizer = _rust(_bert_vocab(shared_data))
    rng = random.Random(1)
    texts = [" ".join("".join(rng.choice("abcdefghij") for _ in range(rng.randrange(1, 9))) for _ in range(30))
             for _ in range(100)]
    fast = _assert_same(tokenizer, texts)
    assert 0 < len(fast._cache) <= 50


def test_other_pipelines_are_left_to_rust():
    vocab = {token: index for index, token in enumerate(SPECIALS + ["a", "##b"])}
    assert wordpiece.CachedWordPiece.from_backend(_rust(vocab)) is not None
    sequence = _rust(vocab)
    sequence.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    whitespace = _rust(vocab)
    whitespace.pre_tokenizer = pre_tokenizers.Whitespace()
    truncated = _rust(vocab)
    truncated.enable_truncation(8)
    bpe = Tokenizer(BPE({"a": 0, "b": 1, "[UNK]": 2}, [], unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    for tokenizer in (sequence, whitespace, truncated, bpe):
        assert wordpiece.CachedWordPiece.from_backend(tokenizer) is None
    no_normalizer = _rust(vocab)
    no_normalizer.normalizer = None
    _assert_same(no_normalizer, ["a ab b", "A AB", "a\tb!"])


LATIN = [chr(code) for low, high in wordpiece.LATIN_RANGES for code in range(low, high + 1)]
OTHERS = ["\u0301", "\u0307", "\u03a3", "\u03c3", "\u00df", "\u0130", "\u4e2d", "\u200b", "\x0b", "\x1c", "\x7f",
          "\u2028", "\u3000", "\ufffd", "\x00"]


@pytest.mark.parametrize("settings", [
    {"lowercase": True}, {"lowercase": False}, {"lowercase": True, "strip_accents": False},
    {"lowercase": False, "strip_accents": True}, {"lowercase": True, "clean_text": False},
])
def test_latin_text_in_python_equals_rust(shared_data, settings):
    """Accented letters, NBSP, soft hyphens, dashes, quotes: every character of the Latin ranges, among ASCII and
    characters the Python path must leave to Rust (combining marks, Greek sigma, CJK, controls)."""
    vocab = _bert_vocab(shared_data)
    tokenizer = _rust(vocab, **settings)
    rng = random.Random(7)
    alphabet = LATIN + OTHERS + list(string.ascii_letters + string.digits + " .,-'\t") * 3
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 60))) for _ in range(3000)]
    texts += ["".join(rng.choice(LATIN + [" "] * 40) for _ in range(rng.randrange(1, 60))) for _ in range(3000)]
    texts += ["Café déjà vu — «naïve» Straße", "ÉCOLE\u00a0NORMALE", "co\u00adop", "İstanbul ıi", "e\u0301te",
              "Ǆemal ǅ ǆ", "ﬁ \u00b2 \u00bd", "x\u2026y \u2018q\u2019 \u2013 \u2014", "ΑΣ ας"]
    fast = _assert_same(tokenizer, texts)
    assert len(fast._latin_safe) > 300  # the Latin path took these texts, not only the Rust fallback
