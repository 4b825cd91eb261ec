"""BERT WordPiece ids of ASCII and Latin sentences in Python with a word cache; the Rust tokenizer for the rest.

`CachedWordPiece(backend)` wraps a `tokenizers.Tokenizer` (truncation and padding off) whose pipeline is BERT's:
`BertNormalizer` (or none), `BertPreTokenizer`, `WordPiece`. `encode_batch(texts)` gives, for every text, the ids
`backend.encode_batch_fast(texts, add_special_tokens=False)` gives, faster on English text:

* a text made only of printable ASCII and tabs, holding no added token, is tokenized here. On such text BERT's
  normalizer does nothing but lowercase (when the tokenizer lowercases): no control character to drop, no accent to
  strip, no CJK character to space out; its pre-tokenizer splits at whitespace and makes every ASCII punctuation
  mark (`!` to `/`, `:` to `@`, `[` to `` ` ``, `{` to `~`) a word of its own, so the words are the runs of letters
  and digits and the single other characters. Each word's pieces come from a dict of the words seen before
  (English is Zipfian: the ASCII sentences of the 106-article Wikipedia sample hold 474k words but only 30k
  distinct ones), else from the greedy longest-match-first WordPiece of the vocabulary (`##` continuation, `[UNK]`
  for a word longer than max_input_chars_per_word or with a part no piece matches), as the Rust model cuts it;
* a text whose other characters are all Latin (LATIN_RANGES: accented letters, NBSP, soft hyphen, guillemets,
  dashes, curly quotes, ellipsis) takes the same way after one `str.translate` that does the normalizer's and the
  pre-tokenizer's work: each such character is mapped to what the Rust normalizer makes of it (`é` -> `e` where
  accents are stripped, NBSP -> space, soft hyphen -> nothing), spaced out where the Rust pre-tokenizer makes it a
  word of its own (`—`, `«`), and ASCII punctuation is spaced out too; then `str.split`. A character enters the
  table only after the Rust tokenizer has shown, for it alone and between letters, that it treats it character
  by character and cuts it as the table says (`_latin_mapping`); combining marks, Greek (final sigma), CJK and
  control characters never qualify;
* any other text (CJK, Greek, Cyrillic, combining marks, control characters, an added token such as `[SEP]` in
  the text) goes to the Rust tokenizer, all of a batch's such texts in one `encode_batch_fast` call.

The Rust tokenizer is the reference: `from_backend` returns None for any other pipeline (another normalizer, a
pre-tokenizer sequence, BPE, truncation), and tests/test_wordpiece.py holds both equal on adversarial text and on
the real Wikipedia sample. The cache holds at most CACHE_WORDS words and is emptied when full, so memory stays flat
whatever the corpus (its frequent words come back within a few sentences).

Why: on 2 cores the Rust tokenizer's `encode_batch_fast` took 4 s of a 6.8 s corpus run on 25 MB of Wikipedia text
(it builds a full Encoding, with offsets and token strings, for every sentence, on both cores). On the same 25 MB
(91% of it in printable-ASCII sentences), this takes 1.75 s on one core against the Rust tokenizer's 4.5 s on two,
the same ids for every sentence; the whole run went from 6.8 s to 5.3 s with byte-identical shards. The Latin
path takes 88% of that text's non-ASCII sentences: on them, 0.19 s of CPU against the Rust tokenizer's 0.49 s (on
two cores, 0.25 s of wall time); for accented languages, where most sentences are not ASCII, this is the main path.
"""

import itertools
import json
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

CACHE_WORDS = 1 << 17
# Non-ASCII characters the Python path may take, each once the Rust tokenizer has shown what it makes of it:
# Latin-1 Supplement, Latin Extended-A and -B (accented letters, NBSP, soft hyphen, guillemets, degree and the like),
# and the General Punctuation dashes, quotes, bullets and ellipsis.
LATIN_RANGES = ((0x00A0, 0x024F), (0x2010, 0x2027))
_PRINTABLE_ASCII = re.compile(r"[\t -~]*")
_WORDS_LOWER = re.compile(r"[a-z0-9]+|[^\ta-z0-9 ]")
_WORDS_CASED = re.compile(r"[A-Za-z0-9]+|[^\tA-Za-z0-9 ]")


