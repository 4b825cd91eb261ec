"""TinyBERT losses and layer mapping against hand-written computations."""

import math

import pytest
import torch

from distill import losses, models


def test_layer_mapping_uniform():
    attention, hidden = losses.layer_mapping(12, 4)
    assert attention == [2, 5, 8, 11]
    assert hidden == [0, 3, 6, 9, 12]
    assert losses.layer_mapping(12, 6) == ([1, 3, 5, 7, 9, 11], [0, 2, 4, 6, 8, 10, 12])
    assert losses.layer_mapping(4, 4) == ([0, 1, 2, 3], [0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="multiple"):
        losses.layer_mapping(12, 5)


def test_attention_score_loss_zeroes_masked_positions_on_both_sides():
    torch.manual_seed(0)
    student = [torch.randn(2, 3, 4, 4) for _ in range(2)]
    teacher = [torch.randn(2, 3, 4, 4) for _ in range(4)]
    student[0][0, :, :, 3] = -10000.0  # a padded key, masked as the reference does
    teacher[1][0, :, :, 3] = -10000.0 + 0.5
    teacher[3][1, 0, 0, 0] = -150.0  # below -1e2 counts as masked too
    got = losses.attention_score_loss(student, teacher, [1, 3])
    expected = 0.0
    for s_index, t_index in ((0, 1), (1, 3)):
        total, count = 0.0, 0
        for b in range(2):
            for h in range(3):
                for i in range(4):
                    for j in range(4):
                        s = float(student[s_index][b, h, i, j])
                        t = float(teacher[t_index][b, h, i, j])
                        s = 0.0 if s <= -100 else s
                        t = 0.0 if t <= -100 else t
                        total += (s - t) ** 2
                        count += 1
        expected += total / count
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_hidden_state_loss_goes_through_fit_dense():
    torch.manual_seed(1)
    fit = torch.nn.Linear(3, 5).requires_grad_(False)
    student = [torch.randn(2, 4, 3) for _ in range(3)]
    teacher = [torch.randn(2, 4, 5) for _ in range(5)]
    got = losses.hidden_state_loss(student, teacher, [0, 2, 4], fit)
    expected = 0.0
    for s_index, t_index in ((0, 0), (1, 2), (2, 4)):
        total = 0.0
        for b in range(2):
            for p in range(4):
                projected = [sum(float(fit.weight[o, i]) * float(student[s_index][b, p, i]) for i in range(3))
                             + float(fit.bias[o]) for o in range(5)]
                total += sum((projected[o] - float(teacher[t_index][b, p, o])) ** 2 for o in range(5))
        expected += total / (2 * 4 * 5)
    assert got.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "batchmean"])
def test_soft_cross_entropy_with_temperature(reduction):
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    temperature = 2.0
    total = 0.0  # -sum over rows and classes of p_teacher * log q_student
    for row in range(2):
        t = [math.exp(v / temperature) for v in teacher[row].tolist()]
        s = [math.exp(v / temperature) for v in student[row].tolist()]
        p = [x / sum(t) for x in t]
        log_q = [math.log(x / sum(s)) for x in s]
        total += -sum(pi * lq for pi, lq in zip(p, log_q))
    # The reference: (-targets * log_softmax).mean(), over batch (2) and classes (3); batchmean: over the batch only.
    expected = total / (2 * 3) if reduction == "mean" else total / 2
    got = losses.soft_cross_entropy(student, teacher, temperature=temperature, reduction=reduction)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_soft_cross_entropy_defaults_to_the_reference_mean_and_refuses_unknown_reductions():
    student, teacher = torch.tensor([[0.3, -0.2]]), torch.tensor([[1.0, 0.0]])
    default = losses.soft_cross_entropy(student, teacher, temperature=1.0)
    assert default.item() == pytest.approx(
        losses.soft_cross_entropy(student, teacher, temperature=1.0, reduction="mean").item())
    with pytest.raises(ValueError, match="reduction"):
        losses.soft_cross_entropy(student, teacher, temperature=1.0, reduction="sum")


def test_regression_loss_is_mse_to_labels_or_teacher_outputs():
    student = torch.tensor([[1.0], [2.0]])
    labels = torch.tensor([0.0, 4.0])  # (batch,): the reference's target
    assert losses.regression_loss(student, labels).item() == pytest.approx((1 + 4) / 2)
    teacher = torch.tensor([[1.5], [1.0]])  # (batch, 1)
    assert losses.regression_loss(student, teacher).item() == pytest.approx((0.25 + 1) / 2)


def test_config_defaults_are_the_reference_and_bad_options_are_refused():
    from contract.errors import UserError
    from distill.config import DistillConfig
    config = DistillConfig(teacher="t", student="s", mode="task", task="STS-B", stage="prediction")
    assert (config.soft_ce_reduction, config.regression_target) == ("mean", "labels")
    with pytest.raises(UserError, match="--soft_ce_reduction must be one of mean, batchmean"):
        DistillConfig(teacher="t", student="s", soft_ce_reduction="sum")
    with pytest.raises(UserError, match="--regression_target must be one of labels, teacher"):
        DistillConfig(teacher="t", student="s", regression_target="gold")


