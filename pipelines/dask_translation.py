"""The translation of a Beam pipeline into one dask graph, which `pipelines.dask_runner.AllLeavesDaskRunner` runs
(what `--runner=DaskRunner` means).

Beam 2.77's DaskRunner translates a pipeline into dask bags. Two of its defects lose data silently (it computes
only the bag of the *last* transform it visited; a ParDo with tagged outputs becomes one bag that every consumer
reads whole), and its translation costs more than the work: measured on a 50 MB text corpus (docs/scaling.md),
two Dask workers spent four times the CPU of one DirectRunner worker, in transfers of whole tagged bags, in dask's
multi-stage bag shuffles and in per-row WindowedValue objects.

Here every PCollection is a list of partitions (one dask task each, elements are plain values), and:
* a ParDo's task runs its DoFn over one partition and returns {(step, output tag): [element, ...]}; a reader
  picks its output inside its own task (a nested selection, placed with the partition), and a side input or a leaf
  through a small selecting task, so a transfer between workers carries its own output only. A ParDo without side
  inputs that reads a ParDo's output runs in that ParDo's task (a fused chain, as Beam's runners fuse stages), so
  its input never leaves the worker that made it. A worker keeps set-up DoFn instances from one task to the next of
  a run (`setup()` once per worker, as Beam's runners do), and pauses Python's cyclic garbage collector while a task
  runs;
* a GroupByKey is one all-to-all shuffle: each input partition is cut into `partitions` pieces by a stable hash of
  the key (the same in every process: `hash()` of a str is salted per process), and each output partition joins
  its pieces and groups them;
* a CombinePerKey (and so CombineGlobally) combines per key inside each input partition before that shuffle
  (Beam's combiner lifting), so a shuffle carries one accumulator per key and partition, not every element, and
  each output partition merges its piece of every input partition's accumulators, read whole;
* a Reshuffle cuts each partition round-robin into 4 pieces per worker thread, and a single partition (a list of
  work items) into 16: a pipeline that starts from Impulse (one element, one partition) would otherwise run every
  stage as one task on one worker, and with few pieces a worker that runs out waits on another's last;
* a GroupByKey inside a composite annotated `costly_groups` (each group costs far more to process
  than to move) has more output partitions, so that the workers balance its groups by taking partitions as they
  free up: 16 per worker thread for `fine` (the augmentation's masked-LM batches, where 2 per thread left one
  worker running a third of the work alone), 4 for `few` (the corpus's random-next buckets: every document crosses
  that shuffle, and each more partition costs a piece task per input partition). A `fine` group's readers wait in
  the scheduler's queue for a free thread, each joining its partition's pieces itself, and the pieces run ahead of
  every other task (`_Translator.leaves`);
* side inputs are ordinary dask dependencies, computed once (Beam's translation recomputes a side input's whole
  lineage inside every task that reads it);
* every leaf is computed, in one graph (no lineage is computed twice), and results stay on the workers.
`partitions` is `--dask_npartitions` where given, else twice the cluster's worker threads (a slow piece does not
leave a thread idle for the rest of the stage). Only the global window is supported (windowed pipelines: another
runner).
"""

import collections
import dataclasses
import functools
import operator
from typing import Any, Dict, List, Optional

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.dask import transform_evaluator as evaluators
from apache_beam.runners.dask.overrides import _Create, _Flatten, _GroupByKey, _Reshuffle
from apache_beam.transforms.combiners import curry_combine_fn
from apache_beam.transforms.window import GlobalWindows

from pipelines import dask_partitions as tasks
from pipelines.runners import COSTLY_GROUPS, FEW_GROUPS, FINE_GROUPS


