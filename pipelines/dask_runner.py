"""`AllLeavesDaskRunner`: Beam's DaskRunner with the defects that lose data fixed (what `--runner=DaskRunner` means).

Beam 2.77's DaskRunner translates the pipeline into dask bags, and two of its defects lose data silently:
1. it computes only the bag of the *last* transform it visited: every other branch (a rejects sink, a second
   output, a manifest) is skipped while the job reports DONE;
2. a ParDo with tagged outputs (`with_outputs`) becomes one bag holding every output, and each consumer of any of
   its outputs reads all of them mixed together.
`AllLeavesDaskRunner` keeps Beam's translations of Create, ParDo and Flatten, adds the one Beam lacks for Impulse
(the root that `beam.Create` expands to elsewhere), tags each ParDo output with its output tag so that each consumer
reads only its own PCollection, and computes every leaf bag.

It also makes a run use the cluster. Beam's translation keeps a bag's partition count from its root to its end: a
pipeline that starts from Impulse (one element, one partition) ran every stage as one task, on one worker thread,
whatever the cluster. Here a Reshuffle (a no-op in Beam's translation) cuts its bag into `partitions` pieces, and
a GroupByKey groups into `partitions` pieces; `partitions` is `--dask_npartitions` where given, else twice the
cluster's worker threads (two per thread: a slow piece does not leave a thread idle for the rest of the stage). A
GroupByKey places a key by a hash that every process computes alike: dask's own placement uses Python's `hash()`,
salted per process for str and bytes keys, so two workers could place one key in two pieces.
"""

import collections
import dataclasses
import hashlib
import pickle
from typing import Any, Dict

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.dask import transform_evaluator as evaluators
from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunner, DaskRunnerResult
from apache_beam.runners.dask.overrides import _Reshuffle, dask_overrides
from apache_beam.transforms.sideinputs import SideInputMap


def _concat_partitions(per_input_partitions):
    """[[partition, ...] per side input] -> [[element, ...] per side input]."""
    return [[element for partition in partitions for element in partition] for partitions in per_input_partitions]


def _tagged_bundle(items, fn, window_fn, label, side_specs, side_values, args, kwargs):
    """Runs a DoFn over one dask partition as Beam's `apply_dofn_to_bundle` does, with receivers of its own.

    Side inputs arrive materialised (`side_values`, one list per side input), computed once as ordinary dask
    dependencies; Beam's translation instead re-computes a side input's whole lineage inside every task that reads it.
    Returns (tag, element) pairs; tag None is the main output.
    """

    side_inputs = [SideInputMap(view_class, view_options,
                                [evaluators.get_windowed_value(value, mapping_fn) for value in values])
                   for (view_class, view_options, mapping_fn), values in zip(side_specs, side_values)] or None
    receivers = evaluators.OneReceiver()
    handler = evaluators._OutputHandler(
        window_fn=window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
        per_element_output_counter=None, output_batch_converter=None, process_yields_batches=False,
        process_batch_yields_elements=False)
    invoker = evaluators.DoFnInvoker.create_invoker(
        evaluators.DoFnSignature(fn), handler, context=evaluators.DoFnContext(label, state=None),
        side_inputs=side_inputs, input_args=list(args), input_kwargs=kwargs, user_state_context=None,
        bundle_finalizer_param=evaluators.DoFn.BundleFinalizerParam())
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(item)
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    tagged = []
    for raw in receivers.values:
        if isinstance(raw, pvalue.TaggedOutput):
            tagged.append((raw.tag, evaluators.defenestrate(raw.value)))
        else:
            tagged.append((None, evaluators.defenestrate(raw)))
    return tagged


