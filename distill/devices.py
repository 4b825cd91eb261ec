"""Where a run computes and in which precision: the torch device of `--device`, the autocast dtype of
`--precision`."""

from typing import Optional

import torch

from contract.errors import UserError


def resolve_device(requested: str, local_rank: int = 0):
    """The torch device of `--device` for this process.

    Raises:
      UserError: cuda asked for where CUDA is not available.
    """
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but CUDA is not available here (no GPU, or a CPU-only torch); use "
                        "--device cpu or auto")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device


def resolve_precision(requested: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype, or None for fp32: bf16/fp16 only where the device supports them."""
    if requested == "fp32":
        return None
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if requested == "auto":
            return torch.bfloat16 if bf16_ok else torch.float16
        if requested == "bf16" and not bf16_ok:
            raise UserError("--precision bf16 is not supported by this GPU; use fp16 or auto")
        return torch.bfloat16 if requested == "bf16" else torch.float16
    if requested == "auto":
        return None
    if requested == "fp16":
        raise UserError("--precision fp16 needs a CUDA device; use auto or fp32 on CPU")
    return torch.bfloat16