class _Translator(PipelineVisitor):
    """Translates every transform into a list of dask partitions (Delayed objects); see the module docstring."""

    def __init__(self, *, partitions: int, spread: int, run_id: str, root_spread: Optional[int] = None):
        self.partitions = partitions
        self.spread = spread  # a Reshuffle's pieces
        # a Reshuffle's pieces when it reshuffles one partition, and a costly GroupByKey's partitions
        self.root_spread = root_spread or spread
        self.run_id = run_id
        self.graph: Dict[Any, Any] = {}  # the dask graph: key -> (function, *arguments), keys as arguments
        self.parts: Dict[Any, List[Any]] = collections.OrderedDict()  # node -> the keys of its partitions
        self.groups: Dict[Any, "_Group"] = {}  # ParDo node -> its fused chain; partitions are {(label, tag): [...]}
        self.consumed = set()
        self._selected: Dict[Any, List[Any]] = {}
        self._chain_nodes: Dict[Any, Any] = {}  # (label, tag) of an inline selection -> its fused ParDo node
        self._joined = 0  # keyed joins of selections (`_keyed`)
        self._sides: Dict[Any, Any] = {}
        self._whole = None  # a composite translated as one (its parts are skipped)

    # -- dask graph helpers
    def _key(self, label: str, index) -> tuple:
        """A task's key: (f"{label}-{run id}", index...)."""
        return (f"{label}-{self.run_id}",) + (index if isinstance(index, tuple) else (index,))

    def _task(self, label: str, index, function, *args, **fixed):
        """Adds a task to the graph; returns its key. `args` are keys (or lists of keys) of other tasks, strings or
        numbers; `fixed` (any objects) reach `function` as keyword arguments, untouched by dask.

        One dict for the whole graph: building each task as a `dask.delayed` call merged its dependencies' graphs
        every time, a second of the launcher's time (while the workers wait) for a corpus run's 500 tasks."""
        key = self._key(label, index)
        self.graph[key] = (functools.partial(function, **fixed) if fixed else function, *args)
        return key

    def parts_of(self, value) -> List[Any]:
        """The partitions of a PCollection, each a task key or, for an output of a fused chain, the selection of that
        output from the chain's partition as a nested task (`_inline_select`)."""
        node = value.producer
        self.consumed.add(node)
        return self._inline_select(node, value.tag) if node in self.groups else self.parts[node]

    def _inline_select(self, node, tag) -> List[Any]:
        """One output of a fused chain, as nested tasks `(select, chain partition, output)` that dask runs inside the
        task that reads them: a ParDo chain's first step, an exchange's cut, a Flatten's reader. That task has the
        chain's partition as its one large input, so dask places it where the partition is. A selecting task of its
        own per output and partition was a third of a corpus run's tasks (about 1.3 ms of scheduler and worker CPU
        each); the readers that need a key of their own (a side input, a leaf, Beam's bag translation) get one
        (`_keyed`)."""
        group = self.groups[node]
        output = (node.full_label, tag)
        group.kept.add(output)
        self._chain_nodes[output] = node
        return [(tasks.select, key, output) for key in group.keys]

    def _keyed(self, parts: List[Any]) -> List[Any]:
        """`parts` with every nested task replaced by a task key: a selection by its selecting task (`_select`), a
        Flatten's join of selections (`_flatten`) by a task of its own."""
        keyed = []
        for part in parts:
            if _is_selection(part):
                _, chain_key, (label, tag) = part
                node = self._chain_nodes[(label, tag)]
                keyed.append(self._select(node, tag)[self.groups[node].keys.index(chain_key)])
            elif isinstance(part, tuple) and part and callable(part[0]):
                function, selections = part
                self._joined += 1
                keyed.append(self._task("Flatten/joined", self._joined, function, self._keyed(selections)))
            else:
                keyed.append(part)
        return keyed

    def _flatten(self, label: str, parts: List[Any]) -> List[Any]:
        """A Flatten's partitions: its inputs' partitions, where several are selected from one chain partition (the
        rejects of a chain's steps) joined into one by a nested `concat`. Nothing moves (they come from one task),
        and the Flatten's readers run a task per chain partition instead of one per output and partition: a
        corpus run's rejects went through 96 partitions, 3 per work item, mostly empty, and an exchange of 384
        pieces."""
        joined = collections.OrderedDict()
        out = []
        for part in parts:
            if _is_selection(part):
                joined.setdefault(part[1], []).append(part)
            else:
                out.append(part)
        out.extend(selections[0] if len(selections) == 1 else (tasks.concat, selections)
                   for selections in joined.values())
        return out or [self._task(label, 0, tasks.Partition)]

    def _select(self, node, tag) -> List[Any]:
        """The partitions of one output of a fused ParDo: a small task per partition picks it from the chain's."""
        cached = self._selected.get((node, tag))
        if cached is None:
            group = self.groups[node]
            output = (node.full_label, tag)
            group.kept.add(output)
            label = f"{node.full_label}[{tag or 'main'}]"
            cached = self._selected[(node, tag)] = [
                self._task(label, i, tasks.select, part, output) for i, part in enumerate(group.keys)]
        return cached

    def _side_input(self, side):
        key = (side.pvalue.producer, side.pvalue.tag)
        if key not in self._sides:
            label = f"{side.pvalue.producer.full_label}[{side.pvalue.tag or 'main'}]/whole"
            self._sides[key] = self._task(label, 0, tasks.concat, self._keyed(self.parts_of(side.pvalue)))
        return self._sides[key]

    def _shuffle(self, label: str, parts, cut, join, *, pieces: Optional[int] = None, nested: bool = False,
                 **join_fixed) -> List[Any]:
        """One all-to-all exchange: `cut(partition, offset=i)` gives `pieces` (default `partitions`) pieces; output
        j = join(pieces j), a task of its own or, `nested`, a nested task `(join, [piece keys])` that runs inside the
        task that reads it."""
        count = pieces or self.partitions
        cuts = self._cuts(label, parts, cut)
        joined = functools.partial(join, **join_fixed) if join_fixed else join
        out = []
        for j in range(count):
            piece_keys = [self._task(f"{label}/piece", (i, j), operator.getitem, cut_key, j)
                          for i, cut_key in enumerate(cuts)]
            out.append((joined, piece_keys) if nested else self._task(label, j, joined, piece_keys))
        return out

    def _cuts(self, label: str, parts, cut) -> List[Any]:
        """An exchange's first half: `cut(partition, offset=i)` for every input partition i."""
        return [self._task(f"{label}/cut", i, cut, part, offset=i) for i, part in enumerate(parts)]

    # -- the visitor
    def enter_composite_transform(self, node) -> None:
        if self._whole is None and _translated_whole(node):
            self._whole = node

    def leave_composite_transform(self, node) -> None:
        if node is not self._whole:
            return
        self._whole = None
        transform = node.transform
        parts = self.parts_of(node.inputs[0])
        count = self.partitions
        if isinstance(transform, _GroupByKey):
            costly = _costly_groups(node)
            count = {FINE_GROUPS: self.root_spread, FEW_GROUPS: self.spread}.get(costly, count)
            # A `fine` group's partition is joined inside the task that reads it, which waits in the scheduler's
            # queue for a free worker thread (`leaves`); the pieces run first.
            out = self._shuffle(node.full_label, parts, _cut(tasks.split_by_key, pieces=count), tasks.group_pieces,
                                pieces=count, nested=costly == FINE_GROUPS)
        else:  # CombinePerKey: one accumulator per key and partition crosses, so each merge reads every cut whole
            combine_fn = curry_combine_fn(transform.fn, transform.args, transform.kwargs)
            cuts = self._cuts(node.full_label, parts, _cut(tasks.precombine, combine_fn=combine_fn, pieces=count))
            out = [self._task(node.full_label, j, tasks.merge_combined_cuts, cuts, piece=j, combine_fn=combine_fn)
                   for j in range(count)]
        for output in node.outputs.values():
            self.parts[output.producer] = out

    def visit_transform(self, node) -> None:
        if self._whole is not None:
            return
        transform = node.transform
        label = node.full_label
        if type(transform) is beam.ParDo and self._fuse(node):
            return
        inputs = [self.parts_of(v) for v in node.inputs if not isinstance(v, pvalue.PBegin)]
        if isinstance(transform, beam.Impulse):
            self.parts[node] = [self._task(label, 0, tasks.impulse)]
        elif isinstance(transform, _Reshuffle):
            # One partition reshuffled is a pipeline's list of work items (Impulse, then a plan of byte ranges):
            # cut into `root_spread` pieces, so that a worker that runs out of items takes another piece instead of
            # idling while the other works through the rest (a 100 MB dump's 13 ranges in 8 pieces left one worker
            # idle 2.9 s of a 21 s run).
            pieces = self.root_spread if len(inputs[0]) == 1 else self.spread
            self.parts[node] = self._shuffle(label, inputs[0], _cut(tasks.split_round_robin, pieces=pieces),
                                             tasks.concat, pieces=pieces)
        elif isinstance(transform, _Create):
            self.parts[node] = [self._task(label, 0, tasks.create, values=list(transform.values))]
        elif isinstance(transform, _Flatten):
            self.parts[node] = self._flatten(label, [part for parts in inputs for part in parts])
        elif type(transform) is beam.ParDo:
            sides = [self._side_input(si) for si in node.side_inputs]
            group = _Group(keys=[self._key(label, i) for i in range(len(inputs[0]))], inputs=inputs[0], sides=sides,
                           steps=[tasks.FusedStep(self._spec(node), None)])
            self.groups[node] = group
            self.parts[node] = group.keys
        else:  # Beam's own translation (Read), on bags
            import dask.bag
            from dask.delayed import Delayed
            op = evaluators.TRANSLATIONS.get(transform.__class__, evaluators.NoOp)(node, bag_kwargs={})
            bags = [dask.bag.from_delayed([Delayed(key, self.graph) for key in self._keyed(parts)])
                    for parts in inputs]
            bag = op.apply(input_bag=bags[0] if len(bags) == 1 else (bags or None), side_inputs=None)
            self.graph.update(dict(bag.__dask_graph__()))
            self.parts[node] = list(bag.__dask_keys__())

    def _spec(self, node) -> "tasks.DoFnSpec":
        transform = node.transform
        args, kwargs = transform.raw_side_inputs
        return tasks.DoFnSpec(
            key=(self.run_id, node.full_label), fn=transform.fn, label=transform.label, args=args, kwargs=kwargs,
            side_specs=[(type(si), si._view_options(), si._window_mapping_fn) for si in node.side_inputs])

    def _fuse(self, node) -> bool:
        """Runs a ParDo inside the tasks of the ParDo chain it reads from, as Beam's runners fuse stages: its input
        then never leaves the worker that made it (a separate task may be placed on another worker, and a transfer
        from a worker busy in Python waits on that worker's GIL: seconds per partition on a corpus run). Only a
        ParDo without side inputs is fused: a side input computed from the chain itself would be a cycle."""
        if node.side_inputs or len(node.inputs) != 1:
            return False
        source = node.inputs[0]
        group = self.groups.get(getattr(source, "producer", None))
        if group is None:
            return False
        self.consumed.add(source.producer)
        group.steps.append(tasks.FusedStep(self._spec(node), (source.producer.full_label, source.tag)))
        self.groups[node] = group
        self.parts[node] = group.keys
        return True

    def leaves(self) -> List[Any]:
        """The Delayed objects of every partition of every transform whose output no transform reads. A fused
        ParDo's leaf is its own output selected from its chain's, so that the chain's other outputs are released
        when their readers are done, not held to the end of the run.

        The tasks that read a `fine` costly group (seconds each, of uneven length: the masked-LM scores) are
        marked as data producers, which dask's scheduler keeps in its queue and hands to a worker only when it has
        a free thread (`distributed.scheduler.worker-saturation`), and the group's pieces (milliseconds each) run
        before any other ready task (priority 1). Placed like other tasks, each score went, with its join, to the
        worker that held its pieces; a join ran there in graph order, after that worker's current score. A worker
        that ran out of work found no score ready while the other worker's pieces waited behind its long scores:
        11.4 s idle at the end of a 146 s augmentation run on two workers, against 2 s with the queue."""
        from dask.delayed import Delayed
        leaves = []
        for node, parts in list(self.parts.items()):
            if node not in self.consumed:
                leaves.extend(self._select(node, None) if node in self.groups else self._keyed(parts))
        chains = list({id(group): group for group in self.groups.values()}.values())
        for group in chains:
            for key, part in zip(group.keys, group.inputs):
                self.graph[key] = (functools.partial(tasks.run_fused, steps=tuple(group.steps),
                                                     kept=frozenset(group.kept)), part, group.sides)
        queued_groups = [group for group in chains if group.queued]
        if not queued_groups:
            return [Delayed(key, self.graph) for key in leaves]
        from dask._task_spec import convert_legacy_task
        from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
        keys = set(self.graph)
        for key in (key for group in queued_groups for key in group.keys):
            task = convert_legacy_task(key, self.graph[key], keys)
            task._data_producer = True  # what dask's `Task(..., _data_producer=True)` sets
            self.graph[key] = task
        name = f"graph-{self.run_id}"
        # 1 (True) for the pieces, 0 for the other tasks; computed per key where the graph is materialised.
        pieces = frozenset(key for group in queued_groups for part in group.inputs if _is_nested_join(part)
                           for key in part[1])
        first = functools.partial(operator.contains, pieces)
        graph = HighLevelGraph({name: MaterializedLayer(self.graph, annotations={"priority": first})}, {name: set()})
        return [Delayed(key, graph, layer=name) for key in leaves]


