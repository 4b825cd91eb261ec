"""Training instances for general distillation, made from tokenized documents. No Beam, no I/O.

The algorithm follows the TinyBERT reference `pregenerate_training_data.py` (itself Google BERT's
`create_pretraining_data.py`), draw for draw on an explicit `random.Random`:

* per document, a target length: `max_seq_len - 3`, or with probability `short_seq_prob` a random length in
  [2, max_seq_len - 3];
* sentences are gathered into a chunk until the chunk reaches the target length (or the document ends); a random
  number of the chunk's sentences (at least one) form segment A;
* B is the rest of the chunk, or with probability 0.5 (always when the chunk holds a single sentence) a "random
  next" B: consecutive sentences from a random start in another document, drawn with probability proportional to
  its sentence count; the chunk's unused sentences are then put back for the next instance;
* the pair is trimmed to fit, one token at a time from the longer segment, from its front or back at random;
* optional masked-LM predictions (whole-word or per-WordPiece), 80% [MASK] / 10% kept / 10% random token.

Two deliberate differences from the reference, both documented in docs/corpus.md:
* `masked_lm_prob == 0` masks nothing (the reference still masks one token per instance through `max(1, ...)`,
  which TinyBERT's "no [MASK]" setting does not intend);
* the other documents for a random-next B come from the caller's bucket of documents, not the whole corpus.

`create_single_segment_instances` is the optional packing mode: `[CLS] sentences... [SEP]`, no B.
"""

import bisect
import dataclasses
import itertools
import random
from typing import AbstractSet, List, Optional, Sequence, Union

Sentence = Sequence[int]


class PackedDocument:
    """A tokenized document as one flat list of token ids and the end offset of each sentence.

    Cutting instances is then slicing: segment A, an actual-next B and a random-next B are each one contiguous
    run of a document's tokens. `len()` is the number of sentences, as for a list of sentences.
    """
    __slots__ = ("ids", "ends")

    def __init__(self, ids: Sequence[int], ends: List[int]):
        self.ids = ids  # every sentence's ids back to back: a list, or an `array.array` (compact, sliced by memcpy)
        self.ends = ends  # ends[i]: offset just past sentence i; non-decreasing, ends[-1] == len(ids)

    @classmethod
    def from_sentences(cls, sentences: Sequence[Sentence]) -> "PackedDocument":
        ids: List[int] = []
        ends: List[int] = []
        for sentence in sentences:
            ids.extend(sentence)
            ends.append(len(ids))
        return cls(ids, ends)

    def __len__(self) -> int:
        return len(self.ends)

    def start(self, sentence: int) -> int:
        """Offset of the first token of `sentence`."""
        return self.ends[sentence - 1] if sentence else 0


Document = Union[PackedDocument, Sequence[Sentence]]


def _packed(document: Document) -> PackedDocument:
    return document if isinstance(document, PackedDocument) else PackedDocument.from_sentences(document)


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
    """Token ids the algorithm needs from the vocabulary."""
    cls_id: int
    sep_id: int
    mask_id: int
    filler_id: int  # stands in for an empty segment, as the reference's "." does
    vocab_size: int


@dataclasses.dataclass(frozen=True)
class InstanceConfig:
    max_seq_len: int = 128
    short_seq_prob: float = 0.1
    masked_lm_prob: float = 0.0
    max_predictions_per_seq: int = 20
    whole_word_mask: bool = False

    def __post_init__(self):
        if self.max_seq_len < 5:
            raise ValueError(f"max_seq_len must be at least 5, got {self.max_seq_len}")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ValueError(f"short_seq_prob must be in [0, 1], got {self.short_seq_prob}")
        if not 0.0 <= self.masked_lm_prob <= 1.0:
            raise ValueError(f"masked_lm_prob must be in [0, 1], got {self.masked_lm_prob}")


@dataclasses.dataclass
class Instance:
    input_ids: List[int]  # [CLS] A [SEP] B [SEP], or [CLS] A [SEP]; masked tokens already replaced
    segment_a_len: int  # len("[CLS] A [SEP]"): token_type_ids are 0 for these, 1 after
    is_random_next: bool
    masked_lm_positions: List[int]
    masked_lm_labels: List[int]


