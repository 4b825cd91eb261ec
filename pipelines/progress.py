"""Progress lines from inside the DoFns, at most one per stage every `interval` seconds per worker process.

A DirectRunner run is one call that returns at the end, so progress cannot be polled from the launcher: the
stages report it themselves, on the worker's log (the launcher's stderr for the in-process DirectRunner). On other
runners the same amounts are Beam metrics counters (`Metrics.counter`), which the engine's UI shows live (Dataflow
job page, Flink web UI, Dask dashboard logs).

A line reads `progress  masked-LM queries  12,345 / 67,890 (18%)  205/s  ETA 0:05:30`.
"""

import logging
import os
import threading
import time
from typing import Dict, Optional

INTERVAL_S = 10.0  # TINYBERT_PROGRESS_INTERVAL (seconds) overrides it

_lock = threading.Lock()
_meters: Dict[str, "_Meter"] = {}
logger = logging.getLogger("tinybert.progress")


class _Meter:
    def __init__(self, name: str, unit: str):
        self.name = name
        self.unit = unit
        self.done = 0
        self.total: Optional[int] = None
        self.started = time.time()
        self.last_report = self.started


def _format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def human_bytes(value: float) -> str:
    """A size as a person reads it: `512 B`, `1.5 KB`, `25.3 MB`, up to TB."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return str(value)


def line(meter: _Meter, now: float) -> str:
    elapsed = max(now - meter.started, 1e-9)
    rate = meter.done / elapsed
    show = human_bytes if meter.unit == "bytes" else (lambda v: f"{v:,.0f}")
    text = f"progress  {meter.name}  {show(meter.done)}"
    if meter.total:
        text += f" / {show(meter.total)} ({100.0 * meter.done / meter.total:.0f}%)"
    text += f"  {show(rate)}/s"
    if meter.total and rate > 0 and meter.done < meter.total:
        text += f"  ETA {_format_duration((meter.total - meter.done) / rate)}"
    return text


def advance(name: str, amount: int, *, total: Optional[int] = None, unit: str = "items",
            interval: Optional[float] = None) -> None:
    """Adds `amount` to the stage `name` of this process and logs a line if `interval` seconds have passed.

    Args:
      name: the stage, as a person reads it ("masked-LM queries").
      amount: units done since the last call.
      total: the stage's total where known (then a percentage and an ETA are shown). Each worker process knows the
        whole total, so with several workers the percentage of one worker's line understates the run's.
      unit: "bytes" shows sizes; anything else counts.
    """
    if interval is None:
        interval = float(os.environ.get("TINYBERT_PROGRESS_INTERVAL", INTERVAL_S))
    now = time.time()
    with _lock:
        meter = _meters.get(name)
        if meter is None:
            meter = _meters[name] = _Meter(name, unit)
        meter.done += amount
        if total:
            meter.total = total
        due = now - meter.last_report >= interval
        if due:
            meter.last_report = now
            text = line(meter, now)
    if due:
        logger.info(text)


def reset() -> None:
    """Forgets every stage (a new run in the same process)."""
    with _lock:
        _meters.clear()
