"""malloc that keeps what a worker's tasks free, while they run, where a dask nanny told it to give memory back.

A dask worker's nanny sets `MALLOC_TRIM_THRESHOLD_` (65536 by default) so that an idle worker returns freed memory
to the system. Setting it also turns off glibc's dynamic mmap threshold: every buffer over 128 KiB is then mapped
and faulted in afresh, and every free at the top of the heap is given back. A task that allocates and frees large
buffers pays for that again and again:
* the masked LM's forwards (a batch's activations, tens of MB): 13% of the scorer's time (161 queries, fp32, one
  thread: 24.1-24.5 s against 21.1-21.7 s);
* the corpus's instance cutting (packed documents, row batches, their Arrow encoding): 30.4 s of task time against
  22.2 s on a 200 MB text corpus, two workers.
While a holder runs (`hold()` ... `release()`: every dask task, and the masked LM from its load to its teardown),
buffers up to 32 MiB come from the heap again and the heap keeps up to 1 GiB of freed memory, as glibc does by
itself; when the last holder is done, the nanny's settings are back and the worker trims as it asked.
"""

import ctypes
import os
import sys
import threading
from typing import Optional

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_GLIBC_MMAP_THRESHOLD = 128 * 1024  # glibc's static default, in force once the trim threshold is set
_KEPT_MMAP_THRESHOLD = 32 * 1024 * 1024  # the top of glibc's own dynamic threshold on 64-bit Linux
_KEPT_TRIM_THRESHOLD = 1 << 30

_LOCK = threading.Lock()
_HOLDERS = 0
_RESTORE: Optional[int] = None  # the trim threshold to put back, where hold() changed the settings


def hold() -> Optional[int]:
    """One more holder; the first one keeps freed memory (module docstring). Returns the trim threshold that will
    be restored (the nanny's), or None where nothing was changed (no such variable, not glibc)."""
    global _HOLDERS, _RESTORE
    with _LOCK:
        _HOLDERS += 1
        if _HOLDERS == 1:
            _RESTORE = _keep()
        return _RESTORE


def release() -> None:
    """One holder fewer; after the last one, the settings that `hold` changed are back."""
    global _HOLDERS, _RESTORE
    with _LOCK:
        _HOLDERS = max(0, _HOLDERS - 1)
        if _HOLDERS == 0 and _RESTORE is not None:
            _put_back(_RESTORE)
            _RESTORE = None


def _keep() -> Optional[int]:
    value = os.environ.get("MALLOC_TRIM_THRESHOLD_", "")
    if not value.isdigit() or not sys.platform.startswith("linux"):
        return None
    mallopt = _mallopt()
    if mallopt is None or not mallopt(_M_MMAP_THRESHOLD, _KEPT_MMAP_THRESHOLD):
        return None
    mallopt(_M_TRIM_THRESHOLD, _KEPT_TRIM_THRESHOLD)
    return int(value)


def _put_back(trim_threshold: int) -> None:
    mallopt = _mallopt()
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, _GLIBC_MMAP_THRESHOLD)
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)


_LIBC_MALLOPT = []  # [mallopt or None], looked up once


def _mallopt():
    if not _LIBC_MALLOPT:
        try:
            libc = ctypes.CDLL("libc.so.6")
            _LIBC_MALLOPT.append(libc.mallopt if libc.gnu_get_libc_version else None)
        except (OSError, AttributeError):  # not glibc (musl has no gnu_get_libc_version)
            _LIBC_MALLOPT.append(None)
    return _LIBC_MALLOPT[0]
