"""What both pipelines do at the command line: strict options, one-line errors, logging set-up.

- Options are parsed strictly: Beam's own parser keeps going past an unknown flag ("Discarding unparseable args"),
  so `--num_augs 5` would run with the default. Here every flag must belong to Beam or to the pipeline, and a
  misspelt one stops the run with one line that names the closest valid flag.
- A `UserError` (an option, input or output a person can fix) becomes `error: <one line>` on stderr and exit
  status 1. An error raised inside a worker reaches the launcher wrapped by the runner; its line is found again by
  the marker `InputError` puts in front of it. Anything else is one line too (set TINYBERT_TRACEBACK=1 to see the
  traceback).
"""

import argparse
import difflib
import logging
import os
import sys
import time
from typing import Callable, Iterable, List, Optional, Sequence

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from contract.errors import ERROR_MARKER, UserError


class _StrictParser(_BeamArgumentParser):
    def error(self, message):  # argparse would print usage and exit 2
        raise UserError(message)


def _option_classes(own: Sequence[type]) -> List[type]:
    """Beam's option classes (those its runners read) and the pipeline's own, each once."""
    seen, classes = set(), []
    for cls in list(PipelineOptions.__subclasses__()) + list(own):
        if cls in seen:
            continue
        if cls in own or cls.__module__.startswith("apache_beam."):
            seen.add(cls)
            classes.append(cls)
    return classes


def _runner_name(argv: Sequence[str]) -> str:
    for index, arg in enumerate(argv):
        if arg.startswith("--runner="):
            return arg.split("=", 1)[1]
        if arg == "--runner" and index + 1 < len(argv):
            return argv[index + 1]
    return ""


def parse_pipeline_options(argv: Sequence[str], own: Sequence[type]) -> PipelineOptions:
    """`PipelineOptions(argv)` after checking that every flag is Beam's or the pipeline's.

    Raises:
      UserError: an unknown or misspelt flag (naming the closest valid one), a stray argument, or a value argparse
        cannot convert.
    """
    argv = list(argv)
    if not _runner_name(argv):
        argv.append("--runner=DirectRunner")  # Beam's default, said here so that Beam does not log that it chose it
    if "dask" in _runner_name(argv).lower():
        import apache_beam.runners.dask.dask_runner  # noqa: F401  (declares --dask_client_address and friends)
    parser = _StrictParser(allow_abbrev=False, add_help=False)
    for cls in _option_classes(own):
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    _, unknown = parser.parse_known_args(argv)
    if unknown:
        known = sorted({flag for action in parser._actions for flag in action.option_strings})  # pylint: disable=protected-access
        arg = unknown[0]
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else "; see --help for the options"
            raise UserError(f"unknown option {name}{hint}")
        raise UserError(f"unexpected argument {arg!r}: options are written --name value or --name=value")
    return PipelineOptions(argv)


def options_or_help(argv: Sequence[str], *, prog: str, doc: str, pipeline_options: type) -> Optional[PipelineOptions]:
    """A pipeline's strictly parsed options (its own class and the shared IOOptions), or None after printing its
    help for -h/--help.

    Raises:
      UserError: as `parse_pipeline_options`.
    """
    from pipelines.options import IOOptions
    own = [IOOptions, pipeline_options]
    if any(arg in ("-h", "--help") for arg in argv):
        _print_help(prog, doc, own)
        return None
    return parse_pipeline_options(argv, own)


def _print_help(prog: str, doc: str, own: Sequence[type]) -> None:
    """The pipeline's own options (Beam's are documented by Beam)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     add_help=False)
    for cls in own:
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    parser.print_help()
    print("\nBeam's runner options (--runner, --direct_num_workers, --dask_client_address, --project, ...) pass "
          "through to Beam.")


def user_error_line(error: BaseException) -> Optional[str]:
    """The one line a UserError raised anywhere (also on a worker, wrapped by the runner) carries, or None."""
    seen = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, UserError):
            text = str(current)
            return text[len(ERROR_MARKER):] if text.startswith(ERROR_MARKER) else text
        pending.extend([current.__cause__, current.__context__])
    text = str(error)
    at = text.find(ERROR_MARKER)
    if at >= 0:
        line = text[at + len(ERROR_MARKER):].splitlines()[0]
        return line.rstrip("'\")]} ").replace("\\'", "'")
    return None


def configure_logging(quiet: bool = False) -> None:
    """INFO lines with a time stamp on stderr; Beam's own chatter only from WARNING."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", force=True)
    for noisy in ("apache_beam", "transformers", "httpx", "urllib3", "distributed", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_main(run: Callable[[List[str]], object], argv: Optional[Iterable[str]]) -> None:
    """Runs a pipeline's run(argv) the way a shell user expects: one line and exit 1 on any failure."""
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging(quiet="--quiet" in argv)
    started = time.time()
    try:
        run(argv)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted; the output folder has no _SUCCESS (rerun with --overwrite)\n")
        raise SystemExit(130) from None
    except SystemExit:
        raise
    except Exception as error:  # pylint: disable=broad-except
        if os.environ.get("TINYBERT_TRACEBACK"):
            raise
        line = user_error_line(error)
        if line is None:
            first = (str(error).strip().splitlines() or [""])[0][:300]
            line = (f"unexpected failure after {time.time() - started:.0f} s ({type(error).__name__}: {first}); "
                    "set TINYBERT_TRACEBACK=1 to see the traceback")
        sys.stderr.write(f"error: {line}\n")
        raise SystemExit(1) from None
