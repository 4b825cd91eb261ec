"""The one way options are declared: frozen dataclass fields with their help in the metadata, checks in
`__post_init__`, and one small mechanism that turns them into argparse options and back.

    @dataclasses.dataclass(frozen=True)
    class ReadSettings:
        input: str = option("in.tsv", help="input file(s)")
        seed: int = option(42, help="base seed")
        mode: str = option("pairs", help="instance mode", choices=("pairs", "single"))

    parser = strict_parser(prog="tinybert-x")
    add_arguments(parser, ReadSettings)
    settings = from_namespace(parser.parse_args(argv), ReadSettings)

A field's type decides the option's type (`int`, `float`, `str`, `Optional[...]` of those; `bool` is a switch).
`cli=False` keeps a field out of the command line (set by the program). Errors argparse finds (a bad value, a
missing required option) are a `UserError`; `unknown_option_error` names the closest flag of a misspelt one.
"""

import argparse
import dataclasses
import difflib
import typing
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple, Type, TypeVar

from contract.errors import UserError

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, *, help: str, cli: bool = True,  # pylint: disable=redefined-builtin
           choices: Sequence[Any] = None, metavar: str = None) -> Any:
    """A dataclass field that is also a command-line option `--<field name>`."""
    metadata = {"help": help, "cli": cli}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if metavar is not None:
        metadata["metavar"] = metavar
    return dataclasses.field(default=default, metadata=metadata)


def require(condition: bool, message: str) -> None:
    """A check in `__post_init__`: `message` as a UserError when `condition` is false."""
    if not condition:
        raise UserError(message)


def require_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    require(value in choices, f"--{name} must be one of {', '.join(map(str, choices))}, not {value!r}")


class StrictParser(argparse.ArgumentParser):
    """argparse whose errors are one-line UserErrors (not usage text and exit status 2), with no abbreviations."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UserError(f"{message} (see {self.prog} --help)")


def strict_parser(*, prog: str, description: str = "", add_help: bool = True) -> StrictParser:
    return StrictParser(prog=prog, description=description, add_help=add_help,
                        formatter_class=argparse.RawDescriptionHelpFormatter)


def cli_fields(config_class: type, *, skip: Iterable[str] = ()) -> Tuple[dataclasses.Field, ...]:
    skipped = set(skip)
    return tuple(field for field in dataclasses.fields(config_class)
                 if field.metadata.get("cli", True) and field.name not in skipped and "help" in field.metadata)


def _value_type(annotation: Any) -> type:
    """int, float, bool or str for a field annotation (`Optional[int]` is int)."""
    if isinstance(annotation, str):  # postponed annotations
        text = annotation.replace("typing.", "")
        for name, kind in (("bool", bool), ("int", int), ("float", float)):
            if text in (name, f"Optional[{name}]"):
                return kind
        return str
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if args and typing.get_origin(annotation) is typing.Union:
        annotation = args[0]
    return annotation if annotation in (bool, int, float) else str


def add_arguments(parser: argparse.ArgumentParser, config_class: type, *, skip: Iterable[str] = ()) -> None:
    """One `--name` option per CLI field of `config_class` (its default, help and choices)."""
    hints = typing.get_type_hints(config_class)
    for field in cli_fields(config_class, skip=skip):
        kind = _value_type(hints.get(field.name, field.type))
        kwargs: Dict[str, Any] = {"help": field.metadata["help"], "dest": field.name}
        if kind is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = kind
            required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            kwargs["required"] = required
            if not required:
                kwargs["default"] = field.default
            for key in ("choices", "metavar"):
                if key in field.metadata:
                    kwargs[key] = field.metadata[key]
        parser.add_argument(f"--{field.name}", **kwargs)


def from_namespace(namespace: argparse.Namespace, config_class: Type[T], **fixed: Any) -> T:
    """`config_class` built from parsed options (every field the namespace has) and `fixed` values."""
    values = {**vars(namespace), **fixed}
    names = {field.name for field in dataclasses.fields(config_class)}
    return config_class(**{name: value for name, value in values.items() if name in names})


def option_names(parser: argparse.ArgumentParser) -> Tuple[str, ...]:
    """Every flag `parser` knows (`--name`), sorted."""
    return tuple(sorted({flag for action in parser._actions  # pylint: disable=protected-access
                         for flag in action.option_strings}))


def raw_value(argv: Sequence[str], flag: str) -> Optional[str]:
    """The value a raw command line gives `flag` (`--flag VALUE` or `--flag=VALUE`; the last one wins), before any
    parsing: for what a command must know before its parser exists. None where it is absent."""
    value = None
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def unknown_option_error(arg: str, known: Iterable[str]) -> UserError:
    """The one line for an argument nobody declared: the closest known flag of a misspelt one."""
    if not arg.startswith("-"):
        return UserError(f"unexpected argument {arg!r}: options are written --name value or --name=value")
    name = arg.split("=", 1)[0]
    close = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else "; see --help for the options"
    return UserError(f"unknown option {name}{hint}")
