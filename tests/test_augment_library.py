"""augment/: word rules, GloVe neighbours, the batched masked-LM scorer, Algorithm 1."""

import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from augment import reference
from augment.algorithm import augment_sentence
from contract.seeds import example_rng
from augment.augmenter import plan_fields
from augment.glove import GloveFormatError, GloveIndex
from augment.mlm import MaskedLMScorer, MaskedQuery, build_input
from augment.words import WordSplitter, is_candidate_word, piece_spans
from tests.conftest import SAMPLE_TEXTS


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return AutoTokenizer.from_pretrained(tiny_bert)


@pytest.fixture(scope="module")
def model(tiny_bert):
    return AutoModelForMaskedLM.from_pretrained(tiny_bert).eval()


# ---------------------------------------------------------------------------------------------------- words
@pytest.mark.parametrize("text, words", [
    # accents are stripped and case folded by an uncased BERT
    ("Héllo WORLD naïve Café", ["hello", "world", "naive", "cafe"]),
    # punctuation splits, each mark its own word; apostrophes too
    ("It's a co-op... (really)!", ["it", "'", "s", "a", "co", "-", "op", ".", ".", ".", "(", "really", ")", "!"]),
    # CJK ideographs become one word each; other scripts stay whole
    ("東京タワー in 東京", ["東", "京", "タワー", "in", "東", "京"]),
    # any whitespace separates; NUL and control characters are deleted (they do not split)
    ("tab\tand\u00a0nbsp\x00null", ["tab", "and", "nbspnull"]),
    ("3.5 stars, $10", ["3", ".", "5", "stars", ",", "$", "10"]),
])
def test_word_splitter_matches_bert_basic_tokenization(tokenizer, text, words):
    assert WordSplitter(tokenizer.backend_tokenizer).split(text) == words


def test_candidate_words_are_letters_and_not_stop_words():
    assert is_candidate_word("film") and is_candidate_word("Film")
    for word in ["the", "The", "it", "'s", "don't", "co-op", "3d", "naïve", ",", "mightn"]:
        assert not is_candidate_word(word), word


def test_piece_spans():
    assert piece_spans([0, 0, 1, 2, 2, 2]) == [(0, 2), (2, 1), (3, 3)]


def test_plan_separates_single_and_multi_piece_words(tokenizer):
    plan, = plan_fields(["the cinematography is murky"], splitter=WordSplitter(tokenizer.backend_tokenizer),
                        tokenizer=tokenizer)
    assert plan.words == ("the", "cinematography", "is", "murky")
    pieces = tokenizer.tokenize("the cinematography is murky")
    assert list(plan.piece_ids) == tokenizer.convert_tokens_to_ids(pieces)
    singles = {w for w, _ in plan.mlm_words}
    multis = {w for w, _ in plan.glove_words}
    assert singles | {w for w in range(4) if w in multis} == {1, 3}  # 'the', 'is' are stop words
    for word_index, position in plan.mlm_words:
        assert pieces[position] == plan.words[word_index]


# ---------------------------------------------------------------------------------------------------- GloVe
GLOVE_LINES = [
    "the 1 0 0\n", "cat 0.9 0.1 0\n", "dog 0.8 0.3 0\n", "car 0 1 0\n", "<unk> 5 5 5\n", "paris 0 0 1\n",
    "london 0 0.2 0.9\n",
]


def test_glove_neighbours_by_cosine():
    index = GloveIndex.from_lines(GLOVE_LINES)
    found = index.neighbours(["cat", "Paris", "paris", "unknownword"], top_k=3)
    assert found["cat"] == ["the", "dog", "car"]  # itself excluded, best first
    assert found["paris"] == ["london", "car", "the"]  # <unk> has no direction: never a neighbour
    assert found["Paris"] == []  # GloVe 6B is lower case: a capitalised word is not found
    assert found["unknownword"] == []


def test_glove_title_case_and_vocab_limit():
    index = GloveIndex.from_lines(["Cat 1 0\n", "dog 0.9 0.1\n", "car 0 1\n"], vocab_limit=2)
    assert len(index) == 2
    assert index.neighbours(["Cat"], top_k=5) == {"Cat": ["Dog"]}


def test_glove_rejects_ragged_file():
    with pytest.raises(GloveFormatError, match="line 2"):
        GloveIndex.from_lines(["a 1 2 3\n", "b 1 2\n"])