class CachedWordPiece:
    """Exact BERT WordPiece ids with a Python fast path for ASCII and Latin texts; see the module docstring."""

    def __init__(self, backend: Any, *, lowercase: bool, vocab: Dict[str, int], unk_id: int, prefix: str,
                 max_word_chars: int, added: Sequence[str]):
        self._backend = backend
        self._lowercase = lowercase
        self._words = _WORDS_LOWER if lowercase else _WORDS_CASED
        self._vocab = vocab
        self._unk = (unk_id,)
        self._prefix = prefix
        self._max_word_chars = max_word_chars
        # Added tokens are matched in the raw text (and, where normalized, in the lowercased text) before anything
        # else: a text that may hold one is the Rust tokenizer's. Case-insensitive covers both.
        self._added = re.compile("|".join(re.escape(token) for token in added), re.IGNORECASE) if added else None
        starts = {token[0] for token in added}
        start = starts.pop() if len(starts) == 1 else None
        self._added_start = start if start is not None and start.lower() == start.upper() else None
        self._cache: Dict[str, Tuple[int, ...]] = {}
        # The Latin path: a `str.translate` table that does what the normalizer and pre-tokenizer do (ASCII
        # punctuation spaced out as a word of its own, tabs to spaces, A-Z lowercased where the tokenizer
        # lowercases), grown one checked Latin character at a time.
        self._latin_table: Dict[int, str] = {ord("\t"): " "}
        for code in range(33, 127):
            char = chr(code)
            if not char.isalnum():
                self._latin_table[code] = " " + char + " "
            elif lowercase and char.isupper():
                self._latin_table[code] = char.lower()
        self._latin_safe = set(chr(code) for code in range(32, 127)) | {"\t"}
        self._latin_unsafe: set = set()

    @classmethod
    def from_backend(cls, backend: Any) -> Optional["CachedWordPiece"]:
        """The fast path for `backend`, or None where its pipeline is not BERT's (see the module docstring)."""
        try:
            spec = json.loads(backend.to_str())
        except (ValueError, AttributeError):
            return None
        normalizer = spec.get("normalizer")
        if normalizer is None:
            lowercase = False
        elif normalizer.get("type") == "BertNormalizer" and isinstance(normalizer.get("lowercase"), bool):
            lowercase = normalizer["lowercase"]
        else:
            return None
        if (spec.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer":
            return None
        if spec.get("truncation") is not None or spec.get("padding") is not None:
            return None
        model = spec.get("model") or {}
        vocab = model.get("vocab")
        if model.get("type") != "WordPiece" or not isinstance(vocab, dict) or model.get("unk_token") not in vocab:
            return None
        prefix = model.get("continuing_subword_prefix")
        max_word_chars = model.get("max_input_chars_per_word")
        if not isinstance(prefix, str) or not isinstance(max_word_chars, int):
            return None
        added = [item.get("content") for item in spec.get("added_tokens") or []]
        if not all(isinstance(token, str) and token for token in added):
            return None
        return cls(backend, lowercase=lowercase, vocab=vocab, unk_id=vocab[model["unk_token"]], prefix=prefix,
                   max_word_chars=max_word_chars, added=added)

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        """The ids of each text (no special tokens added), as `encode_batch_fast(texts)[i].ids`."""
        out: List[Optional[List[int]]] = [None] * len(texts)
        rust: List[int] = []
        printable = _PRINTABLE_ASCII.fullmatch
        may_hold_added = self._may_hold_added
        words = self._words.findall
        get = self._cache.get
        chain = itertools.chain.from_iterable
        lowercase = self._lowercase
        for index, text in enumerate(texts):
            if may_hold_added(text):
                rust.append(index)
                continue
            if printable(text) is not None:
                text_words = words(text.lower() if lowercase else text)
            elif self._latin_ok(text):
                text_words = text.translate(self._latin_table).split()
            else:
                rust.append(index)
                continue
            found = list(map(get, text_words))
            if None in found:
                self._fill(text_words, found)
            out[index] = list(chain(found))
        if rust:
            encodings = self._backend.encode_batch_fast([texts[index] for index in rust], add_special_tokens=False)
            for index, encoding in zip(rust, encodings):
                out[index] = encoding.ids
        return out  # type: ignore[return-value]

    def _latin_ok(self, text: str) -> bool:
        """Whether every character of `text` is printable ASCII, a tab or a Latin character whose normalization
        and word splitting the Rust tokenizer has shown to be per character (`_latin_mapping`)."""
        unknown = set(text) - self._latin_safe
        if not unknown:
            return True
        if not unknown.isdisjoint(self._latin_unsafe):
            return False
        for char in unknown:
            mapping = self._latin_mapping(char)
            if mapping is None:
                self._latin_unsafe.add(char)
                return False
            self._latin_table[ord(char)] = mapping
            self._latin_safe.add(char)
        return True

    def _latin_mapping(self, char: str) -> Optional[str]:
        """What `char` becomes in the Python path's `translate` table (its normalized form, " form " where the
        pre-tokenizer makes it a word of its own, " " for whitespace), or None where the Python path cannot
        follow the Rust tokenizer: outside LATIN_RANGES, or where the Rust normalizer treats it differently
        between letters than alone, or the pre-tokenizer cuts it in any other way."""
        if not any(low <= ord(char) <= high for low, high in LATIN_RANGES):
            return None
        normalize = self._backend.normalizer.normalize_str if self._backend.normalizer is not None else str
        alone = normalize(char)
        for left, right in (("a", "b"), ("b", "a"), ("x", "")):
            if normalize(left + char + right) != left + alone + right:
                return None
        pieces = [piece for piece, _ in self._backend.pre_tokenizer.pre_tokenize_str("a" + alone + "b")]
        if alone == "" or pieces == ["a" + alone + "b"]:
            return alone  # dropped, or part of the word around it (a letter)
        if pieces == ["a", "b"] and alone.isspace():
            return " "
        if pieces == ["a", alone, "b"]:
            return " " + alone + " "  # punctuation: a word of its own
        return None

    def _may_hold_added(self, text: str) -> bool:
        if self._added is None:
            return False
        if self._added_start is not None and self._added_start not in text:
            return False  # the usual case: every added token starts with "[" and the text has none
        return self._added.search(text) is not None

    def _fill(self, text_words: List[str], found: List[Optional[Tuple[int, ...]]]) -> None:
        """The pieces of the words the cache does not hold, into `found` and the cache."""
        cache = self._cache
        for position, pieces in enumerate(found):
            if pieces is None:
                word = text_words[position]
                pieces = cache.get(word)  # the same new word twice in one text
                if pieces is None:
                    if len(cache) >= CACHE_WORDS:
                        cache.clear()
                    pieces = cache[word] = self._pieces(word)
                found[position] = pieces

    def _pieces(self, word: str) -> Tuple[int, ...]:
        """Greedy longest-match-first WordPiece of one word, as the Rust model cuts it."""
        if len(word) > self._max_word_chars:
            return self._unk
        vocab = self._vocab
        ids = []
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else self._prefix + word[start:end]
                found = vocab.get(piece)
                if found is not None:
                    ids.append(found)
                    break
                end -= 1
            else:
                return self._unk
            start = end
        return tuple(ids)
