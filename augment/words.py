"""Which words TinyBERT's augmentation may replace, and how a sentence splits into them.

The reference (`data_augmentation.py`) splits with BERT's BasicTokenizer and keeps a word as a candidate when it is
made of letters a-z only (after lower-casing) and is not in its stop list. transformers 5 no longer ships the
BasicTokenizer; the fast tokenizer's normalizer (clean text, CJK spacing, accent stripping and lower-casing as the
model is configured) followed by its pre-tokenizer (whitespace and punctuation split) yields the same words, and is
what `WordSplitter` uses.
"""

import re
from typing import List, Sequence, Tuple

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
