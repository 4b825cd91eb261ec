"""Masked-LM candidates for words of a single WordPiece, computed in batches.

For a word at WordPiece position `i` of a sentence with pieces `p`, the reference feeds BERT
`[CLS] p-with-p[i]-masked [SEP] p [SEP]` (segment ids 0 for `[CLS] A [SEP]`, 1 after), cut at 512 tokens, takes the
`M` highest logits at the mask and drops the pieces that start with `##`; a mask at position 512 or later has no
candidates. `MaskedLMScorer` computes exactly that for many queries at once:
- identical queries are computed once;
- queries are grouped by exact input length, so a batch needs no padding and no attention mask;
- the vocabulary head runs only on the masked rows, not on every position;
- batches are formed from the sorted queries it is given, so the same set of queries always gives the same batches.

A query reads at most the first 511 pieces of its sentence, and only a mask before position 511 has candidates;
`window_queries` builds just those queries, holding just those pieces, so a sentence of any length costs at most
511 queries of bounded size (without the window, a 100k-piece sentence would cost 100k queries of 100k pieces each).
"""

import contextlib
import copy
import dataclasses
import types
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

MAX_POSITIONS = 512
# [CLS] + 511 pieces fill the window: the pieces a query's input can hold, and the masks that can have candidates.
WINDOW_PIECES = MAX_POSITIONS - 1
PRECISIONS = ("fp32", "bf16", "int8")
# Tokens per forward when the caller does not say: a CPU gains nothing past ~8k (the GEMMs are already large), a GPU
# needs far more rows to fill its SMs.
DEFAULT_BATCH_TOKENS = {"cpu": 8192, "cuda": 65536}
# CPU flags (/proc/cpuinfo) that give native instructions for a precision; without them torch emulates bf16 with
# fp32 arithmetic plus casts (slower than fp32) and int8 GEMMs run on plain AVX2/AVX-512.
_NATIVE_FLAGS = {"bf16": ("amx_bf16", "avx512_bf16"), "int8": ("amx_int8", "avx512_vnni", "avx_vnni")}


def default_batch_tokens(device: str) -> int:
    """`max_batch_tokens` for a device when the user gave none: 8192 on a CPU, 65536 on a GPU."""
    return DEFAULT_BATCH_TOKENS["cuda" if str(device).startswith("cuda") else "cpu"]


def describe_precisions(cpu_flags: Optional[Iterable[str]] = None) -> Dict[str, str]:
    """Which precision paths run natively on this CPU: {"fp32": ..., "bf16": ..., "int8": ...}, one phrase each.

    Args:
      cpu_flags: the CPU's feature flags (names as in /proc/cpuinfo: avx512_bf16, amx_bf16, avx512_vnni...); None
        asks `cpu_flags()`.
    Returns:
      e.g. {"fp32": "native", "bf16": "native (avx512_bf16)", "int8": "native (avx512_vnni)"}; bf16 "emulated" where
      the CPU has no bf16 instructions (it then runs slower than fp32: prefer int8 there).
    """
    flags = set(cpu_flags_of_this_machine() if cpu_flags is None else cpu_flags)
    result = {"fp32": "native"}
    for precision, wanted in _NATIVE_FLAGS.items():
        found = [flag for flag in wanted if flag in flags]
        result[precision] = (f"native ({found[0]})" if found
                             else "emulated" if precision == "bf16" else "no VNNI (slower int8 GEMMs)")
    return result


def cpu_flags_of_this_machine() -> List[str]:
    """This CPU's feature flags: torch's own probe (`torch.cpu.get_capabilities()`, any OS), else /proc/cpuinfo."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:
        return [name for name, value in get_capabilities().items() if value is True]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return line.partition(":")[2].split()
    except OSError:
        pass
    return []


@dataclasses.dataclass(frozen=True, order=True)
class MaskedQuery:
    """One masked-LM question: the sentence's WordPiece ids (no special tokens) and the position to mask."""
    piece_ids: Tuple[int, ...]
    position: int


def build_input(query: MaskedQuery, *, cls_id: int, sep_id: int, mask_id: int
                ) -> Tuple[List[int], List[int], Optional[int]]:
    """Token ids, segment ids and mask index of a query, cut at 512 tokens as the reference cuts them.

    Returns a mask index of None when the masked piece falls at position 512 or later (no candidates).
    """
    # The input never holds more than WINDOW_PIECES pieces: cut before copying (a long sentence is not copied whole).
    pieces = list(query.piece_ids[:WINDOW_PIECES])
    masked = list(pieces)
    if in_window(query.position):
        masked[query.position] = mask_id
    ids = [cls_id] + masked + [sep_id] + pieces + [sep_id]
    segments = [0] * (len(pieces) + 2) + [1] * (len(pieces) + 1)
    mask_index = query.position + 1
    return ids[:MAX_POSITIONS], segments[:MAX_POSITIONS], (mask_index if mask_index < MAX_POSITIONS else None)


def in_window(position: int) -> bool:
    """True when a mask at piece `position` falls inside the 512-token input (it can have candidates)."""
    return position < WINDOW_PIECES


