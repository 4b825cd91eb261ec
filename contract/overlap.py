"""An output is never, and never contains, one of the run's inputs: the check every writing command makes before
any work (and before its claim could delete anything), with or without --overwrite.

Local paths are compared after resolving links (`os.path.realpath`); URLs (`gs://...`) as written, without a
trailing slash. Names that are no path (a hub model name such as `bert-base-uncased`) are not compared.
"""

import os
from typing import Iterable, Mapping, Optional, Sequence, Union

from contract.errors import UserError

Paths = Union[None, str, Sequence[str]]


def _normal(path: str) -> str:
    if "://" in path:
        return path.rstrip("/")
    return os.path.realpath(os.path.expanduser(path))


def _is_within(inner: str, outer: str) -> bool:
    """Whether `inner` is `outer` or lies inside it."""
    if inner == outer:
        return True
    separator = "/" if "://" in outer else os.sep
    return inner.startswith(outer.rstrip(separator) + separator)


def _local_or_url(path: str) -> bool:
    return "://" in path or os.path.exists(path) or os.path.isabs(path) or path.startswith(".")


def _paths(value: Paths) -> Iterable[str]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def refuse_overlap(output: Optional[str], inputs: Mapping[str, Paths]) -> None:
    """Refuses an `output` that is, contains or lies inside one of `inputs` ({option name: path or paths}).

    Raises:
      UserError: one line naming the output, the option and the input it overlaps.
    """
    if not output:
        return
    out = _normal(output)
    for option, value in inputs.items():
        for path in _paths(value):
            if not path or path.lower() == "none" or not _local_or_url(path):
                continue
            given = path.split(".zip:", 1)[0] + ".zip" if ".zip:" in path else path
            source = _normal(given)
            if source == out:
                how = "is"
            elif _is_within(source, out):
                how = "contains"
            elif _is_within(out, source):
                how = "lies inside"
            else:
                continue
            raise UserError(f"--output {output} {how} the run's input --{option} {path}; write the output to a "
                            "folder apart from every input (nothing was changed)")
