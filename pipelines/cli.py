"""What both pipelines do at the command line: strict options, one-line errors, logging set-up.

- A pipeline declares its options once, as frozen dataclass fields (contract.options). `parse_args` parses those
  with argparse and hands the rest to Beam's `PipelineOptions`, strictly: Beam's own parser keeps going past an
  unknown flag ("Discarding unparseable args"), so `--num_augs 5` would run with the default. Here every flag must
  belong to Beam or to the pipeline, and a misspelt one stops the run with one line naming the closest valid flag.
- A `UserError` (an option, input or output a person can fix) becomes `error: <one line>` on stderr and exit
  status 1. One raised inside a worker reaches the launcher as a value: in the exception's cause chain where the
  runner keeps it, else as the record the failing DoFn wrote (`reports_user_errors`) into OUTPUT/_errors/, which
  `worker_errors` reads back. Anything else is one line too (TINYBERT_TRACEBACK=1 shows the traceback).
"""

import argparse
import contextlib
import functools
import inspect
import logging
import os
import signal
import sys
import time
import uuid
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

from apache_beam.options.pipeline_options import PipelineOptions

from contract import options as options_lib
from contract.errors import (ERRORS_SUBDIR, STDOUT_CLOSED_STATUS, UserError, error_record, find_user_error,
                             message_of_record, stdout_closed)

BEAM_OPTIONS_NOTE = ("Beam's runner options (--runner, --direct_num_workers, --direct_running_mode, "
                     "--dask_client_address, --project, ...) pass through to Beam.")


def _runner_name(argv: Sequence[str]) -> str:
    for index, arg in enumerate(argv):
        if arg.startswith("--runner="):
            return arg.split("=", 1)[1]
        if arg == "--runner" and index + 1 < len(argv):
            return argv[index + 1]
    return ""


def _beam_parser() -> argparse.ArgumentParser:
    """The parser Beam builds from every PipelineOptions class it knows (through get_all_options' public hook)."""
    captured = []
    PipelineOptions([]).get_all_options(add_extra_args_fn=captured.append)
    parser = captured[0]

    def error(message):  # Beam's parser would print usage and exit 2
        raise UserError(f"{message} (see --help)")
    parser.error = error
    return parser


class RunOptions(PipelineOptions):
    """Beam's PipelineOptions whose views are made once per options class.

    Beam makes a new view at every `view_as` (a parser for that class's flags, and a parse of every flag given), and
    building a pipeline asks for one or two per transform: an augmentation's graph asked 584 times, 1.2 s of its
    launcher's 2.2 s in `build_pipeline`. Views share the options' values (Beam's design: a value set on any view
    is set on all of them), so one view per class answers as every new one would.
    """

    def view_as(self, cls):
        views = self.__dict__.setdefault("_views", {})  # not an option: PipelineOptions refuses unknown attributes
        view = views.get(cls)
        if view is None:
            view = views[cls] = super().view_as(cls)
        return view

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_views", None)
        return state


def beam_options(args: Sequence[str], *, own_flags: Sequence[str] = ()) -> PipelineOptions:
    """`PipelineOptions(args)` after checking that every flag in `args` is one of Beam's.

    Raises:
      UserError: an unknown or misspelt flag (naming the closest of Beam's and `own_flags`), a stray argument, or
        a value Beam's parser cannot convert.
    """
    args = list(args)
    if not _runner_name(args):
        args.append("--runner=DirectRunner")  # Beam's default, said here so that Beam does not log that it chose it
    if "dask" in _runner_name(args).lower():
        import apache_beam.runners.dask.dask_runner  # noqa: F401  (declares --dask_client_address and friends)
    parser = _beam_parser()
    _, unknown = parser.parse_known_args(args)
    if unknown:
        raise options_lib.unknown_option_error(unknown[0], [*options_lib.option_names(parser), *own_flags])
    return RunOptions(args)


def parse_args(argv: Sequence[str], *, prog: str, doc: str,
               settings: Sequence[type]) -> Optional[Tuple[argparse.Namespace, PipelineOptions]]:
    """The pipeline's own options (the CLI fields of the `settings` dataclasses) and Beam's, or None after printing
    the help for -h/--help.

    Raises:
      UserError: as `beam_options`, or a value of the pipeline's own options that argparse cannot convert.
    """
    parser = options_lib.strict_parser(prog=prog, description=doc, add_help=False)
    for settings_class in settings:
        options_lib.add_arguments(parser, settings_class)
    if any(arg in ("-h", "--help") for arg in argv):
        parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
        parser.print_help()
        print("\n" + BEAM_OPTIONS_NOTE)
        return None
    namespace, rest = parser.parse_known_args(list(argv))
    return namespace, beam_options(rest, own_flags=options_lib.option_names(parser))


# ---------------------------------------------------------------------------------------------- worker errors
def errors_dir(output_dir: str) -> str:
    """Where a run's workers record the UserErrors they fail with."""
    from pipelines.outputs import join_path
    return join_path(output_dir, ERRORS_SUBDIR)


def _record_error(directory: Optional[str], error: UserError) -> None:
    if not directory:
        return
    from apache_beam.io.filesystems import FileSystems
    from pipelines.outputs import join_path
    try:
        FileSystems.mkdirs(directory)
    except OSError:
        pass  # it exists (another worker made it)
    try:
        with FileSystems.create(join_path(directory, f"{uuid.uuid4().hex}.json")) as handle:
            handle.write(error_record(error))
    except OSError:
        pass  # best effort: the runner still fails the run, with the error as text