def window_queries(piece_ids: Sequence[int], positions: Iterable[int]) -> List[MaskedQuery]:
    """The queries of `positions` that fall inside the window, all sharing the sentence's first 511 pieces.

    `build_input` gives the same input for these as for the uncut sentence: past 511 pieces the input is
    `[CLS]` + the first 511 pieces (one masked), segment 0 throughout, whatever the sentence's length.
    """
    window = tuple(piece_ids[:WINDOW_PIECES]) if len(piece_ids) > WINDOW_PIECES else tuple(piece_ids)
    return [MaskedQuery(window, position) for position in positions if in_window(position)]


class MaskedLMScorer:
    """Top-`top_k` masked-LM candidates for many queries, batched.

    Args:
      model: a `BertForMaskedLM` (anything with `.bert` and `.cls` like it), in eval mode.
      tokenizer: its Hugging Face tokenizer (for the special ids and the id -> piece table).
      top_k: how many ids to take at the mask before `##` pieces are dropped (the reference's M).
      max_batch_tokens: a batch holds at most this many tokens (rows x length); None: 8192 on a CPU, 65536 on a
        GPU (`default_batch_tokens`).
      precision: "fp32" (the reference's numbers), "bf16" (encoder in bfloat16, head in float32: for GPUs and CPUs
        with native bf16) or "int8" (encoder Linear layers dynamically quantized to int8, head in float32: for
        CPUs without native bf16, CPU only).
      device: torch device for the forward passes ("cpu", "cuda", "cuda:1").
      fused: with precision "bf16" on a CPU, run the encoder through `augment.fused_encoder` (oneDNN's fused
        kernels, the last layer on the masked rows only). None (default): wherever it is supported; False: never
        (transformers' own forward, for comparison); True: insist (ValueError where unsupported).
      bf16_autocast: with precision "bf16", keep the encoder's weights in float32 and run it under
        `torch.autocast(bfloat16)` instead of casting the weights once (measured slower on a CPU: every Linear casts
        its weight again on every forward; kept for comparison on GPUs).
    """

    def __init__(self, model, tokenizer, *, top_k: int = 15, max_batch_tokens: Optional[int] = 8192,
                 precision: str = "fp32", device: str = "cpu", bf16_autocast: bool = False,
                 fused: Optional[bool] = None):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if not (hasattr(model, "bert") and hasattr(model, "cls")):
            raise ValueError("the masked-LM model must be a BertForMaskedLM (with .bert and .cls)")
        self._device = torch.device(device)
        # The head shares its decoder weight with the input embeddings; copy it so it stays float32 in bf16 mode.
        self._head = copy.deepcopy(model.cls).float().to(self._device).eval()
        self._encoder = model.bert.to(self._device).eval()
        self._autocast = precision == "bf16" and bf16_autocast
        if precision == "bf16" and not bf16_autocast:
            self._encoder = copy.deepcopy(self._encoder).to(torch.bfloat16)
        elif precision == "int8":
            if self._device.type != "cpu":
                raise ValueError("precision int8 (dynamic quantization) runs on the CPU only; use bf16 on a GPU")
            from torch.ao.quantization import quantize_dynamic
            self._encoder = quantize_dynamic(copy.deepcopy(self._encoder), {torch.nn.Linear}, dtype=torch.qint8)
        self._top_k = top_k
        self._precision = precision
        self._fused = None
        if fused is not False and precision == "bf16" and not bf16_autocast and self._device.type == "cpu":
            from augment import fused_encoder
            reason = fused_encoder.supports(self._encoder)
            if reason is None:
                self._fused = fused_encoder.FusedMaskedEncoder(self._encoder, rows_hint=max_batch_tokens or 8192)
            elif fused:
                raise ValueError(f"fused bf16 encoder unavailable: {reason}")
        elif fused:
            raise ValueError("the fused encoder runs precision bf16 on a CPU only")
        self._max_batch_tokens = max_batch_tokens or default_batch_tokens(self._device.type)
        self._cls_id = tokenizer.cls_token_id
        self._sep_id = tokenizer.sep_token_id
        self._mask_id = tokenizer.mask_token_id
        vocab = tokenizer.get_vocab()
        self._id_to_piece = [""] * (max(vocab.values()) + 1)
        for piece, index in vocab.items():
            self._id_to_piece[index] = piece
        self.forward_rows = 0  # how many masked inputs went through the model, for stats and tests

    @property
    def variant(self) -> str:
        """How the encoder runs: "fp32", "bf16-fused", "bf16", "bf16-autocast" or "int8" (its answers differ
        slightly between variants of one precision; a cache of answers keys on this)."""
        if self._fused is not None:
            return "bf16-fused"
        return self._precision + ("-autocast" if self._autocast else "")

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def max_batch_tokens(self) -> int:
        return self._max_batch_tokens

    def _precision_context(self):
        if self._autocast:
            return torch.autocast(device_type=self._device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _batches(self, queries: Sequence[MaskedQuery]):
        """Yields lists of (query, ids, segments, mask_index) of one length, in a deterministic order."""
        by_length: Dict[int, List[Tuple[MaskedQuery, List[int], List[int], int]]] = {}
        for query in queries:
            ids, segments, mask_index = build_input(query, cls_id=self._cls_id, sep_id=self._sep_id,
                                                    mask_id=self._mask_id)
            if mask_index is not None:
                by_length.setdefault(len(ids), []).append((query, ids, segments, mask_index))
        for length in sorted(by_length):
            items = by_length[length]
            rows = max(1, self._max_batch_tokens // length)
            for start in range(0, len(items), rows):
                yield items[start:start + rows]

    @torch.inference_mode()
    def candidates(self, queries: Iterable[MaskedQuery], *,
                   on_batch: Optional[Callable[[Dict[MaskedQuery, List[str]]], None]] = None
                   ) -> Dict[MaskedQuery, List[str]]:
        """The candidate pieces of every query, best first; [] where the mask falls beyond 512 tokens.

        Args:
          queries: the questions (duplicates are answered once).
          on_batch: called with each forward batch's answers as soon as they are known (the candidate store writes
            them then, so that a run killed later keeps them).
        """
        unique = sorted(set(queries))
        result: Dict[MaskedQuery, List[str]] = {query: [] for query in unique}
        for batch in self._batches(unique):
            ids = torch.tensor([item[1] for item in batch], device=self._device)  # (batch, seq)
            segments = torch.tensor([item[2] for item in batch], device=self._device)
            mask_index = torch.tensor([item[3] for item in batch], device=self._device)
            if self._fused is not None:
                masked = self._fused(ids, segments, mask_index).float()  # (batch, hidden)
            else:
                with self._precision_context():
                    hidden = self._encoder(input_ids=ids, token_type_ids=segments).last_hidden_state  # (b, seq, h)
                masked = hidden[torch.arange(len(batch), device=self._device), mask_index].float()  # (batch, hidden)
            logits = self._head(masked)  # (batch, vocab)
            top = torch.topk(logits, self._top_k, dim=-1).indices.tolist()
            self.forward_rows += len(batch)
            for item, ids_row in zip(batch, top):
                pieces = [self._id_to_piece[i] for i in ids_row]
                result[item[0]] = [piece for piece in pieces if not piece.startswith("##")]
            if on_batch is not None:
                on_batch({item[0]: result[item[0]] for item in batch})
        return result


def expected_variant(precision: str, *, device_type: str, config) -> str:
    """The `MaskedLMScorer.variant` of a scorer built with its defaults (as the pipeline builds it) for a model of
    `config` on a `device_type` ("cpu" or "cuda") device: known before the weights are loaded (the candidate store
    keys its answers on it)."""
    if precision == "bf16" and device_type == "cpu":
        from augment import fused_encoder
        return "bf16-fused" if fused_encoder.supports(types.SimpleNamespace(config=config)) is None else "bf16"
    return precision


class MaskedLMError(ValueError):
    """A model folder or name that is not a complete masked LM."""


def load_masked_lm(name_or_path: str):
    """The masked LM of `name_or_path`, in eval mode, loaded under the project's one transformers lock.

    Every weight the masked LM needs must come from the checkpoint: transformers would initialise a missing head at
    random (a BERT encoder without its masked-LM head, e.g. a sentence-transformers folder) and every candidate
    would be noise.

    Raises:
      MaskedLMError: the checkpoint lacks weights the model needs, or holds weights of another shape.
    """
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    from corpus.tokenizer import TRANSFORMERS_LOCK
    with TRANSFORMERS_LOCK:
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # its load report would list what we refuse below anyway
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # its "Loading weights" bar, on every run's (and worker's) stderr
        try:
            # sdpa: the fused attention kernel (no attention scores materialised); bf16 runs measured 1.7x faster
            # than eager attention on an avx512_bf16 CPU, fp32 results are those of the reference's own loading.
            model, info = AutoModelForMaskedLM.from_pretrained(name_or_path, output_loading_info=True,
                                                               attn_implementation="sdpa")
        finally:
            hf_logging.set_verbosity(verbosity)
            if bar:
                hf_logging.enable_progress_bar()
    missing = sorted(info.get("missing_keys") or ())
    mismatched = sorted(str(item[0] if isinstance(item, tuple) else item) for item in info.get("mismatched_keys") or ())
    if missing or mismatched:
        names = missing or mismatched
        what = "lacks weights" if missing else "holds weights of another shape for"
        head = " (no masked-LM head: a BERT encoder, e.g. a sentence-transformers folder?)" if any(
            name.startswith("cls.") for name in missing) else ""
        raise MaskedLMError(f"{name_or_path} {what} the masked LM needs: {', '.join(names[:3])}"
                            f"{f' and {len(names) - 3} more' if len(names) > 3 else ''}{head}; pass a masked-LM "
                            "checkpoint (BertForMaskedLM, e.g. bert-base-uncased)")
    return model.eval()
