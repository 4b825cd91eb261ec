"""The one user-error type: a problem a person can fix, printed as one line by every entry point."""

ERROR_MARKER = "[tinybert-error] "


class UserError(ValueError):
    """An option, input or output a person can fix; the entry point prints it as one line and exits 1."""


class InputError(UserError):
    """A damaged or wrongly laid out input file, found while reading it (possibly on a worker).

    The message starts with ERROR_MARKER so that the launcher finds it inside whatever the runner wraps it in.
    """

    def __init__(self, message: str):
        super().__init__(ERROR_MARKER + message)


def describe(error: BaseException) -> str:
    """An exception from a library (transformers, pyarrow, torch) as one line: its type and first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
