"""What one dask task of `AllLeavesDaskRunner` does to one partition (a list of elements): run a DoFn over it, cut
it into pieces for a shuffle, join the pieces of a shuffle, combine values per key.

Every function here runs on a worker. Elements are plain values (never WindowedValue) between tasks: the runner
supports the global window only, and a WindowedValue costs several times a plain tuple to pickle.
"""

import dataclasses
import functools
import gc
import hashlib
import pickle
import threading
from typing import Any, Dict, List, Sequence

from apache_beam.internal import pickler
from apache_beam.runners.common import Receiver
from apache_beam.runners.dask import transform_evaluator as evaluators
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from pipelines import freed_memory

# Set-up DoFns per worker process, kept from one task to the next of a run: Beam's runners reuse a DoFn instance
# across bundles, so that `setup()` (a tokenizer, a model) runs once per worker, not once per partition.
# {(run id, label): [idle DoFns]}; `forget_run` tears them down at the end of the run.
_IDLE_DOFNS: Dict[Any, List[Any]] = {}
_IDLE_LOCK = threading.Lock()
_GLOBAL_WINDOWS = (GlobalWindow(),)


class Partition(list):
    """A partition's (or a shuffle piece's) elements: a list that travels between workers as one pickle.

    dask serializes a plain list (or tuple, or a dict of them) in a message element by element, one frame per
    element: 25,000 packed documents took 1.0 s to move between two idle local workers, 100,000 took 5.3 s, where
    one pickle of them round-trips in 0.09 s. Every task here returns its elements in a Partition."""
    __slots__ = ()

    def __reduce__(self):
        return _partition_from_pickle, (pickle.dumps(list(self), protocol=5),)


def _partition_from_pickle(payload: bytes) -> Partition:
    return Partition(pickle.loads(payload))


