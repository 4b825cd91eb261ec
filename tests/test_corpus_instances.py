"""Instance creation against hand-computed cases (corpus/instances.py, no Beam)."""

import array
import random

import pytest

from corpus import instances as il

CLS, SEP, MASK, DOT = 101, 102, 103, 1012
SPECIAL = il.SpecialTokens(cls_id=CLS, sep_id=SEP, mask_id=MASK, filler_id=DOT, vocab_size=30522)


class ScriptedRandom(random.Random):
    """Returns the scripted draws in order, checking that each is a legal value for the call; shuffle reverses."""

    def __init__(self, draws):
        super().__init__(0)
        self.draws = list(draws)

    def random(self):
        value = self.draws.pop(0)
        assert 0.0 <= value < 1.0
        return value

    def randrange(self, start, stop=None, step=1):
        if stop is None:
            start, stop = 0, start
        value = self.draws.pop(0)
        assert start <= value < stop, (start, value, stop)
        return value

    def randint(self, a, b):
        return self.randrange(a, b + 1)

    def shuffle(self, x):
        x.reverse()


DOC_0 = [[10, 11], [12, 13, 14], [15, 16]]
DOC_1 = [[20, 21, 22], [23]]


def test_actual_next_pair():
    config = il.InstanceConfig(max_seq_len=10)  # 7 tokens besides [CLS] [SEP] [SEP]
    # not short (0.5); the chunk reaches 7 tokens at sentence 3; A = 2 sentences; actual next (0.7 >= 0.5).
    rng = ScriptedRandom([0.5, 2, 0.7])
    made = il.create_pair_instances([DOC_0, DOC_1], 0, rng, config=config, special=SPECIAL)
    assert made == [il.Instance([CLS, 10, 11, 12, 13, 14, SEP, 15, 16, SEP], 7, False, [], [])]
    assert rng.draws == []


def test_random_next_puts_unused_sentences_back():
    config = il.InstanceConfig(max_seq_len=10)
    rng = ScriptedRandom([
        0.05, 4,  # short target: randint(2, 7) -> 4
        1, 0.2,  # chunk [s0, s1] (5 tokens): A = s0; random next
        3, 0,  # sentence position 3 of 5 (counting from after doc 0) -> doc 1; start at its sentence 0
        1, 0.9,  # s1 was put back: chunk [s1, s2]; A = s1; actual next
    ])
    made = il.create_pair_instances([DOC_0, DOC_1], 0, rng, config=config, special=SPECIAL)
    assert made == [
        # B takes doc 1's sentences until it reaches target - len(A) = 2 tokens.
        il.Instance([CLS, 10, 11, SEP, 20, 21, 22, SEP], 4, True, [], []),
        il.Instance([CLS, 12, 13, 14, SEP, 15, 16, SEP], 5, False, [], []),
    ]
    assert rng.draws == []


def test_single_sentence_chunk_is_always_random_next_and_truncated():
    config = il.InstanceConfig(max_seq_len=8)  # 5 tokens for A and B
    document = [[1, 2, 3, 4]]
    other = [[5, 6], [7, 8, 9]]
    rng = ScriptedRandom([
        0.5,  # target 5
        # one-sentence chunk: A = it, random next without a draw; other doc = 1 (only choice), start at sentence 1
        2, 1,
        0.3, 0.8,  # 4 + 3 > 5: A loses its first token (0.3), then B (3 > 3? no: A 3 = B 3 -> B) its last (0.8)
    ])
    made = il.create_pair_instances([document, other], 0, rng, config=config, special=SPECIAL)
    assert made == [il.Instance([CLS, 2, 3, 4, SEP, 7, 8, SEP], 5, True, [], [])]
    assert rng.draws == []


def test_truncate_seq_pair_trims_the_longer_side():
    tokens_a, tokens_b = [1, 2, 3, 4], [5, 6]
    il.truncate_seq_pair(tokens_a, tokens_b, 4, ScriptedRandom([0.3, 0.8]))
    assert (tokens_a, tokens_b) == ([2, 3], [5, 6])


def test_sample_other_document_is_sentence_weighted_and_never_itself():
    counts = [3, 2, 5]
    # From document 1 the draw covers the 8 sentences of documents 2 then 0 (wrapping).
    assert [il.sample_other_document(counts, 1, ScriptedRandom([r])) for r in range(5, 13)] == \
        [2, 2, 2, 2, 2, 0, 0, 0]


def test_whole_word_masking():
    config = il.InstanceConfig(max_seq_len=10, masked_lm_prob=0.5, whole_word_mask=True)
    ids = [CLS, 10, 11, 12, SEP]
    # candidates [[1, 2], [3]] (11 is a "##" piece); 2 to mask; shuffled (reversed): [3] first -> [MASK] (0.1);
    # [1, 2] would make 3 predictions: skipped.
    positions, labels = il.mask_tokens(ids, ScriptedRandom([0.1]), config=config, special=SPECIAL,
                                       continuation_ids=frozenset({11}))
    assert (ids, positions, labels) == ([CLS, 10, 11, MASK, SEP], [3], [12])


def test_per_piece_masking_keeps_or_replaces():
    config = il.InstanceConfig(max_seq_len=10, masked_lm_prob=0.5)
    ids = [CLS, 10, 11, 12, SEP]
    # order [3], [2], [1]: position 3 kept (0.9 then 0.3); position 2 replaced by random token 7 (0.85, 0.6, 7).
    rng = ScriptedRandom([0.9, 0.3, 0.85, 0.6, 7])
    positions, labels = il.mask_tokens(ids, rng, config=config, special=SPECIAL, continuation_ids=frozenset())
    assert (ids, positions, labels) == ([CLS, 10, 7, 12, SEP], [2, 3], [11, 12])
    assert rng.draws == []