def target_length(rng: random.Random, *, max_num_tokens: int, short_seq_prob: float) -> int:
    """The reference's per-document target: usually `max_num_tokens`, sometimes a random shorter one."""
    if rng.random() < short_seq_prob:
        return rng.randint(2, max_num_tokens)
    return max_num_tokens


def truncate_seq_pair(tokens_a: List[int], tokens_b: List[int], max_num_tokens: int, rng: random.Random) -> None:
    """Trims the longer of the two lists in place, a token at a time from the front or back, until both fit."""
    # The reference deletes one token per draw; count the cuts first and slice once (same draws, same result).
    len_a, len_b = len(tokens_a), len(tokens_b)
    front_a = front_b = 0
    while len_a + len_b > max_num_tokens:
        if len_a > len_b:
            if rng.random() < 0.5:
                front_a += 1
            len_a -= 1
        else:
            if rng.random() < 0.5:
                front_b += 1
            len_b -= 1
    if len_a < len(tokens_a):
        tokens_a[:] = tokens_a[front_a:front_a + len_a]
    if len_b < len(tokens_b):
        tokens_b[:] = tokens_b[front_b:front_b + len_b]


def sample_other_document(sentence_counts: Sequence[int], index: int, rng: random.Random) -> int:
    """Index of a document other than `index`, drawn with probability proportional to its sentence count.

    Args:
      sentence_counts: sentences per document of the bucket; at least two documents.
    """
    return _draw_other_document(cumulative_counts(sentence_counts), index, rng)


def cumulative_counts(sentence_counts: Sequence[int]) -> List[int]:
    """Running totals of the sentence counts of a bucket's documents, which random-next draws bisect."""
    return list(itertools.accumulate(sentence_counts))


def _draw_other_document(cumulative: Sequence[int], index: int, rng: random.Random) -> int:
    total = cumulative[-1]
    # Draw a sentence position among all sentences but those of `index`, by starting just after it and wrapping.
    start = cumulative[index]
    own = start - (cumulative[index - 1] if index else 0)
    position = rng.randrange(start, start + total - own) % total
    return bisect.bisect_right(cumulative, position)


def mask_tokens(input_ids: List[int], rng: random.Random, *, config: InstanceConfig, special: SpecialTokens,
                continuation_ids: AbstractSet[int]):
    """Masked-LM predictions, in place on `input_ids`. Returns (positions, labels), sorted by position."""
    if config.masked_lm_prob <= 0.0:
        return [], []
    candidates: List[List[int]] = []
    for position, token in enumerate(input_ids):
        if token == special.cls_id or token == special.sep_id:
            continue
        if config.whole_word_mask and candidates and token in continuation_ids:
            candidates[-1].append(position)
        else:
            candidates.append([position])
    num_to_mask = min(config.max_predictions_per_seq, max(1, int(round(len(input_ids) * config.masked_lm_prob))))
    rng.shuffle(candidates)
    labels = {}
    for group in candidates:
        if len(labels) >= num_to_mask:
            break
        if len(labels) + len(group) > num_to_mask:
            continue
        for position in group:
            labels[position] = input_ids[position]
            if rng.random() < 0.8:
                input_ids[position] = special.mask_id
            elif rng.random() >= 0.5:
                input_ids[position] = rng.randrange(special.vocab_size)
    positions = sorted(labels)
    return positions, [labels[p] for p in positions]


