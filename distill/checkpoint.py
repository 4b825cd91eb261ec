"""The trainer's one checkpoint file: everything needed to continue exactly, read back with `weights_only=True`.

A checkpoint holds the step, the student (with fit_dense), optimizer, scheduler and grad scaler states, the RNG
states and reader position of every rank, the best dev result so far and the resolved config, all as tensors and
plain values, so that loading it never runs code from the file. It lives in the run's --output, which
`check_output_dir` makes sure is a usable directory before anything is loaded.
"""

import io
import logging
import os
import pickle
import random
from typing import Any, Dict, Mapping, Sequence

import numpy as np
import torch

from contract.errors import UserError, describe, disk_full

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
_KEYS = ("step", "model", "optimizer", "scheduler", "scaler", "ranks", "config")
_REMEDY = "delete it, or pass --no_resume to start afresh (which overwrites it)"


def check_output_dir(path: str) -> None:
    """Refuses an --output that cannot be a directory, before anything is loaded.

    Raises:
      UserError: it is an existing file, or cannot be created.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--output {path} is an existing file; pass a directory (it will be created)")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:  # a file on the way, no permission, read-only filesystem
        raise UserError(f"--output {path} cannot be created ({describe(error)}); pass a writable directory") from error


def rng_state() -> Dict[str, Any]:
    """Every RNG's state as tensors and plain values, so that `torch.load(weights_only=True)` reads it back."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {"python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                        "gauss_next": gauss_next},
             "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restores what `rng_state` saved."""
    python, numpy_state = state["python"], state["numpy"]
    random.setstate((python["version"], tuple(python["internal"].tolist()), python["gauss_next"]))
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_checkpoint(state: Mapping[str, Any], path: str) -> None:
    """Writes `state` to `path` through a temporary name, so a kill leaves the previous checkpoint whole.

    The bytes are made in memory and written by Python, so that a full disk is an OSError that says so (torch's own
    writer reports it as an internal assertion).

    Raises:
      UserError: no space left on the device.
    """
    tmp_path = path + ".tmp"
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    try:
        with open(tmp_path, "wb") as handle:
            handle.write(buffer.getbuffer())
    except OSError as error:
        full = disk_full(error, path)
        if full is None:
            raise
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise full from None
    os.replace(tmp_path, path)


def read_checkpoint(path: str) -> Dict[str, Any]:
    """A checkpoint read with `weights_only=True`: tensors and plain values only, never code from the file.

    Raises:
      UserError: the file is damaged, holds anything else (e.g. a pickled object), or lacks a checkpoint's keys.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pylint: disable=broad-except  # garbage, truncation or a refused pickle: one line
        raise UserError(f"{path} is damaged or holds more than tensors and plain values ({_refusal(error, path)}); "
                        f"it was not loaded, since loading it could run code: {_REMEDY}") from error
    missing = [key for key in _KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise UserError(f"{path} is not a distill checkpoint (no {', '.join(missing)}); {_REMEDY}")
    return state


def _refusal(error: BaseException, path: str) -> str:
    """Why torch refused the file: for a pickle it would not load, the globals it names (asked of torch, not read
    from its message, whose first lines advise loading the file anyway); else the error's type and first line."""
    if not isinstance(error, pickle.UnpicklingError):
        return describe(error)
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # pylint: disable=broad-except  # not torch.save's zip format (e.g. a bare pickle)
        names = []
    if not names:
        return type(error).__name__
    return f"{type(error).__name__}: Unsupported global {', '.join(names)}"


def check_resumable(state: Mapping[str, Any], *, path: str, world_size: int, config: Mapping[str, Any]) -> None:
    """Refuses a checkpoint written by another number of processes, and warns of options that changed since.

    Args:
      config: this run's resolved config (`TrainConfig.to_dict()`).

    Raises:
      UserError: the checkpoint has another number of per-rank states than `world_size`.
    """
    ranks: Sequence[Any] = state["ranks"]
    if not isinstance(ranks, list) or len(ranks) != world_size:
        count = len(ranks) if isinstance(ranks, list) else "?"
        raise UserError(f"{path} was written by {count} processes, not {world_size}; resume with the same count or "
                        "pass --no_resume")
    saved = dict(state["config"])
    for group in ("distill", "data", "optim"):
        changed = {k: (saved.get(group, {}).get(k), v) for k, v in config[group].items()
                   if saved.get(group, {}).get(k) != v}
        if changed:
            logger.warning("resuming with changed %s options (saved, now): %s", group, changed)


def check_finite_weights(model: torch.nn.Module, *, step: int) -> None:
    """Never saves a model whose weights are not finite.

    Raises:
      UserError: a weight is NaN or infinite.
    """
    for name, parameter in model.named_parameters():
        if not torch.isfinite(parameter.detach()).all():
            raise UserError(f"step {step}: the student's weight {name} is not finite; nothing was saved (the last "
                            "checkpoint, if any, is kept): lower --learning_rate")
