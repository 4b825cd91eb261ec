"""One example through TinyBERT's augmentation: plan the candidate lookups, then run Algorithm 1.

Planning is split from sampling so that a pipeline can gather the masked-LM queries and GloVe words of many
examples, answer each distinct one once, and hand the answers back.
"""

import dataclasses
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from augment.algorithm import augment_sentence
from contract.seeds import example_rng
from augment.mlm import MaskedQuery, window_queries
from augment.tasks import Example
from augment.words import WordRule, WordSplitter, piece_spans

_REFERENCE_RULE = WordRule.create("reference")


@dataclasses.dataclass(frozen=True)
class FieldPlan:
    """What one text field needs: its words, its WordPieces, and where each candidate word gets candidates.

    Attributes:
      words: basic-tokenized words.
      piece_ids: WordPiece ids of the whole text (no special tokens).
      mlm_words: (word index, piece position) of candidate words that are a single piece.
      glove_words: (word index, word) of candidate words of several pieces.
      offsets: each word's (start, end) character span in the source text when augmented text keeps the source's
        spacing (word rule `unicode`); None when words are joined by spaces (the reference).
    """
    words: Tuple[str, ...]
    piece_ids: Tuple[int, ...]
    mlm_words: Tuple[Tuple[int, int], ...]
    glove_words: Tuple[Tuple[int, str], ...]
    offsets: Optional[Tuple[Tuple[int, int], ...]] = None

    def mlm_queries(self) -> List[MaskedQuery]:
        """The masked-LM queries of the single-piece words whose mask falls inside the 512-token window.

        A word past the window has no candidates (it keeps itself), as in the reference, and costs no query.
        """
        return window_queries(self.piece_ids, [position for _, position in self.mlm_words])


def plan_fields(texts: Sequence[str], *, splitter: WordSplitter, tokenizer,
                word_rule: WordRule = _REFERENCE_RULE) -> List[FieldPlan]:
    """Plans every text of an example with one batched call of the fast tokenizer.

    Args:
      texts: the example's text fields.
      splitter: BERT's basic tokenization for the model.
      tokenizer: the model's Hugging Face fast tokenizer.
      word_rule: which words are candidates, and whether augmented text keeps the source's spacing.
    """
    offsets: List[Optional[Tuple[Tuple[int, int], ...]]] = [None] * len(texts)
    if word_rule.keeps_spacing:
        words = []
        for field_index, text in enumerate(texts):
            field_words, spans = splitter.split_with_offsets(text)
            words.append(field_words)
            offsets[field_index] = tuple(spans)
    else:
        words = [splitter.split(text) for text in texts]
    encodings = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    plans = []
    for field_index, field_words in enumerate(words):
        spans = piece_spans(encodings.word_ids(field_index))
        mlm, glove = [], []
        for word_index, word in enumerate(field_words):
            if not word_rule.is_candidate(word):
                continue
            start, count = spans[word_index]
            if count == 1:
                mlm.append((word_index, start))
            else:
                glove.append((word_index, word))
        plans.append(FieldPlan(tuple(field_words), tuple(encodings["input_ids"][field_index]), tuple(mlm),
                               tuple(glove), offsets[field_index]))
    return plans


def field_candidates(plan: FieldPlan, mlm: Mapping[int, Sequence[str]], glove: Mapping[str, Sequence[str]], *,
                     word_filter: Optional[Callable[[str], bool]] = None) -> Dict[int, List[str]]:
    """{word index: candidates} of a field; a word with no candidates keeps itself, as in the reference.

    Args:
      plan: the field's plan.
      mlm: {piece position: masked-LM candidates} for this field's text.
      glove: {word: GloVe neighbours}.
      word_filter: keep only the candidates it accepts (the unicode rule keeps letter words: a letter word is never
        replaced by punctuation, a digit or a special token); None keeps all, as the reference does.
    """
    def keep(found: Optional[Sequence[str]]) -> List[str]:
        return [w for w in found or () if word_filter(w)] if word_filter is not None else list(found or ())

    result: Dict[int, List[str]] = {}
    for word_index, position in plan.mlm_words:
        result[word_index] = keep(mlm.get(position)) or [plan.words[word_index]]
    for word_index, word in plan.glove_words:
        result[word_index] = keep(glove.get(word)) or [word]
    return result


@dataclasses.dataclass(frozen=True)
class AugmentedExample:
    """One output row: which field changed (None for the original) and every field's text."""
    aug_index: int
    augmented_field: Optional[int]
    texts: Tuple[str, ...]
    replaced_word_indices: Tuple[int, ...]


def augment_example(example: Example, plans: Sequence[FieldPlan], candidates: Sequence[Mapping[int, Sequence[str]]],
                    *, num_aug: int, replace_prob: float, seed: int) -> List[AugmentedExample]:
    """The original example, then the augmentations of each text field in order, the other fields left original.

    The reference, for a pair task, leaves the first field at its last augmentation while it augments the second;
    here the other fields of an augmented row always hold their original text, and the original row appears once.
    One random generator per example, seeded from (seed, example id), is used for the fields in order.
    """
    rng = example_rng(seed, example.example_id)
    rows = [AugmentedExample(0, None, tuple(example.texts), ())]
    for field_index, (plan, field_cands) in enumerate(zip(plans, candidates)):
        sentences = augment_sentence(example.texts[field_index], plan.words, field_cands, num_aug=num_aug,
                                     replace_prob=replace_prob, rng=rng, offsets=plan.offsets)
        for sentence in sentences[1:]:
            texts = list(example.texts)
            texts[field_index] = sentence.text
            rows.append(AugmentedExample(len(rows), field_index, tuple(texts), sentence.replaced_word_indices))
    return rows