def reports_user_errors(process: Callable) -> Callable:
    """Decorates a DoFn's `process` (a generator or a function): a UserError it raises is first recorded in
    `self.errors_dir` (set from the output folder; None records nothing), so that the launcher can print it
    whatever the runner does with the exception. Beam sees the original signature."""
    if inspect.isgeneratorfunction(process):
        @functools.wraps(process)
        def generator(self, *args, **kwargs):
            try:
                yield from process(self, *args, **kwargs)
            except UserError as error:
                _record_error(getattr(self, "errors_dir", None), error)
                raise
        return generator

    @functools.wraps(process)
    def function(self, *args, **kwargs):
        try:
            return process(self, *args, **kwargs)
        except UserError as error:
            _record_error(getattr(self, "errors_dir", None), error)
            raise
    return function


def _recorded_error(directory: str) -> Optional[str]:
    from apache_beam.io.filesystems import FileSystems
    try:
        matches = FileSystems.match([directory.rstrip("/") + "/*.json"])[0].metadata_list
    except Exception:  # pylint: disable=broad-except  (no folder: nothing was recorded)
        return None
    for metadata in sorted(matches, key=lambda m: m.path):
        try:
            with FileSystems.open(metadata.path) as handle:
                message = message_of_record(handle.read())
        except OSError:
            continue
        if message:
            return message
    return None


def clear_recorded_errors(directory: str) -> None:
    from apache_beam.io.filesystems import FileSystems
    try:
        if FileSystems.exists(directory):
            FileSystems.delete([directory])
    except OSError:
        pass


@contextlib.contextmanager
def worker_errors(output_dir: str) -> Iterator[None]:
    """Runs a pipeline: a failure caused by a UserError (here or on a worker) leaves as that UserError."""
    directory = errors_dir(output_dir)
    clear_recorded_errors(directory)
    try:
        yield
    except Exception as error:  # pylint: disable=broad-except
        found = find_user_error(error)
        message = found.message if found is not None else _recorded_error(directory)
        if message is None or os.environ.get("TINYBERT_TRACEBACK"):
            raise
        raise UserError(message) from None
    finally:
        clear_recorded_errors(directory)


# ---------------------------------------------------------------------------------------------- entry point
class _NoWorkerTracebacks(logging.Filter):
    """Beam logs a failed bundle's traceback at ERROR before the launcher sees the failure; the launcher prints
    the one line (TINYBERT_TRACEBACK=1 keeps Beam's log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("apache_beam") and record.levelno >= logging.ERROR)


def configure_logging(quiet: bool = False) -> None:
    """INFO lines with a time stamp on stderr; Beam's own chatter only from WARNING, its failure tracebacks not."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", force=True)
    for noisy in ("apache_beam", "transformers", "httpx", "urllib3", "distributed", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not os.environ.get("TINYBERT_TRACEBACK"):
        for handler in logging.getLogger().handlers:
            handler.addFilter(_NoWorkerTracebacks())


class _Stop:
    """The signal that asked the run to stop (SIGINT, SIGTERM), once one has."""
    name: Optional[str] = None


def _stop_on(signum, frame):  # pylint: disable=unused-argument
    _Stop.name = signal.Signals(signum).name
    raise KeyboardInterrupt


def stop_requested() -> Optional[str]:
    """SIGINT or SIGTERM where a signal asked this process to stop, else None."""
    return _Stop.name


def _stopped_line(name: str) -> str:
    return (f"stopped by {name}; the output folder is left unfinished (no _SUCCESS): rerun the same command with "
            "--overwrite to start it again")


def run_main(run: Callable[[List[str]], object], argv: Optional[Iterable[str]]) -> None:
    """Runs a pipeline's run(argv) the way a shell user expects: one line and exit 1 on any failure; SIGINT and
    SIGTERM stop it with one line (exit 130 / 143), whatever the runner makes of the interruption."""
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging(quiet="--quiet" in argv)
    previous = {signum: signal.signal(signum, _stop_on) for signum in (signal.SIGINT, signal.SIGTERM)}
    started = time.time()
    try:
        run(argv)
    except BaseException as error:  # pylint: disable=broad-except
        if isinstance(error, SystemExit) and _Stop.name is None:
            raise
        if stdout_closed(error):  # `cmd | head`: the reader has what it wanted; as `yes | head` ends, silently
            raise SystemExit(STDOUT_CLOSED_STATUS) from None
        if _Stop.name is not None or isinstance(error, KeyboardInterrupt):
            name = _Stop.name or "SIGINT"
            sys.stderr.write(f"error: {_stopped_line(name)}\n")
            raise SystemExit(128 + int(getattr(signal, name))) from None
        if os.environ.get("TINYBERT_TRACEBACK"):
            raise
        found = find_user_error(error)
        if found is not None:
            line = found.message
        else:
            first = (str(error).strip().splitlines() or [""])[0][:300]
            line = (f"unexpected failure after {time.time() - started:.0f} s ({type(error).__name__}: {first}); "
                    "set TINYBERT_TRACEBACK=1 to see the traceback")
        sys.stderr.write(f"error: {' '.join(line.split())}\n")
        raise SystemExit(1) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