def test_glove_batched_equals_reference_procedure(shared_data_optional, tiny_glove):
    import gzip
    path = shared_data_optional / "glove.6B.50d.20k.txt.gz" if shared_data_optional else None
    lines = gzip.open(path, "rt", encoding="utf-8") if path else open(tiny_glove, encoding="utf-8")
    with lines:
        index = GloveIndex.from_lines(lines, vocab_limit=20000)
    words = index.words[:300:7] + ["overwrought", "cinematography", "Paris"]
    batched = index.neighbours(words, top_k=15, batch_size=16)
    for word in words:
        assert batched[word] == reference._glove_neighbours(index, word, 15), word


# ------------------------------------------------------------------------------------------------ masked LM
def test_build_input_layout_and_512_cut():
    ids, segments, mask = build_input(MaskedQuery((7, 8, 9), 1), cls_id=101, sep_id=102, mask_id=103)
    assert ids == [101, 7, 103, 9, 102, 7, 8, 9, 102]
    assert segments == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert mask == 2
    long = tuple(range(1000, 1300))  # 300 pieces: 603 tokens, cut at 512 like the reference
    ids, segments, mask = build_input(MaskedQuery(long, 299), cls_id=101, sep_id=102, mask_id=103)
    assert len(ids) == len(segments) == 512 and segments.count(0) == 302 and mask == 300
    ids, segments, mask = build_input(MaskedQuery(tuple(range(600)), 520), cls_id=1, sep_id=2, mask_id=3)
    assert mask is None and segments == [0] * 512


def test_batched_scorer_equals_reference_per_word(model, tokenizer, tiny_glove):
    """The batched path gives exactly the candidates of the reference's one-word-at-a-time procedure."""
    glove = GloveIndex.from_lines(open(tiny_glove, encoding="utf-8"))
    splitter = WordSplitter(tokenizer.backend_tokenizer)
    scorer = MaskedLMScorer(model, tokenizer, top_k=15, max_batch_tokens=200)
    plans = plan_fields(SAMPLE_TEXTS, splitter=splitter, tokenizer=tokenizer)
    answers = scorer.candidates(q for plan in plans for q in plan.mlm_queries())
    neighbours = glove.neighbours([w for plan in plans for _, w in plan.glove_words], 15)
    for text, plan in zip(SAMPLE_TEXTS, plans):
        expected = reference.sentence_candidates(model, tokenizer, glove, text, top_k=15)
        got = {}
        for word_index, position in plan.mlm_words:
            got[word_index] = answers[MaskedQuery(plan.piece_ids, position)] or [plan.words[word_index]]
        for word_index, word in plan.glove_words:
            got[word_index] = neighbours[word] or [word]
        assert got == expected, text


def test_scorer_computes_identical_queries_once_and_handles_long_text(model, tokenizer):
    scorer = MaskedLMScorer(model, tokenizer, top_k=5)
    query = MaskedQuery(tuple(tokenizer.convert_tokens_to_ids(tokenizer.tokenize("a fine film"))), 1)
    far = MaskedQuery(tuple([query.piece_ids[1]] * 600), 550)
    answers = scorer.candidates([query, query, far])
    assert scorer.forward_rows == 1
    assert answers[far] == [] and 0 < len(answers[query]) <= 5
    assert not any(piece.startswith("##") for piece in answers[query])


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_lower_precision_keeps_most_candidates(model, tokenizer, precision):
    splitter = WordSplitter(tokenizer.backend_tokenizer)
    queries = [q for plan in plan_fields(SAMPLE_TEXTS, splitter=splitter, tokenizer=tokenizer)
               for q in plan.mlm_queries()]
    fp32 = MaskedLMScorer(model, tokenizer, top_k=15).candidates(queries)
    low = MaskedLMScorer(model, tokenizer, top_k=15, precision=precision).candidates(queries)
    overlap = np.mean([len(set(fp32[q]) & set(low[q])) / max(1, len(fp32[q])) for q in queries])
    assert overlap > 0.5
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is left as it was


# --------------------------------------------------------------------------------------------- Algorithm 1
def test_algorithm_replaces_every_word_at_p1():
    words = ["a", "good", "film"]
    out = augment_sentence("A good film.", words, {1: ["great"], 2: ["movie"]}, num_aug=3, replace_prob=1.0,
                           rng=random.Random(0))
    assert [(s.text, s.replaced_word_indices) for s in out] == [("A good film.", ()), ("a great movie", (1, 2))]


def test_algorithm_keeps_only_the_original_at_p0():
    out = augment_sentence("a good film", ["a", "good", "film"], {1: ["great"]}, num_aug=5, replace_prob=0.0,
                           rng=random.Random(0))
    assert [s.text for s in out] == ["a good film"]