@dataclasses.dataclass
class _BagVisitor(PipelineVisitor):
    """Translates every primitive into a dask bag; ParDo bags are tagged and split per consumed output."""
    bag_kwargs: Dict[str, Any]
    partitions: int  # pieces of a reshuffled or grouped bag (module docstring)
    bags: Dict[Any, Any] = dataclasses.field(default_factory=collections.OrderedDict)

    tagged: set = dataclasses.field(default_factory=set)  # nodes whose bag holds (tag, element) pairs

    def output_bag(self, value):
        bag = self.bags[value.producer]
        if value.producer in self.tagged:
            tag = value.tag
            return bag.filter(lambda item, tag=tag: item[0] == tag).map(lambda item: item[1])
        return bag

    def visit_transform(self, node) -> None:
        transform = node.transform
        op_class = evaluators.TRANSLATIONS.get(transform.__class__, evaluators.NoOp)
        op = op_class(node, bag_kwargs=self.bag_kwargs)
        inputs = [self.output_bag(v) for v in node.inputs if not isinstance(v, pvalue.PBegin)]
        input_bag = None
        if inputs:
            input_bag = inputs if (len(inputs) != 1 or isinstance(op, evaluators.Flatten)) else inputs[0]
        if isinstance(transform, beam.Impulse):  # Beam's Dask translations lack it: one empty-bytes element
            import dask.bag
            self.bags[node] = dask.bag.from_sequence([b""], npartitions=1)
        elif isinstance(transform, _Reshuffle):
            self.bags[node] = input_bag.repartition(npartitions=self.partitions)
        elif isinstance(op, evaluators.GroupByKey):
            self.bags[node] = input_bag.groupby(_StableKey.of, npartitions=self.partitions).map(_grouped)
        elif isinstance(op, evaluators.ParDo):
            import dask
            side_specs = [(type(si), si._view_options(), si._window_mapping_fn) for si in node.side_inputs]
            side_values = dask.delayed(_concat_partitions)(
                [self.output_bag(si.pvalue).to_delayed() for si in node.side_inputs])
            self.bags[node] = _apply_tagged_pardo(op, input_bag, side_specs, side_values)
            self.tagged.add(node)
        else:
            self.bags[node] = op.apply(input_bag=input_bag, side_inputs=None)


class _StableKey:
    """A Beam key whose hash is the same in every process (`hash()` of a str is salted per process)."""
    __slots__ = ("key", "_hash")

    def __init__(self, key):
        self.key = key
        self._hash = int.from_bytes(hashlib.blake2b(pickle.dumps(key, protocol=4), digest_size=8).digest(), "big")

    @classmethod
    def of(cls, windowed_pair):
        return cls(windowed_pair[0])

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return isinstance(other, _StableKey) and self._hash == other._hash and self.key == other.key


def _grouped(item):
    """(stable key, [windowed (key, value)]) -> (key, [value]), as Beam's GroupByKey translation gives."""
    stable, pairs = item
    return stable.key, [evaluators.defenestrate(pair[1]) for pair in pairs]


def _apply_tagged_pardo(op, input_bag, side_specs, side_values):
    """Beam's ParDo translation, but each result carries its output tag and side inputs are dask dependencies."""
    transform = op.transform
    args, kwargs = transform.raw_side_inputs
    main_input = next(iter(op.applied.main_inputs.values()))
    window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
    return input_bag.map(evaluators.get_windowed_value, window_fn).map_partitions(
        _tagged_bundle, transform.fn, window_fn, transform.label, side_specs, side_values, args, kwargs)


class AllLeavesDaskRunner(DaskRunner):
    """Beam's DaskRunner, with tagged ParDo outputs kept apart and every leaf of the graph computed."""

    def run_pipeline(self, pipeline, options):
        import dask
        import dask.distributed as ddist
        dask_options = options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = DaskOptions._extract_bag_kwargs(dask_options)
        client = ddist.Client(**dask_options)
        pipeline.replace_all(dask_overrides())
        threads = sum(client.nthreads().values()) or 1
        visitor = _BagVisitor(bag_kwargs, partitions=bag_kwargs.get("npartitions") or 2 * threads)
        pipeline.visit(visitor)
        consumed = set()
        for node in visitor.bags:
            consumed.update(v.producer for v in node.inputs if not isinstance(v, pvalue.PBegin))
            consumed.update(side.pvalue.producer for side in node.side_inputs)
        leaves = [bag for node, bag in visitor.bags.items() if node not in consumed and bag is not None]
        futures = client.compute(list(dask.optimize(*leaves)))
        return _ClosingDaskRunnerResult(client, futures)


class _ClosingDaskRunnerResult(DaskRunnerResult):
    """Closes the client it opened once the job is done, so that no connection outlives the run."""

    def wait_until_finish(self, duration=None):
        try:
            return super().wait_until_finish(duration)
        finally:
            if self.state in ("DONE", "FAILED", "CANCELLED") or duration is None:
                self.client.close()