@dataclasses.dataclass
class _Group:
    """A chain of fused ParDos: one task per partition of the first one's input runs them all (`tasks.run_fused`).

    Attributes:
      keys: the tasks' keys, one per partition; inputs: the first ParDo's input partitions; sides: its side inputs.
      steps: the ParDos in order, each reading the partition or an earlier step's output.
      kept: the outputs (label, tag) read outside the chain: the only ones a task returns.
      queued: whether its tasks wait in the scheduler's queue for a free worker thread (`_Translator.leaves`).
    """
    keys: List[Any]
    inputs: List[Any]
    sides: List[Any]
    steps: List[Any]
    kept: set = dataclasses.field(default_factory=set)

    @property
    def queued(self) -> bool:
        return any(map(_is_nested_join, self.inputs))


def _is_selection(part) -> bool:
    """Whether a partition is a nested selection from a chain's partition (`_Translator._inline_select`)."""
    return isinstance(part, tuple) and len(part) == 3 and part[0] is tasks.select


def _is_nested_join(part) -> bool:
    """Whether a partition is a `fine` group's join nested in its reader's task (`_Translator._shuffle`)."""
    return isinstance(part, tuple) and len(part) == 2 and part[0] is tasks.group_pieces


def _cut(function, **fixed):
    """`function` as a shuffle's cut: (partition, offset=i) -> pieces; `offset` reaches only round-robin cuts."""
    if function is tasks.split_round_robin:
        return functools.partial(function, **fixed)
    return functools.partial(_ignore_offset, functools.partial(function, **fixed))


def _ignore_offset(function, items, *, offset):
    del offset
    return function(items)


def _costly_groups(node) -> Optional[str]:
    """The `costly_groups` annotation of the innermost composite around a transform that has one (FINE_GROUPS or
    FEW_GROUPS), else None. An annotation, not an attribute: Beam rebuilds a composite from its proto before a runner
    sees it, and only its label and annotations survive (as bytes)."""
    node = node.parent
    while node is not None:
        value = (getattr(node, "annotations", None) or {}).get(COSTLY_GROUPS)
        if value:
            return value.decode() if isinstance(value, bytes) else str(value)
        node = node.parent
    return None


def _translated_whole(node) -> bool:
    """A GroupByKey (after Beam's Dask override) or a CombinePerKey without side inputs, in the global window."""
    transform = node.transform
    if not isinstance(transform, (_GroupByKey, beam.CombinePerKey)) or len(node.inputs) != 1:
        return False
    if isinstance(transform, beam.CombinePerKey) and (node.side_inputs or transform.side_inputs):
        return False
    windowing = getattr(node.inputs[0], "windowing", None)
    return windowing is None or isinstance(windowing.windowfn, GlobalWindows)
