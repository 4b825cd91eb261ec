"""A BERT encoder forward for bf16 on a CPU that answers only the masked rows, with oneDNN's fused Linear kernels.

`MaskedLMScorer` needs, per query, the last hidden state at one position. Transformers' `BertModel` computes every
position through every layer, and each `nn.Linear` is a GEMM followed by separate bias, activation and residual
passes. `FusedMaskedEncoder` computes the same function (up to bf16 rounding) with less work:
- the weights are packed once into oneDNN's blocked layout, and bias, GELU and the residual add run inside the GEMM
  (`torch.ops.mkldnn._linear_pointwise`, the kernels inductor's freezing pass emits), one fused Q/K/V projection;
- attention through `scaled_dot_product_attention` (a batch holds queries of one length: no padding, no mask);
- the last layer computes keys and values for every position but the query, attention output, feed-forward and
  layer norms for the masked position only (the other positions' outputs are never read).

It is used for `--precision bf16` on a CPU where the fused kernels exist (`available()`); fp32 keeps transformers'
own forward, whose results are the reference's.
"""

import copy
from typing import List, Optional

import torch
import torch.nn.functional as F

# hidden_act values whose GELU is the exact (erf) one, which oneDNN's "gelu" post-op with algorithm "none" computes.
_ERF_GELU = ("gelu",)


def available() -> bool:
    """True where this torch build has oneDNN and the fused Linear ops."""
    return bool(torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
                and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def supports(encoder) -> Optional[str]:
    """None when `encoder` (a transformers BertModel) can run fused, else why not (one phrase)."""
    config = encoder.config
    if not available():
        return "this torch build lacks oneDNN's fused Linear kernels"
    if getattr(config, "hidden_act", None) not in _ERF_GELU:
        return f"hidden_act {getattr(config, 'hidden_act', None)!r} is not the exact GELU"
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return f"position_embedding_type {config.position_embedding_type!r} is not absolute"
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return "a decoder configuration"
    return None


class _Layer:
    """One layer's weights in bf16, packed for oneDNN: a fused Q/K/V projection, or for the last layer (`last`),
    separate K/V (every position) and Q (the masked rows) projections."""

    def __init__(self, layer, rows_hint: int, *, last: bool):
        attention = layer.attention
        weights = [attention.self.query, attention.self.key, attention.self.value]
        qkv_weight = torch.cat([w.weight.detach() for w in weights]).to(torch.bfloat16)
        qkv_bias = torch.cat([w.bias.detach() for w in weights]).to(torch.bfloat16)
        hidden = qkv_weight.shape[1]
        if last:
            self.q = _pack(qkv_weight[:hidden].contiguous(), rows_hint), qkv_bias[:hidden].contiguous()
            self.kv = _pack(qkv_weight[hidden:].contiguous(), rows_hint), qkv_bias[hidden:].contiguous()
        else:
            self.qkv = _pack(qkv_weight.contiguous(), rows_hint), qkv_bias.contiguous()
        self.out = _pack_linear(attention.output.dense, rows_hint)
        self.norm1 = _norm(attention.output.LayerNorm)
        self.up = _pack_linear(layer.intermediate.dense, rows_hint)
        self.down = _pack_linear(layer.output.dense, rows_hint)
        self.norm2 = _norm(layer.output.LayerNorm)


def _pack(weight, rows_hint):
    return torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint)


def _pack_linear(linear, rows_hint):
    return (_pack(linear.weight.detach().to(torch.bfloat16).contiguous(), rows_hint),
            linear.bias.detach().to(torch.bfloat16).contiguous())


def _norm(layer_norm):
    return (layer_norm.weight.detach().to(torch.bfloat16), layer_norm.bias.detach().to(torch.bfloat16),
            layer_norm.eps)


def _linear(x, packed, attr="none"):
    weight, bias = packed
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], "none" if attr == "gelu" else "")


def _linear_add(x, residual, packed):
    weight, bias = packed
    return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")


def _layer_norm(x, norm):
    weight, bias, eps = norm
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


class FusedMaskedEncoder:
    """`encoder(input_ids, token_type_ids, mask_index) -> (batch, hidden)` bf16 hidden states at the masked rows.

    Args:
      encoder: a transformers `BertModel` in eval mode (any dtype: its weights are copied to bf16 and packed).
      rows_hint: the usual number of rows (tokens) per forward, oneDNN's packing hint.
    """

    def __init__(self, encoder, rows_hint: int = 8192):
        reason = supports(encoder)
        if reason:
            raise ValueError(f"cannot run this encoder fused: {reason}")
        config = encoder.config
        self.heads = config.num_attention_heads
        self.embeddings = copy.deepcopy(encoder.embeddings).to(torch.bfloat16).eval()  # `.to` is in place
        layers = encoder.encoder.layer
        self.layers: List[_Layer] = [_Layer(layer, rows_hint, last=index == len(layers) - 1)
                                     for index, layer in enumerate(layers)]

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, mask_index: torch.Tensor) -> torch.Tensor:
        batch, length = input_ids.shape
        x = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)  # (batch, length, hidden) bf16
        hidden = x.shape[-1]
        head_dim = hidden // self.heads
        x = x.reshape(batch * length, hidden)
        for layer in self.layers[:-1]:
            qkv = _linear(x, layer.qkv).view(batch, length, 3, self.heads, head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (batch, heads, length, head_dim) each
            context = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch * length, hidden)
            x = _layer_norm(_linear_add(context, x, layer.out), layer.norm1)
            x = _layer_norm(_linear_add(_linear(x, layer.up, "gelu"), x, layer.down), layer.norm2)
        last = self.layers[-1]
        rows = torch.arange(batch, device=x.device) * length + mask_index  # the masked rows of the flat batch
        kv = _linear(x, last.kv).view(batch, length, 2, self.heads, head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        masked = x.index_select(0, rows)  # (batch, hidden)
        q = _linear(masked, last.q).view(batch, 1, self.heads, head_dim).transpose(1, 2)  # (batch, heads, 1, hd)
        context = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, hidden)
        y = _layer_norm(_linear_add(context, masked, last.out), last.norm1)
        return _layer_norm(_linear_add(_linear(y, last.up, "gelu"), y, last.down), last.norm2)
