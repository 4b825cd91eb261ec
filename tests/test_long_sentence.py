"""Planning a long sentence is linear; masked-LM queries exist only inside the 512-token window.

The work is counted (queries built, pieces each holds), never timed; bench/long_sentence.py prints the seconds.
"""

import pytest
import numpy as np
from transformers import AutoModelForMaskedLM, AutoTokenizer

from augment.augmenter import augment_example, field_candidates, plan_fields
from augment.mlm import MAX_POSITIONS, WINDOW_PIECES, MaskedLMScorer, MaskedQuery, build_input, window_queries
from augment.tasks import Example
from augment.words import WordSplitter
from tests.conftest import SAMPLE_TEXTS


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return AutoTokenizer.from_pretrained(tiny_bert)


def _long_sentence(words: int) -> str:
    vocabulary = " ".join(SAMPLE_TEXTS).split()
    return " ".join(vocabulary[i % len(vocabulary)] for i in range(words))


@pytest.mark.parametrize("length", [3, 300, 510, 511, 512, 600, 2000])
def test_window_query_gives_the_same_input_as_the_whole_sentence(length):
    pieces = tuple(range(1000, 1000 + length))
    positions = [0, length // 2, length - 1, 509, 510, 511, 700]
    positions = sorted({p for p in positions if p < length})
    kept = window_queries(pieces, positions)
    assert [q.position for q in kept] == [p for p in positions if p + 1 < MAX_POSITIONS]
    for query in kept:
        assert len(query.piece_ids) <= WINDOW_PIECES
        assert (build_input(query, cls_id=1, sep_id=2, mask_id=3)
                == build_input(MaskedQuery(pieces, query.position), cls_id=1, sep_id=2, mask_id=3))


def test_a_20k_word_sentence_builds_at_most_511_small_queries(tokenizer):
    text = _long_sentence(20_000)
    plan, = plan_fields([text], splitter=WordSplitter(tokenizer.backend_tokenizer), tokenizer=tokenizer)
    assert len(plan.piece_ids) > 20_000 and len(plan.mlm_words) > 1000
    queries = plan.mlm_queries()
    assert 0 < len(queries) <= WINDOW_PIECES
    assert all(q.position < WINDOW_PIECES for q in queries)
    assert len({id(q.piece_ids) for q in queries}) == 1  # one shared window of pieces, not a copy per query
    assert len(queries[0].piece_ids) == WINDOW_PIECES
    # the words whose mask falls inside the window are exactly the queried ones
    assert [q.position for q in queries] == [p for _, p in plan.mlm_words if p + 1 < MAX_POSITIONS]


def test_pipeline_scorer_builds_only_window_queries_and_counts_the_rest():
    """ScoreMaskedLMFn with a recording scorer: a 20k-piece sentence gives at most 511 queries to the model."""
    from pipelines.augment.config import MaskedLMSettings
    from pipelines.augment.scoring import ScoreMaskedLMFn

    class RecordingScorer:
        def __init__(self):
            self.queries = []

        def candidates(self, queries):
            self.queries = list(queries)
            return {q: ["x"] for q in set(self.queries)}

    fn = ScoreMaskedLMFn(MaskedLMSettings(model="unused", top_k=5, precision="fp32", device="cpu",
                                          max_batch_tokens=8192, torch_threads=0, partitions=4,
                                          show_progress=False))
    fn._scorer = RecordingScorer()
    sentence = np.arange(20_000, dtype=np.int32).tobytes()
    positions = tuple(range(0, 20_000, 2))
    out = list(fn.process(((512, 0), [(sentence, [(("k",), 0, positions)])])))
    assert len(fn._scorer.queries) == 256 and max(len(q.piece_ids) for q in fn._scorer.queries) == WINDOW_PIECES
    stats = dict(o.value for o in out if getattr(o, "tag", None) == "stats")
    assert stats == {"mlm_distinct_queries": len(positions), "mlm_queries_beyond_512_tokens": len(positions) - 256}
    (key, (field, answers)), = [o for o in out if not hasattr(o, "tag")]
    assert key == ("k",) and field == 0 and sorted(answers) == list(range(0, 511, 2))


def test_long_sentence_rows_equal_the_unwindowed_queries(tiny_bert, tokenizer):
    """Rows from window queries equal rows from the whole-sentence queries the code built before."""
    model = AutoModelForMaskedLM.from_pretrained(tiny_bert).eval()
    text = _long_sentence(700)
    plan, = plan_fields([text], splitter=WordSplitter(tokenizer.backend_tokenizer), tokenizer=tokenizer)
    assert len(plan.piece_ids) > WINDOW_PIECES
    scorer = MaskedLMScorer(model, tokenizer, top_k=5)
    windowed = {q.position: found for q, found in scorer.candidates(plan.mlm_queries()).items()}
    # A sample of the old whole-sentence queries (inside and past the window), to keep the test fast.
    sample = [p for _, p in plan.mlm_words][::25]
    whole = {q.position: found for q, found in scorer.candidates(
        [MaskedQuery(plan.piece_ids, p) for p in sample]).items()}
    assert any(whole.values()) and any(p + 1 >= MAX_POSITIONS for p in sample)
    for position in sample:
        assert (windowed.get(position) or []) == whole[position]
    example = Example("0", 0, (text,), "1")
    rows = augment_example(example, [plan], [field_candidates(plan, windowed, {})], num_aug=3, replace_prob=0.4,
                           seed=1)
    assert len(rows) > 1
