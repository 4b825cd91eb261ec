"""The one user-error type: a problem a person can fix, printed as one line by every entry point."""

import zlib

ERROR_MARKER = "[tinybert-error] "


class UserError(ValueError):
    """An option, input or output a person can fix; the entry point prints it as one line and exits 1."""


class InputError(UserError):
    """A damaged or wrongly laid out input file, found while reading it (possibly on a worker).

    The message starts with ERROR_MARKER so that the launcher finds it inside whatever the runner wraps it in.
    """

    def __init__(self, message: str):
        super().__init__(ERROR_MARKER + message)


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


# What Python's gzip/bz2 readers raise on a damaged stream: EOFError when it is truncated, OSError (BadGzipFile,
# "Invalid data stream") when it is no such stream, zlib.error on a corrupt block.
DECOMPRESSION_ERRORS = (EOFError, OSError, zlib.error)


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