def create_pair_instances(documents: Sequence[Document], index: int, rng: random.Random, *,
                          config: InstanceConfig, special: SpecialTokens,
                          continuation_ids: AbstractSet[int] = frozenset(),
                          cumulative: Optional[Sequence[int]] = None) -> List[Instance]:
    """`[CLS] A [SEP] B [SEP]` instances from documents[index]; random-next B from the other documents.

    Args:
      documents: the bucket: documents, each a `PackedDocument` or a list of non-empty sentences of token ids (no
        special tokens). Packed ones are faster: a list is packed each time the call touches it.
      index: which document to cut into instances.
      rng: the only source of randomness.
      continuation_ids: ids of "##" pieces, for whole-word masking.
      cumulative: `cumulative_counts` of the documents' sentence counts; pass it when cutting every document of a
        bucket, so that it is computed once per bucket rather than once per document.

    Returns:
      The document's instances, in document order. With a single document in the bucket, a random-next B comes
      from the same document (the reference refuses such a corpus; a bucket of one is the caller's to avoid).
    """
    document = _packed(documents[index])
    ids, ends = document.ids, document.ends
    max_num_tokens = config.max_seq_len - 3
    target = target_length(rng, max_num_tokens=max_num_tokens, short_seq_prob=config.short_seq_prob)
    instances = []
    last_sentence = len(ends) - 1
    chunk_first = chunk_start = 0  # the current chunk is sentences chunk_first..i, from token chunk_start on
    i = 0
    while i <= last_sentence:
        if i == last_sentence or ends[i] - chunk_start >= target:
            chunk_size = i - chunk_first + 1
            a_end = rng.randrange(1, chunk_size) if chunk_size >= 2 else 1
            a_stop = ends[chunk_first + a_end - 1]
            tokens_a = ids[chunk_start:a_stop]
            if chunk_size == 1 or rng.random() < 0.5:
                is_random_next = True
                target_b = target - len(tokens_a)
                if len(documents) > 1:
                    if cumulative is None:
                        cumulative = cumulative_counts([len(doc) for doc in documents])
                    other = _draw_other_document(cumulative, index, rng)
                else:
                    other = index
                other_doc = document if other == index else _packed(documents[other])
                first = rng.randrange(0, len(other_doc))
                # Whole sentences from `first` until B holds at least target_b tokens (at least one sentence).
                b_start = other_doc.start(first)
                last = min(bisect.bisect_left(other_doc.ends, b_start + target_b, first), len(other_doc) - 1)
                tokens_b = other_doc.ids[b_start:other_doc.ends[last]]
                i -= chunk_size - a_end  # the chunk's B sentences were not used: start the next chunk with them
            else:
                is_random_next = False
                tokens_b = ids[a_stop:ends[i]]
            tokens_a = tokens_a or [special.filler_id]
            tokens_b = tokens_b or [special.filler_id]
            truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
            input_ids = [special.cls_id, *tokens_a, special.sep_id, *tokens_b, special.sep_id]
            positions, labels = mask_tokens(input_ids, rng, config=config, special=special,
                                            continuation_ids=continuation_ids)
            instances.append(Instance(input_ids, len(tokens_a) + 2, is_random_next, positions, labels))
            chunk_first = i + 1
            chunk_start = document.start(chunk_first)
        i += 1
    return instances


def create_single_segment_instances(document: Document, rng: random.Random, *, config: InstanceConfig,
                                    special: SpecialTokens,
                                    continuation_ids: AbstractSet[int] = frozenset()) -> List[Instance]:
    """`[CLS] sentences... [SEP]` instances: whole sentences packed up to the document's target length.

    A chunk that ends past `max_seq_len - 2` tokens (a long last sentence) is cut into consecutive windows, so no
    token is dropped. No random-next, `segment_a_len == len(input_ids)`.
    """
    document = _packed(document)
    ids, ends = document.ids, document.ends
    max_num_tokens = config.max_seq_len - 2
    target = target_length(rng, max_num_tokens=max_num_tokens, short_seq_prob=config.short_seq_prob)
    instances = []
    chunk_start = 0
    for position, end in enumerate(ends):
        if position == len(ends) - 1 or end - chunk_start >= target:
            for start in range(chunk_start, end, max_num_tokens):
                input_ids = [special.cls_id, *ids[start:min(start + max_num_tokens, end)], special.sep_id]
                positions, labels = mask_tokens(input_ids, rng, config=config, special=special,
                                                continuation_ids=continuation_ids)
                instances.append(Instance(input_ids, len(input_ids), False, positions, labels))
            chunk_start = end
    return instances
