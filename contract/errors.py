"""The one user-error type: a problem a person can fix, printed as one line by every entry point.

A UserError travels as a value, never as text to search for: in one process (and through runners that pickle
exceptions, like Dask) it is found in the raised exception's cause chain (`find_user_error`); where a runner
carries a worker's failure only as text (Beam's multi-processing DirectRunner, portable runners), the worker
records it as a small JSON record (`error_record`) in the run's output folder before it fails, and the launcher
reads it back (`message_of_record`).
"""

import errno
import json
import lzma
import os
import zlib
from typing import Iterator, Optional

ERRORS_SUBDIR = "_errors"  # a running pipeline's error records: OUTPUT/_errors/<uuid>.json


class UserError(ValueError):
    """An option, input or output a person can fix; the entry point prints it as one line and exits 1."""

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InputError(UserError):
    """A damaged or wrongly laid out input file, found while reading it (possibly on a worker)."""


def disk_full(error: BaseException, path: str) -> Optional[UserError]:
    """The one line for a write that failed because the disk is full (errno ENOSPC), else None."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return UserError(f"no space left on device writing {path}; free some space (or choose another --output) and "
                         "run the command again")
    return None


def _chain(error: Optional[BaseException]) -> Iterator[BaseException]:
    """`error` and every exception it was raised from (its `__cause__`/`__context__` chain), each once."""
    seen, pending = set(), [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend([current.__cause__, current.__context__])


def find_user_error(error: Optional[BaseException]) -> Optional[UserError]:
    """The UserError that `error` is or was raised from (its `__cause__`/`__context__` chain), or None."""
    return next((current for current in _chain(error) if isinstance(current, UserError)), None)


# The exit status of a command whose standard output's reader went away (`cmd | head`): a shell's status for a
# program that SIGPIPE ended (128 + 13), as `yes | head` gives; Python turns SIGPIPE into BrokenPipeError instead.
STDOUT_CLOSED_STATUS = 141


def stdout_closed(error: Optional[BaseException]) -> bool:
    """Whether `error` is (or was raised from) a broken pipe while this process's standard output has no reader left.
    If so, the standard output now goes to the null device, so that nothing written later (the interpreter's last
    flush) fails again; the caller exits with `STDOUT_CLOSED_STATUS` and prints nothing."""
    if not any(isinstance(current, BrokenPipeError) for current in _chain(error)) or not _reader_gone(1):
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    return True


def _reader_gone(fd: int) -> bool:
    """A pipe whose reading end is closed polls as an error for writing (Linux, macOS); False where poll is missing."""
    try:
        import select
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def error_record(error: UserError) -> bytes:
    """A worker's UserError as the record the launcher reads back."""
    return json.dumps({"error": type(error).__name__, "message": error.message}).encode("utf-8")


def message_of_record(data: bytes) -> Optional[str]:
    """The message of an `error_record`, or None for anything else (a partial write)."""
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    message = record.get("message") if isinstance(record, dict) else None
    return message if isinstance(message, str) and message else None


class DamagedStream(ValueError):
    """A compressed input that ends inside a stream (a truncated download) or holds no valid stream at all.

    Attributes:
      offset: the compressed byte near which it was found (-1 where the file cannot tell).
      cause: why, as a clause ("ends before its end-of-stream marker (truncated)", the decompressor's reason).
    """

    def __init__(self, message: str, offset: int, cause: str = ""):
        super().__init__(message)
        self.offset = offset
        self.cause = cause


# What Python's gzip/bz2/xz readers raise on a damaged stream: EOFError when it is truncated, OSError (BadGzipFile,
# "Invalid data stream") when it is no such stream, zlib.error / LZMAError on a corrupt block.
DECOMPRESSION_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)


def damaged_stream(error: BaseException, raw) -> DamagedStream:
    """The DamagedStream for a decompressor's `error` while reading from the compressed file object `raw`."""
    try:
        offset = raw.tell()
    except (OSError, ValueError):
        offset = -1
    cause = "ends before its end-of-stream marker (truncated)" if isinstance(error, EOFError) else str(error)
    return DamagedStream(f"the compressed stream {cause} near byte {offset}", offset, cause)


def describe(error: BaseException) -> str:
    """An exception from a library (transformers, pyarrow, torch) as one line: its type and first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