def test_scores_attention_returns_pre_softmax_scores_with_reference_mask():
    from transformers import BertConfig, BertModel
    models.register_scores_attention()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=32)
    config._attn_implementation = models.SCORES_ATTENTION
    model = BertModel(config).eval()
    captured = {}
    layer = model.encoder.layer[1].attention.self

    def keep_input(module, args, kwargs, output):
        captured["x"] = kwargs.get("hidden_states", args[0] if args else None)

    hook = layer.register_forward_hook(keep_input, with_kwargs=True)
    ids = torch.tensor([[2, 5, 7, 9, 3], [2, 8, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    hook.remove()
    hidden = captured["x"]  # (batch, seq, hidden) entering layer 1's self-attention
    query = layer.query(hidden).view(2, 5, 4, 4).transpose(1, 2)
    key = layer.key(hidden).view(2, 5, 4, 4).transpose(1, 2)
    expected = query @ key.transpose(2, 3) / math.sqrt(4)  # (batch, heads, seq, seq)
    expected[1, :, :, 3:] = -10000.0
    assert len(out.attentions) == 2 and len(out.hidden_states) == 3
    torch.testing.assert_close(out.attentions[1], expected, rtol=1e-5, atol=1e-4)
    # The model's outputs are those of the library's own attention.
    config_sdpa = BertConfig(**{**config.to_dict(), "_attn_implementation": "sdpa"})
    sdpa_model = BertModel(config_sdpa).eval()
    sdpa_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        sdpa_out = sdpa_model(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(out.last_hidden_state[0], sdpa_out.last_hidden_state[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.last_hidden_state[1, :3], sdpa_out.last_hidden_state[1, :3], rtol=1e-4, atol=1e-5)


def test_padding_to_the_fixed_length_adds_nonzero_pad_terms_so_no_rescaling_reproduces_it(tmp_path):
    """What --pad_to_max_length changes: real positions are untouched (padded keys are masked), but the reference's
    [PAD] positions carry hidden states and query rows of their own, different in teacher and student, so the
    fixed-width loss is the dynamic one rescaled *plus* terms that only running those positions gives."""
    import numpy as np
    from distill import encoding
    from tests import builders
    tokenizer = builders.make_tokenizer(str(tmp_path / "tok"))
    teacher = models.load_teacher(builders.make_teacher(str(tmp_path / "t"), tokenizer, layers=4, hidden=48,
                                                       heads=12), classification=False)
    torch.manual_seed(0)
    student = models.build_student(builders.write_student_config(str(tmp_path / "s.json")), teacher,
                                   classification=False).eval()
    lengths = [9, 5]
    rows = encoding.EncodedRows(values=np.arange(1000, 1000 + sum(lengths)), offsets=np.array([0, 9, 14]),
                            segment_a_len=np.array([4, 3]))
    width, fixed = max(lengths), 32
    dynamic, padded = encoding.collate(rows, [0, 1], 0), encoding.collate(rows, [0, 1], 0, pad_to=fixed)
    assert dynamic["input_ids"].shape == (2, width) and padded["input_ids"].shape == (2, fixed)
    with torch.no_grad():
        (_, t_att_d, t_hid_d), (_, t_att_p, t_hid_p) = (models.forward_with_internals(teacher, b)
                                                         for b in (dynamic, padded))
        (_, s_att_d, s_hid_d), (_, s_att_p, s_hid_p) = (models.forward_with_internals(student, b)
                                                         for b in (dynamic, padded))
    for d, p in zip(t_hid_d + s_hid_d, t_hid_p + s_hid_p):  # the dynamic batch's positions are unchanged
        torch.testing.assert_close(p[:, :width], d, rtol=1e-4, atol=1e-5)
    for d, p in zip(t_att_d + s_att_d, t_att_p + s_att_p):
        torch.testing.assert_close(losses._zero_masked(p[:, :, :width, :width]), losses._zero_masked(d),
                                   rtol=1e-4, atol=1e-4)
    attention_map, hidden_map = losses.layer_mapping(4, 2)
    rep_d = losses.hidden_state_loss(s_hid_d, t_hid_d, hidden_map)
    rep_p = losses.hidden_state_loss(s_hid_p, t_hid_p, hidden_map)
    att_d = losses.attention_score_loss(s_att_d, t_att_d, attention_map)
    att_p = losses.attention_score_loss(s_att_p, t_att_p, attention_map)
    # Hidden states: the fixed-width MSE = (dynamic sum + [PAD]-position sum beyond `width`) / fixed-width count.
    pad_rep = sum(((s_hid_p[s][:, width:] - t_hid_p[t][:, width:]) ** 2).sum() for s, t in enumerate(hidden_map))
    heads, hidden = 12, 48
    assert float(rep_p) == pytest.approx((float(rep_d) * 2 * width * hidden + float(pad_rep)) / (2 * fixed * hidden),
                                         rel=1e-4)
    # Attention: beyond `width` only the [PAD] queries against each row's real keys are unmasked.
    pad_att = 0.0
    for s, t in enumerate(attention_map):
        for row, length in enumerate(lengths):
            pad_att += float(((s_att_p[s][row, :, width:, :length] - t_att_p[t][row, :, width:, :length]) ** 2).sum())
    assert float(att_p) == pytest.approx((float(att_d) * 2 * heads * width ** 2 + pad_att) / (2 * heads * fixed ** 2),
                                         rel=1e-4)
    # Those [PAD] terms are far from negligible: rescaling the dynamic loss alone would miss most of the fixed one.
    assert float(pad_rep) / (2 * fixed * hidden) > 0.3 * float(rep_p)
    assert pad_att / (2 * heads * fixed ** 2) > 0.3 * float(att_p)
