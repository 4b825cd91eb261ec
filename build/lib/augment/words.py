"""Which words TinyBERT's augmentation may replace, and how a sentence splits into them.

The reference (`data_augmentation.py`) splits with BERT's BasicTokenizer and keeps a word as a candidate when it is
made of letters a-z only (after lower-casing) and is not in its stop list. transformers 5 no longer ships the
BasicTokenizer; the fast tokenizer's normalizer (clean text, CJK spacing, accent stripping and lower-casing as the
model is configured) followed by its pre-tokenizer (whitespace and punctuation split) yields the same words, and is
what `WordSplitter` uses.

Two word rules decide which words are candidates (`WordRule`):
- `reference`: the reference's, for English: letters a-z only after lower-casing, not an English stop word.
- `unicode`: for any language: a word of Unicode letters (general category L*, with combining marks M* after a
  letter, as Indic and Thai vowel signs are), never digits, punctuation or symbols; stop words as given (none by
  default). CJK ideographs are one word each after BERT's normalizer, so each is a candidate of its own.
"""

import dataclasses
import re
import unicodedata
from typing import FrozenSet, Iterable, List, Optional, Sequence, Tuple

from tokenizers import PreTokenizedString

# The English stop list the reference script uses (NLTK's list plus "'s" and "'re"), as a set for lookups.
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him his
himself she she's her hers herself it it's its itself they them their theirs themselves this that that'll these
those am is are was were be been being have has had having do does did doing a an the and but if or because as
until while of at by for with about against between into through during before after above below to from up down
in out on off over under again further then once here there all any both each few more most other some such no nor
not only own same so than too very s t can will just don don't should should've now d ll m o re ve y ain aren
aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't
mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn wouldn't 's 're
""".split())

_NON_LETTER = re.compile(r"[^a-z]")


def is_candidate_word(word: str) -> bool:
    """True when the reference would look for replacements of `word`: letters a-z only, not a stop word."""
    lowered = word.lower()
    return _NON_LETTER.search(lowered) is None and lowered not in STOP_WORDS


WORD_RULES = ("reference", "unicode")


def is_letter_word(word: str) -> bool:
    """True for a word of Unicode letters in any script: a letter first, then letters or combining marks."""
    if not word or not unicodedata.category(word[0]).startswith("L"):
        return False
    return all(unicodedata.category(char)[0] in "LM" for char in word)


@dataclasses.dataclass(frozen=True)
class WordRule:
    """Which words are candidates: `name` is one of WORD_RULES; `stop_words` are compared lower-cased.

    Build it with `WordRule.create`, which gives each rule its default stop list.
    """
    name: str
    stop_words: FrozenSet[str]

    @classmethod
    def create(cls, name: str = "reference", stop_words: Optional[Iterable[str]] = None) -> "WordRule":
        """The rule `name` with `stop_words` (None: the reference's English list for `reference`, none for `unicode`).

        Raises:
          ValueError: an unknown rule name.
        """
        if name not in WORD_RULES:
            raise ValueError(f"word rule must be one of {WORD_RULES}, got {name!r}")
        if stop_words is None:
            words = STOP_WORDS if name == "reference" else frozenset()
        else:
            words = frozenset(word.lower() for word in stop_words)
        return cls(name, words)

    @property
    def keeps_spacing(self) -> bool:
        """Augmented text keeps the source's spacing (unicode) rather than joining words by spaces (reference)."""
        return self.name == "unicode"

    def is_candidate(self, word: str) -> bool:
        lowered = word.lower()
        if lowered in self.stop_words:
            return False
        if self.name == "reference":
            return _NON_LETTER.search(lowered) is None
        return is_letter_word(word)


class WordSplitter:
    """BERT's basic tokenization, from a Hugging Face fast tokenizer's normalizer and pre-tokenizer.

    Args:
      backend: a `tokenizers.Tokenizer` (e.g. `PreTrainedTokenizerFast.backend_tokenizer`) of a BERT WordPiece model.
    """

    def __init__(self, backend):
        self._normalizer = backend.normalizer
        self._pre_tokenizer = backend.pre_tokenizer
        if self._pre_tokenizer is None:
            raise ValueError("the tokenizer has no pre-tokenizer; a BERT WordPiece tokenizer is required")

    def split(self, text: str) -> List[str]:
        """The words of `text`, as BERT's BasicTokenizer would give them."""
        normalized = self._normalizer.normalize_str(text) if self._normalizer is not None else text
        return [word for word, _ in self._pre_tokenizer.pre_tokenize_str(normalized)]

    def normalize(self, text: str) -> str:
        """`text` through the tokenizer's normalizer (lower-casing, accent stripping as the model is configured)."""
        return self._normalizer.normalize_str(text) if self._normalizer is not None else text

    def split_with_offsets(self, text: str) -> Tuple[List[str], List[Tuple[int, int]]]:
        """The words of `split(text)` and each word's (start, end) character span in `text` itself."""
        pretokenized = PreTokenizedString(text)
        if self._normalizer is not None:
            pretokenized.normalize(self._normalizer.normalize)
        self._pre_tokenizer.pre_tokenize(pretokenized)
        splits = pretokenized.get_splits(offset_referential="original", offset_type="char")
        return [word for word, _, _ in splits], [tuple(span) for _, span, _ in splits]


def piece_spans(word_ids: Sequence[int]) -> List[Tuple[int, int]]:
    """(first piece, number of pieces) of each word, from a fast tokenizer's `word_ids()` (no special tokens)."""
    spans: List[List[int]] = []
    for position, word in enumerate(word_ids):
        if word is None:
            continue
        while len(spans) <= word:
            spans.append([position, 0])
        spans[word][1] += 1
    return [(start, count) for start, count in spans]
