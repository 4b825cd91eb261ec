"""The stable hash every seed and shard assignment derives from (never Python's salted `hash()`)."""

import hashlib
import random
from typing import Any


def stable_hash(key: Any) -> int:
    """A 64-bit hash of `key` that is the same in every process and on every machine.

    `key` is a str, bytes, int or a (nested) tuple of them; Python's `hash()` is salted per process and so unusable.
    """
    data = key if isinstance(key, bytes) else repr(key).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def example_rng(seed: int, example_id: str) -> random.Random:
    """The random generator of one example: a function of (seed, example id) only, whatever the runner."""
    return random.Random(stable_hash(f"{seed}\x00{example_id}".encode("utf-8")))