def test_algorithm_exact_rows_with_seeded_rng():
    """Draw order is the reference's: for each candidate word, choice() then random()."""
    words = ["a", "good", "film", "today"]
    candidates = {1: ["great", "fine"], 2: ["movie", "picture", "film"], 3: ["now"]}
    rng = random.Random(1234)
    expected = ["a good film today"]
    for _ in range(4):
        new = list(words)
        for index in sorted(candidates):
            choice = rng.choice(candidates[index])
            if rng.random() < 0.4:
                new[index] = choice
        if " ".join(new) not in expected:
            expected.append(" ".join(new))
    out = augment_sentence("a good film today", words, candidates, num_aug=4, replace_prob=0.4,
                           rng=random.Random(1234))
    assert [s.text for s in out] == expected
    assert [s.text for s in out] == ["a good film today", "a fine film today", "a great picture today",
                                     "a great film now", "a good film now"]
    assert [s.replaced_word_indices for s in out] == [(), (1,), (1, 2), (1, 3), (3,)]


def test_example_rng_depends_only_on_seed_and_id():
    assert example_rng(42, "7").random() == example_rng(42, "7").random()
    assert example_rng(42, "7").random() != example_rng(42, "8").random()
    assert example_rng(42, "7").random() != example_rng(43, "7").random()


def test_masked_lm_loads_with_fused_attention(tiny_bert):
    from augment.mlm import load_masked_lm
    assert load_masked_lm(tiny_bert).config._attn_implementation == "sdpa"


def test_bf16_casts_only_the_masked_rows_once_per_batch(model, tokenizer):
    """The bf16 encoder's weights are cast once, at construction: inside the loop the only cast is the masked rows'
    hidden states (rows x hidden) into the float32 head, one per batch (autocast would cast every weight per call)."""
    scorer = MaskedLMScorer(model, tokenizer, top_k=15, precision="bf16", max_batch_tokens=64)
    first = len(tokenizer) // 2  # ordinary word pieces of the real vocabulary or of the small one built without it
    queries = [MaskedQuery(tuple(range(first, first + length)), index) for length in (5, 9, 12)
               for index in range(length)]
    batches = len(list(scorer._batches(sorted(set(queries)))))
    with torch.profiler.profile() as profile:
        scorer.candidates(queries)
    assert batches > 3
    assert sum(event.name == "aten::_to_copy" for event in profile.events()) == batches


def test_glove_fast_block_parse_equals_line_by_line(shared_data_optional, tiny_glove, monkeypatch):
    """Blocks of one-word lines go through Arrow's number parser: the same words and the same float64 vectors (so
    the same neighbours) as parsing line by line, across block boundaries; the line parser is not called."""
    import gzip
    from augment import glove as glove_lib
    path = shared_data_optional / "glove.6B.50d.20k.txt.gz" if shared_data_optional else None
    with (gzip.open(path, "rt", encoding="utf-8") if path else open(tiny_glove, encoding="utf-8")) as handle:
        lines = handle.readlines()[:3000]
    dim = lines[0].rstrip().count(" ")
    parsed = [glove_lib._parse_line(line.rstrip(), n, dim, "g") for n, line in enumerate(lines, start=1)]
    expected = GloveIndex([w for w, _ in parsed], np.stack([np.zeros(dim) if w == "<unk>" else v for w, v in parsed]))
    monkeypatch.setattr(glove_lib, "_BLOCK_LINES", 700)
    monkeypatch.setattr(glove_lib, "_parse_line", lambda *a: pytest.fail("the fast path fell back"))
    index = GloveIndex.from_lines(lines, vocab_limit=2500)
    assert index.words == expected.words[:2500]
    assert torch.equal(index.unit_vectors, expected.unit_vectors[:2500])


def test_glove_block_with_a_spaced_word_or_a_bad_line_falls_back_line_by_line(monkeypatch):
    from augment import glove as glove_lib
    monkeypatch.setattr(glove_lib, "_BLOCK_LINES", 2)
    lines = ["a 1 0\n", "b 0 1\n", "c d 1 1\n", "e 1 2\n", "<unk> 3 3\n"]
    index = GloveIndex.from_lines(lines)  # 840B style: a word with a space
    assert index.words == ["a", "b", "c d", "e", "<unk>"]
    assert index.neighbours(["a"], top_k=2) == {"a": ["c d", "e"]}  # <unk> stays a zero vector
    with pytest.raises(GloveFormatError, match="line 4: the vector of 'e'"):
        GloveIndex.from_lines(lines[:3] + ["e 1 nan\n"] + lines[4:])
    with pytest.raises(GloveFormatError, match="line 5 has 3 values"):
        GloveIndex.from_lines(lines[:4] + ["f 1 2 3\n"])
