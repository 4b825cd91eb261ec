"""TinyBERT's distillation losses and the teacher-to-student layer mapping, in one place.

Shapes: attention scores are (batch, heads, seq, seq) and *pre-softmax* (`QK^T / sqrt(d)` plus the mask);
hidden states are (batch, seq, hidden), index 0 being the embedding output.
"""

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from contract.errors import UserError

# The reference adds -10000 to masked attention scores; anything at or below this is a masked position.
MASKED_SCORE_THRESHOLD = -1e2


def layer_mapping(teacher_layers: int, student_layers: int) -> Tuple[List[int], List[int]]:
    """Which teacher layer each student layer learns from (uniform mapping of the TinyBERT paper).

    With `k = teacher_layers / student_layers`: student attention layer `i` <- teacher attention layer
    `(i + 1) * k - 1`; student hidden state `i` (0 = embeddings) <- teacher hidden state `i * k`.

    Returns:
      (attention_map, hidden_map): teacher indices for student attention layers 0..M-1 and hidden states 0..M.

    Raises:
      ValueError: the teacher's depth is not a multiple of the student's.
    """
    if student_layers <= 0 or teacher_layers % student_layers != 0:
        raise ValueError(f"teacher layers ({teacher_layers}) must be a positive multiple of student layers "
                         f"({student_layers}) for the uniform TinyBERT mapping")
    step = teacher_layers // student_layers
    attention_map = [(i + 1) * step - 1 for i in range(student_layers)]
    hidden_map = [i * step for i in range(student_layers + 1)]
    return attention_map, hidden_map


def _zero_masked(scores: torch.Tensor) -> torch.Tensor:
    return torch.where(scores <= MASKED_SCORE_THRESHOLD, torch.zeros_like(scores), scores)


def attention_score_loss(student_scores: Sequence[torch.Tensor], teacher_scores: Sequence[torch.Tensor],
                         attention_map: Sequence[int]) -> torch.Tensor:
    """Sum over student layers of the MSE between pre-softmax attention scores, masked positions zeroed.

    Args:
      student_scores: one (batch, heads, seq, seq) tensor per student layer.
      teacher_scores: one (batch, heads, seq, seq) tensor per teacher layer.
      attention_map: teacher layer index for each student layer (see `layer_mapping`).
    """
    total = student_scores[0].new_zeros((), dtype=torch.float32)
    for student_index, teacher_index in enumerate(attention_map):
        student = _zero_masked(student_scores[student_index].float())
        teacher = _zero_masked(teacher_scores[teacher_index].float())
        total = total + F.mse_loss(student, teacher)
    return total


def hidden_state_loss(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor],
                      hidden_map: Sequence[int], fit_dense: Optional[torch.nn.Module] = None) -> torch.Tensor:
    """Sum over student hidden states (embeddings included) of the MSE to the mapped teacher state.

    Args:
      student_hidden: M + 1 tensors (batch, seq, student_hidden).
      teacher_hidden: L + 1 tensors (batch, seq, teacher_hidden).
      hidden_map: teacher index for each student hidden state.
      fit_dense: learned projection student_hidden -> teacher_hidden (one, shared by all layers, as the reference);
        None when the student's states come already projected (the Student model projects inside its forward,
        where DDP can see it).
    """
    total = student_hidden[0].new_zeros((), dtype=torch.float32)
    for student_index, teacher_index in enumerate(hidden_map):
        projected = student_hidden[student_index]
        if fit_dense is not None:
            projected = fit_dense(projected)  # (batch, seq, teacher_hidden)
        total = total + F.mse_loss(projected.float(), teacher_hidden[teacher_index].float())
    return total


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                       temperature: float, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the student's distribution against the teacher's, both at temperature T.

    Args:
      student_logits, teacher_logits: (batch, classes).
      temperature: both sets of logits are divided by it before the softmax.
      reduction: "mean" averages `-p_teacher * log p_student` over batch *and* classes, as the reference does;
        "batchmean" sums over classes and averages over the batch (the textbook cross-entropy; `classes` times
        larger, so the same learning rate takes larger steps).

    Raises:
      ValueError: an unknown reduction.
    """
    targets = F.softmax(teacher_logits.float() / temperature, dim=-1)
    log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    per_class = -targets * log_probs  # (batch, classes)
    if reduction == "mean":
        return per_class.mean()
    if reduction == "batchmean":
        return per_class.sum(dim=-1).mean()
    raise ValueError(f"reduction must be 'mean' or 'batchmean', not {reduction!r}")


def regression_loss(student_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """MSE between the student's outputs (batch, 1) and the targets for a regression task (STS-B).

    `targets` are the gold labels (batch,) as the reference uses, or the teacher's outputs (batch, 1).
    """
    return F.mse_loss(student_logits.float().view(-1), targets.float().view(-1))


def intermediate_losses(*, student_scores, teacher_scores, student_hidden, teacher_hidden,
                        fit_dense: Optional[torch.nn.Module] = None) -> Dict[str, torch.Tensor]:
    """The intermediate-layer loss of general and task stage 1: {"loss", "att_loss", "rep_loss"}.

    `fit_dense` as in `hidden_state_loss` (None: student hidden states are already projected)."""
    attention_map, hidden_map = layer_mapping(len(teacher_scores), len(student_scores))
    att = attention_score_loss(student_scores, teacher_scores, attention_map)
    rep = hidden_state_loss(student_hidden, teacher_hidden, hidden_map, fit_dense)
    return {"loss": att + rep, "att_loss": att, "rep_loss": rep}


def check_finite(terms: Dict[str, float], *, step: int) -> None:
    """Stops before a non-finite loss reaches the weights: the last checkpoint stays the last good one.

    Raises:
      UserError: a loss term is NaN or infinite at `step`.
    """
    if all(math.isfinite(value) for value in terms.values()):
        return
    shown = ", ".join(f"{name}={value}" for name, value in sorted(terms.items()))
    raise UserError(f"step {step}: the loss is not finite ({shown}); training stopped and saved nothing from this "
                    "step (the last checkpoint, if any, is kept): lower --learning_rate or check the data and the "
                    "teacher")