class _CollectorPaused:
    """Python's cyclic garbage collector off, and malloc keeping freed memory (`pipelines.freed_memory`), while a
    task runs (both back when the worker's last running task ends).

    A worker holds the partitions of every stage in flight (a corpus run: hundreds of thousands of tuples), and
    each automatic full collection walks every one of them while the task allocates: about a sixth of the tasks'
    CPU time on a 2-worker corpus run (docs/scaling.md). The tasks make almost no reference cycles; what little
    they leave is collected when the collector is back on. The nanny's malloc settings cost the instance cutting of
    a 200 MB text corpus over a quarter of its time."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running = 0
        self._was_enabled = False

    def __enter__(self):
        with self._lock:
            if self._running == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._running += 1
        freed_memory.hold()

    def __exit__(self, *exc_info):
        freed_memory.release()
        with self._lock:
            self._running -= 1
            if self._running == 0 and self._was_enabled:
                gc.enable()


_COLLECTOR_PAUSED = _CollectorPaused()


def _collector_paused(function):
    @functools.wraps(function)
    def run(*args, **kwargs):
        with _COLLECTOR_PAUSED:
            return function(*args, **kwargs)
    return run


def run_dofn(items: Sequence[Any], side_values: Sequence[List[Any]], *, spec) -> Dict[Any, List[Any]]:
    """Runs a ParDo's DoFn over one partition as Beam's `apply_dofn_to_bundle` does, with receivers of its own.

    Side inputs arrive materialised (`side_values`, one list per side input), computed once as ordinary dask
    dependencies. Returns {output tag: [element, ...]}; tag None is the main output.
    """
    invoker, receivers = _acquire(spec, side_values)
    try:
        invoker.invoke_start_bundle()
        for item in items:
            invoker.invoke_process(WindowedValue(item, 0, _GLOBAL_WINDOWS))
        invoker.invoke_finish_bundle()
        return receivers.collected
    finally:
        receivers.collected = {}
        _release(spec, invoker, receivers)


@dataclasses.dataclass(frozen=True)
class FusedStep:
    """One ParDo of a fused chain: its spec, and what it reads: None for the task's partition, else the output
    (step label, tag) of an earlier step."""
    spec: Any
    source: Any


@_collector_paused
def run_fused(items: Sequence[Any], side_values: Sequence[List[Any]], *, steps: Sequence[FusedStep],
              kept: frozenset) -> Dict[Any, List[Any]]:
    """A chain of ParDos over one partition, each step's DoFn over the whole output it reads (one bundle per step
    and partition, as `run_dofn`). Only the first step has side inputs. Returns {(step label, tag): [element]} for
    the outputs in `kept`; the others are dropped as soon as the last step that reads them is done."""
    last_read = {step.source: index for index, step in enumerate(steps) if step.source is not None}
    outputs: Dict[Any, List[Any]] = {}
    for index, step in enumerate(steps):
        if step.source is None:
            collected = run_dofn(items, side_values, spec=step.spec)
        else:
            collected = run_dofn(outputs.get(step.source, ()), (), spec=step.spec)
            if step.source not in kept and last_read[step.source] == index:
                outputs.pop(step.source, None)
        label = step.spec.key[1]
        for tag, values in collected.items():
            if (label, tag) in kept or (label, tag) in last_read:
                outputs[(label, tag)] = values
    return outputs


class _Receivers(dict):
    """A DoFn's receivers by output tag (None: the main output): each output's elements, plain, in `collected`."""

    def __init__(self):
        super().__init__()
        self.collected: Dict[Any, List[Any]] = {}

    def __missing__(self, tag):
        receiver = self[tag] = _Receiver(self, tag)
        return receiver


class _Receiver(Receiver):
    def __init__(self, receivers: _Receivers, tag):
        self._receivers = receivers
        self._tag = tag

    def receive(self, windowed_value: WindowedValue) -> None:
        collected = self._receivers.collected.get(self._tag)
        if collected is None:
            collected = self._receivers.collected[self._tag] = Partition()
        collected.append(windowed_value.value)


def _acquire(spec, side_values):
    # An idle invoker holds the side inputs it was made with: the same values, since every task of a ParDo reads
    # the one computed side input.
    with _IDLE_LOCK:
        idle = _IDLE_DOFNS.get(spec.key)
        if idle:
            return idle.pop()
    return spec.new_invoker(side_values)


def _release(spec, invoker, receivers) -> None:
    with _IDLE_LOCK:
        _IDLE_DOFNS.setdefault(spec.key, []).append((invoker, receivers))


def forget_run(run_id: str) -> None:
    """Tears down the idle DoFns of a run (best effort, as Beam's `teardown`); run on every worker at its end."""
    with _IDLE_LOCK:
        finished = [key for key in _IDLE_DOFNS if key[0] == run_id]
        idle = [entry for key in finished for entry in _IDLE_DOFNS.pop(key)]
    for invoker, _ in idle:
        try:
            invoker.invoke_teardown()
        except Exception:  # best effort, as in every runner
            pass


@dataclasses.dataclass(frozen=True)
class DoFnSpec:
    """What a worker needs to run a ParDo's DoFn over partitions.

    Attributes:
      key: (run id, step label): which idle DoFns a worker may reuse for it.
      fn, label, args, kwargs: the ParDo's DoFn, label and extra arguments.
      side_specs: (view class, view options, window mapping) per side input, in the DoFn's order.
    """
    key: Any
    fn: Any
    label: str
    side_specs: Sequence[Any]
    args: Sequence[Any]
    kwargs: Dict[str, Any]

    def new_invoker(self, side_values):
        """A set-up invoker of a fresh copy of the DoFn, and the receiver that collects its outputs."""
        fn = pickler.loads(pickler.dumps(self.fn))  # an instance per thread of a worker
        side_inputs = [SideInputMap(view_class, view_options,
                                    [evaluators.get_windowed_value(value, mapping_fn) for value in values])
                       for (view_class, view_options, mapping_fn), values in zip(self.side_specs,
                                                                                 side_values)] or None
        receivers = _Receivers()
        handler = evaluators._OutputHandler(
            window_fn=None, main_receivers=receivers[None], tagged_receivers=receivers,
            per_element_output_counter=None, output_batch_converter=None, process_yields_batches=False,
            process_batch_yields_elements=False)
        invoker = evaluators.DoFnInvoker.create_invoker(
            evaluators.DoFnSignature(fn), handler, context=evaluators.DoFnContext(self.label, state=None),
            side_inputs=side_inputs, input_args=list(self.args), input_kwargs=self.kwargs, user_state_context=None,
            bundle_finalizer_param=evaluators.DoFn.BundleFinalizerParam())
        invoker.invoke_setup()
        return invoker, receivers


def select(outputs: Dict[Any, List[Any]], tag) -> List[Any]:
    """One output of a ParDo's partition: a consumer's task reads (and a transfer carries) only its own."""
    found = outputs.get(tag)
    return found if found is not None else Partition()


def concat(per_partition: Sequence[Sequence[Any]]) -> List[Any]:
    """Partitions joined into one list: a side input, or the pieces of a reshuffle."""
    return Partition(element for partition in per_partition for element in partition)


# ---------------------------------------------------------------------------------------------------- shuffles
def stable_hash(key) -> int:
    """A key's hash, the same in every process (`hash()` of a str is salted per process)."""
    return int.from_bytes(hashlib.blake2b(pickle.dumps(key, protocol=4), digest_size=8).digest(), "big")


def _hashable(key):
    try:
        hash(key)
        return key
    except TypeError:
        return ("\x00unhashable", pickle.dumps(key, protocol=4))


@_collector_paused
def split_by_key(items: Sequence[Any], *, pieces: int) -> List[List[Any]]:
    """(key, value) pairs into `pieces` lists by a stable hash of the key (computed once per distinct key)."""
    out: List[List[Any]] = [Partition() for _ in range(pieces)]
    placed: Dict[Any, int] = {}
    for pair in items:
        probe = _hashable(pair[0])
        piece = placed.get(probe)
        if piece is None:
            piece = placed[probe] = stable_hash(pair[0]) % pieces
        out[piece].append(pair)
    return out


def split_round_robin(items: Sequence[Any], *, pieces: int, offset: int) -> List[List[Any]]:
    """A reshuffle's cut: element k of partition `offset` goes to piece (offset + k) % pieces."""
    return [Partition(items[(piece - offset) % pieces::pieces]) for piece in range(pieces)]


@_collector_paused
def group_pieces(pieces: Sequence[Sequence[Any]]) -> List[Any]:
    """The pieces of one shuffle partition, grouped: (key, [value, ...]) per key, as Beam's GroupByKey gives."""
    groups: Dict[Any, Any] = {}
    for piece in pieces:
        for key, value in piece:
            entry = groups.get(_hashable(key))
            if entry is None:
                groups[_hashable(key)] = (key, [value])
            else:
                entry[1].append(value)
    return Partition(groups.values())


@_collector_paused
def precombine(items: Sequence[Any], *, combine_fn, pieces: int) -> List[List[Any]]:
    """A CombinePerKey's first half on one partition: an accumulator per key (Beam's combiner lifting), then cut
    into `pieces` by key as `split_by_key` cuts."""
    combine_fn.setup()
    accumulators: Dict[Any, Any] = {}
    for key, value in items:
        probe = _hashable(key)
        entry = accumulators.get(probe)
        if entry is None:
            entry = accumulators[probe] = [key, combine_fn.create_accumulator()]
        entry[1] = combine_fn.add_input(entry[1], value)
    return split_by_key([(key, combine_fn.compact(acc)) for key, acc in accumulators.values()], pieces=pieces)


@_collector_paused
def merge_combined(pieces: Sequence[Sequence[Any]], *, combine_fn) -> List[Any]:
    """A CombinePerKey's second half: the accumulators of each key merged, then its output."""
    combine_fn.setup()
    return Partition((key, combine_fn.extract_output(combine_fn.merge_accumulators(accumulators)))
                     for key, accumulators in group_pieces(pieces))


def merge_combined_cuts(cuts: Sequence[Sequence[Sequence[Any]]], *, piece: int, combine_fn) -> List[Any]:
    """`merge_combined` of piece `piece` of every `precombine` output: a combine's exchange carries one accumulator
    per key and partition, so its merges read the cuts whole instead of through a task per (cut, piece), which
    were most of a corpus run's tasks."""
    return merge_combined([cut[piece] for cut in cuts], combine_fn=combine_fn)


def create(*, values: List[Any]) -> List[Any]:
    """Beam's Create: its values, as one partition (a Reshuffle after it spreads them)."""
    return Partition(values)


def impulse() -> List[bytes]:
    """Beam's Impulse: one empty-bytes element (Beam's Dask translations lack it)."""
    return Partition([b""])