def test_no_masking_at_zero_probability_draws_nothing():
    ids = [CLS, 10, SEP]
    rng = ScriptedRandom([])
    assert il.mask_tokens(ids, rng, config=il.InstanceConfig(), special=SPECIAL,
                          continuation_ids=frozenset()) == ([], [])


def test_single_segment_packing_cuts_long_chunks_into_windows():
    config = il.InstanceConfig(max_seq_len=6)  # 4 tokens besides [CLS] [SEP]
    made = il.create_single_segment_instances([[1, 2], [3, 4, 5], [6]], ScriptedRandom([0.5]), config=config,
                                              special=SPECIAL)
    assert made == [il.Instance([CLS, 1, 2, 3, 4, SEP], 6, False, [], []),
                    il.Instance([CLS, 5, SEP], 3, False, [], []),
                    il.Instance([CLS, 6, SEP], 3, False, [], [])]


def test_seeded_rng_gives_exact_instances():
    documents = [[[1000 + d * 100 + s * 10 + t for t in range(1 + (s + d) % 4)] for s in range(6)] for d in range(3)]
    config = il.InstanceConfig(max_seq_len=12, short_seq_prob=0.5)
    made = il.create_pair_instances(documents, 1, random.Random(1234), config=config, special=SPECIAL)
    again = il.create_pair_instances(documents, 1, random.Random(1234), config=config, special=SPECIAL)
    assert made == again
    assert [(m.input_ids, m.segment_a_len, m.is_random_next) for m in made] == EXPECTED_SEEDED
    for instance in made:
        assert len(instance.input_ids) <= 12
        assert instance.input_ids[0] == CLS and instance.input_ids[-1] == SEP
        assert instance.input_ids[instance.segment_a_len - 1] == SEP


EXPECTED_SEEDED = [
    ([101, 1100, 1101, 1110, 1111, 1112, 102, 1242, 1250, 1251, 1252, 102], 7, True),
    ([101, 1120, 1121, 1122, 1123, 1130, 102, 1201, 1202, 1210, 1211, 102], 7, True),
    ([101, 1140, 1141, 102, 1000, 1010, 1011, 1020, 1021, 1022, 1030, 102], 4, True),
    ([101, 1150, 1151, 1152, 102, 1200, 1201, 1202, 1210, 1211, 1212, 102], 5, True),
]


@pytest.mark.parametrize("kwargs", [{"max_seq_len": 4}, {"short_seq_prob": 1.5}, {"masked_lm_prob": -0.1}])
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        il.InstanceConfig(**kwargs)


def _sentence_by_sentence_pairs(documents, index, rng, config):
    """The reference's loop as written there (a chunk list of sentences, B extended one sentence at a time): the
    specification the sliced implementation must equal draw for draw."""
    document = documents[index]
    max_num_tokens = config.max_seq_len - 3
    target = il.target_length(rng, max_num_tokens=max_num_tokens, short_seq_prob=config.short_seq_prob)
    instances, chunk, chunk_length, i = [], [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        chunk_length += len(document[i])
        if i == len(document) - 1 or chunk_length >= target:
            a_end = rng.randrange(1, len(chunk)) if len(chunk) >= 2 else 1
            tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
            tokens_b = []
            if len(chunk) == 1 or rng.random() < 0.5:
                is_random_next = True
                target_b = target - len(tokens_a)
                other = il.sample_other_document([len(d) for d in documents], index, rng) if len(documents) > 1 \
                    else index
                for sentence in documents[other][rng.randrange(0, len(documents[other])):]:
                    tokens_b.extend(sentence)
                    if len(tokens_b) >= target_b:
                        break
                i -= len(chunk) - a_end
            else:
                is_random_next = False
                tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
            tokens_a = tokens_a or [SPECIAL.filler_id]
            tokens_b = tokens_b or [SPECIAL.filler_id]
            il.truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
            input_ids = [CLS, *tokens_a, SEP, *tokens_b, SEP]
            positions, labels = il.mask_tokens(input_ids, rng, config=config, special=SPECIAL,
                                               continuation_ids=frozenset())
            instances.append(il.Instance(input_ids, len(tokens_a) + 2, is_random_next, positions, labels))
            chunk, chunk_length = [], 0
        i += 1
    return instances


@pytest.mark.parametrize("seed", range(6))
def test_sliced_cutting_equals_the_sentence_by_sentence_loop(seed):
    corpus_rng = random.Random(seed)
    documents = [[[corpus_rng.randrange(1000, 30000) for _ in range(corpus_rng.randint(1, 40))]
                  for _ in range(corpus_rng.randint(1, 12))] for _ in range(corpus_rng.randint(1, 5))]
    config = il.InstanceConfig(max_seq_len=corpus_rng.choice([8, 32, 128]), short_seq_prob=0.3,
                               masked_lm_prob=corpus_rng.choice([0.0, 0.15]))
    packed = [il.PackedDocument.from_sentences(d) for d in documents]
    # As the pipeline holds them: ids in a compact array (uint16), sliced without Python ints.
    arrays = [il.PackedDocument(array.array("H", p.ids), p.ends) for p in packed]
    for index in range(len(documents)):
        expected = _sentence_by_sentence_pairs(documents, index, random.Random(seed * 100 + index), config)
        assert il.create_pair_instances(packed, index, random.Random(seed * 100 + index), config=config,
                                        special=SPECIAL) == expected
        assert il.create_pair_instances(documents, index, random.Random(seed * 100 + index), config=config,
                                        special=SPECIAL) == expected
        assert il.create_pair_instances(arrays, index, random.Random(seed * 100 + index), config=config,
                                        special=SPECIAL) == expected
