"""The fused bf16 encoder (augment/fused_encoder.py): the same function as transformers' BertModel at the masked
rows, up to bf16 rounding, and the scorer's choice of it."""

import copy

import numpy as np
import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from augment import fused_encoder
from augment.augmenter import plan_fields
from augment.mlm import MaskedLMScorer, MaskedQuery, build_input
from augment.words import WordSplitter
from tests.conftest import SAMPLE_TEXTS

pytestmark = pytest.mark.skipif(not fused_encoder.available(), reason="this torch build has no oneDNN fused Linear")


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return AutoTokenizer.from_pretrained(tiny_bert)


@pytest.fixture(scope="module")
def model(tiny_bert):
    return AutoModelForMaskedLM.from_pretrained(tiny_bert, attn_implementation="sdpa").eval()


def _batch(tokenizer, length, rows):
    first = len(tokenizer) // 2
    queries = [MaskedQuery(tuple(range(first + row, first + row + length)), row % length) for row in range(rows)]
    built = [build_input(query, cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id,
                         mask_id=tokenizer.mask_token_id) for query in queries]
    return (torch.tensor([b[0] for b in built]), torch.tensor([b[1] for b in built]),
            torch.tensor([b[2] for b in built]))


@pytest.mark.parametrize("length, rows", [(1, 1), (4, 3), (11, 7)])
def test_masked_rows_equal_transformers_forward(model, tokenizer, length, rows):
    """Every layer but the last over all positions, the last on the masked rows only: the masked rows' states are
    transformers' own (fp32) within bf16 rounding, and within it of transformers' bf16 forward."""
    ids, segments, mask_index = _batch(tokenizer, length, rows)
    fused = fused_encoder.FusedMaskedEncoder(model.bert)
    with torch.inference_mode():
        expected = model.bert(input_ids=ids, token_type_ids=segments).last_hidden_state[torch.arange(rows), mask_index]
        bf16 = copy.deepcopy(model.bert).to(torch.bfloat16)
        plain = bf16(input_ids=ids, token_type_ids=segments).last_hidden_state[torch.arange(rows), mask_index].float()
        got = fused(ids, segments, mask_index)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, model.config.hidden_size)
    got = got.float()
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() < 0.05 * scale
    assert (got - plain).abs().max().item() < 0.05 * scale
    assert torch.nn.functional.cosine_similarity(got, expected).min().item() > 0.999
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is left as it was


def test_scorer_uses_it_for_bf16_on_cpu_and_keeps_the_fp32_top_15(model, tokenizer):
    splitter = WordSplitter(tokenizer.backend_tokenizer)
    queries = [q for plan in plan_fields(SAMPLE_TEXTS, splitter=splitter, tokenizer=tokenizer)
               for q in plan.mlm_queries()]
    fp32 = MaskedLMScorer(model, tokenizer, top_k=15)
    fused = MaskedLMScorer(model, tokenizer, top_k=15, precision="bf16")
    plain = MaskedLMScorer(model, tokenizer, top_k=15, precision="bf16", fused=False)
    assert (fp32.variant, fused.variant, plain.variant) == ("fp32", "bf16-fused", "bf16")
    reference, got, unfused = fp32.candidates(queries), fused.candidates(queries), plain.candidates(queries)

    def overlap(a, b):
        return np.mean([len(set(a[q]) & set(b[q])) / max(1, len(a[q])) for q in queries])
    # A 2-layer random model's logits are nearly flat, so its top-15 is fragile; the fused path keeps as much of
    # fp32's as transformers' own bf16 forward does.
    assert overlap(reference, got) > 0.5
    assert overlap(reference, got) >= overlap(reference, unfused) - 0.1
    assert fused.forward_rows == plain.forward_rows


@pytest.mark.parametrize("change, reason", [({"hidden_act": "relu"}, "exact GELU"),
                                            ({"hidden_act": "gelu_new"}, "exact GELU"),
                                            ({"position_embedding_type": "relative_key"}, "absolute")])
def test_other_architectures_keep_transformers_forward(model, tokenizer, change, reason):
    other = copy.deepcopy(model)
    for key, value in change.items():
        setattr(other.config, key, value)
    assert reason in fused_encoder.supports(other.bert)
    assert MaskedLMScorer(other, tokenizer, precision="bf16").variant == "bf16"
    with pytest.raises(ValueError, match=reason):
        MaskedLMScorer(other, tokenizer, precision="bf16", fused=True)


def test_fused_is_bf16_on_cpu_only(model, tokenizer):
    with pytest.raises(ValueError, match="bf16 on a CPU"):
        MaskedLMScorer(model, tokenizer, precision="fp32", fused=True)
    assert MaskedLMScorer(model, tokenizer, precision="bf16", bf16_autocast=True).variant == "bf16-autocast"
