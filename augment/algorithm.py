"""Algorithm 1 of the TinyBERT paper: sample augmented sentences from per-word candidate lists."""

import dataclasses
import random
from typing import List, Mapping, Optional, Sequence, Tuple


@dataclasses.dataclass(frozen=True)
class AugmentedSentence:
    text: str
    replaced_word_indices: Tuple[int, ...]


def augment_sentence(original: str, words: Sequence[str], candidates: Mapping[int, Sequence[str]], *,
                     num_aug: int, replace_prob: float, rng: random.Random,
                     offsets: Optional[Sequence[Tuple[int, int]]] = None) -> List[AugmentedSentence]:
    """The original sentence, then the distinct sentences of `num_aug` draws, in draw order.

    Each draw walks the candidate words in word order; for each it picks a random candidate, then replaces the word
    with it with probability `replace_prob` (the reference's order of random calls).
    Without `offsets` (the reference), a drawn sentence is the words joined by single spaces; one already produced
    (or equal to the original text) is not repeated.
    With `offsets`, a drawn sentence is the original text with each replaced word's span swapped for its candidate,
    so spacing, case and punctuation stay as the source wrote them (no space appears between two CJK characters);
    a draw that equals an earlier one or the original up to whitespace is not repeated.

    Args:
      original: the sentence as it was in the input (kept verbatim as the first output).
      words: its basic-tokenized words.
      candidates: {word index: non-empty candidate list} for every candidate word.
      num_aug: number of draws (the reference's N).
      replace_prob: probability of replacing a candidate word (the reference's p).
      rng: the example's own random generator.
      offsets: each word's (start, end) character span in `original`, or None to join words by spaces.
    """
    produced = [AugmentedSentence(original, ())]
    if offsets is not None:
        return _augment_in_place(original, words, candidates, offsets, produced, num_aug=num_aug,
                                 replace_prob=replace_prob, rng=rng)
    seen = {original}
    order = sorted(candidates)
    for _ in range(num_aug):
        new_words = list(words)
        replaced = []
        for index in order:
            choice = rng.choice(candidates[index])
            if rng.random() < replace_prob:
                new_words[index] = choice
                if choice != words[index]:
                    replaced.append(index)
        text = " ".join(new_words)
        if text not in seen:
            seen.add(text)
            produced.append(AugmentedSentence(text, tuple(replaced)))
    return produced


def _without_whitespace(text: str) -> str:
    return "".join(text.split())


def _augment_in_place(original: str, words: Sequence[str], candidates: Mapping[int, Sequence[str]],
                      offsets: Sequence[Tuple[int, int]], produced: List[AugmentedSentence], *, num_aug: int,
                      replace_prob: float, rng: random.Random) -> List[AugmentedSentence]:
    """augment_sentence with offsets: the same random calls, the replaced spans swapped into the original text."""
    seen = {_without_whitespace(original)}
    order = sorted(candidates)
    for _ in range(num_aug):
        replaced = []
        for index in order:
            choice = rng.choice(candidates[index])
            if rng.random() < replace_prob and choice != words[index]:
                replaced.append((index, choice))
        parts, last = [], 0
        for index, choice in replaced:  # in word order, so spans come left to right
            start, end = offsets[index]
            start = max(start, last)
            parts.append(original[last:start])
            parts.append(choice)
            last = max(end, start)
        parts.append(original[last:])
        text = "".join(parts)
        key = _without_whitespace(text)
        if key not in seen:
            seen.add(key)
            produced.append(AugmentedSentence(text, tuple(index for index, _ in replaced)))
    return produced


