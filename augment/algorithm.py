"""Algorithm 1 of the TinyBERT paper: sample augmented sentences from per-word candidate lists."""

import dataclasses
import hashlib
import random
from typing import List, Mapping, Sequence, Tuple

# Augmented sentences per example, per GLUE task, as the paper and reference use them.
DEFAULT_NUM_AUG = {"CoLA": 30, "MNLI": 10, "MRPC": 30, "SST-2": 20, "STS-B": 30, "QQP": 10, "QNLI": 20, "RTE": 30}


@dataclasses.dataclass(frozen=True)
class AugmentedSentence:
    text: str
    replaced_word_indices: Tuple[int, ...]


def augment_sentence(original: str, words: Sequence[str], candidates: Mapping[int, Sequence[str]], *,
                     num_aug: int, replace_prob: float, rng: random.Random) -> List[AugmentedSentence]:
    """The original sentence, then the distinct sentences of `num_aug` draws, in draw order.

    Each draw walks the candidate words in word order; for each it picks a random candidate, then replaces the word
    with it with probability `replace_prob` (the reference's order of random calls). A drawn sentence is the words
    joined by single spaces; one already produced (or equal to the original text) is not repeated.

    Args:
      original: the sentence as it was in the input (kept verbatim as the first output).
      words: its basic-tokenized words.
      candidates: {word index: non-empty candidate list} for every candidate word.
      num_aug: number of draws (the reference's N).
      replace_prob: probability of replacing a candidate word (the reference's p).
      rng: the example's own random generator.
    """
    produced = [AugmentedSentence(original, ())]
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


def example_rng(seed: int, example_id: str) -> random.Random:
    """The random generator of one example: a function of (seed, example id) only, whatever the runner."""
    digest = hashlib.blake2b(f"{seed}\x00{example_id}".encode("utf-8"), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))
