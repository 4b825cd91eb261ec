"""Both pipelines on a real dask.distributed cluster (scheduler + 2 worker processes on 127.0.0.1)."""

import contextlib
import os
import pathlib
import signal
import threading
import time

import apache_beam as beam
import pyarrow.parquet as pq
import pytest

from pipelines import augment as augment_pipeline
from pipelines.augment.config import SAMPLE_INPUT
from tests import builders
from tests.test_corpus import TEXT_CORPUS

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def _local_cluster():
    """A real dask.distributed scheduler and 2 single-threaded worker processes on 127.0.0.1."""
    distributed = pytest.importorskip("dask.distributed")
    # Worker processes unpickle our DoFns: they must import the project.
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), saved]))
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=":0")
    try:
        yield cluster
    finally:
        cluster.close()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


@pytest.fixture(scope="module")
def dask_cluster():
    with _local_cluster() as cluster:
        yield cluster


def _all_files(out: pathlib.Path):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_augment_on_dask_equals_direct_runner(tmp_path, tiny_bert, tiny_glove, dask_cluster):
    bad = tmp_path / "train.tsv"
    bad.write_bytes(pathlib.Path(SAMPLE_INPUT).read_bytes()
                    + b"\t1\nno label here\n")
    common = [f"--model={tiny_bert}", f"--glove={tiny_glove}", f"--input={bad}", "--num_aug=4", "--num_shards=3",
              "--emit_candidates", "--max_reject_fraction=0.5"]
    direct = augment_pipeline.run(["--runner=DirectRunner", f"--output={tmp_path / 'direct'}"] + common)
    dask = augment_pipeline.run(["--runner=DaskRunner", f"--dask_client_address={dask_cluster.scheduler_address}",
                                 f"--output={tmp_path / 'dask'}"] + common)
    # The Dask workers find every masked-LM answer the DirectRunner wrote into the (default) candidate store.
    answers = direct["counts"]["stats"]["mlm_distinct_queries"]
    assert direct["counts"].pop("store") == {"answers_computed": answers, "answers_from_store": 0}
    assert dask["counts"].pop("store") == {"answers_computed": 0, "answers_from_store": answers}
    assert dask["counts"] == direct["counts"]
    assert dask["counts"]["rejects"] == {"empty_text": 1, "wrong_column_count": 1}
    assert dask["outputs"] == direct["outputs"]
    a, b = _all_files(tmp_path / "direct"), _all_files(tmp_path / "dask")
    assert sorted(a) == sorted(b)
    for name in a:
        if name != "manifest.json":  # holds the output path
            assert a[name] == b[name], name


def _write_corpus(path: pathlib.Path, copies: int) -> None:
    body = b"".join(TEXT_CORPUS.replace(b"Document", b"Document %d." % copy) for copy in range(copies))
    # Two records the reader must reject: a line that is not UTF-8, twice.
    path.write_bytes(body + b"A \xff\xfe broken line.\nThe document goes on.\n\nAnother \xc3 bad one.\n")


def test_corpus_on_dask_equals_direct_runner(tmp_path, tiny_bert, dask_cluster):
    """The same bytes at the default partitions and ranges, and at 97-byte and 1-byte ranges over 5 and 1 partitions."""
    from pipelines import corpus as corpus_pipeline
    text = tmp_path / "corpus.txt"
    _write_corpus(text, copies=3)
    common = [f"--input={text}", "--input_format=text", f"--tokenizer={tiny_bert}", "--num_shards=3", "--epochs=2",
              "--seed=7", "--docs_per_bucket=3", "--max_seq_len=20", "--max_reject_fraction=0.5"]
    direct = corpus_pipeline.run(["--runner=DirectRunner", f"--output={tmp_path / 'direct'}"] + common)
    assert direct["counts"]["rejects"] == {"non_utf8_line": 2}
    assert direct["counts"]["corpus"]["instances"] > 10
    a = _all_files(tmp_path / "direct")
    assert sum(name.endswith(".parquet") for name in a) == 3 * 3  # two epochs and the rejects, 3 shards each
    for name, extra in {"dask": [], "ranges-97-parts-5": ["--split_bytes=97", "--dask_npartitions=5"],
                        "ranges-1-parts-1": ["--split_bytes=1", "--dask_npartitions=1"]}.items():
        dask = corpus_pipeline.run(["--runner=DaskRunner", f"--dask_client_address={dask_cluster.scheduler_address}",
                                    f"--output={tmp_path / name}", *extra] + common)
        assert dask["counts"] == direct["counts"]
        assert dask["outputs"] == direct["outputs"]
        b = _all_files(tmp_path / name)
        assert sorted(a) == sorted(b)
        for path in a:
            if path != "manifest.json":  # holds the output path
                assert a[path] == b[path], (name, path)


# ------------------------------------------------------------------------------------------------- fault test
@pytest.fixture
def fault_cluster():
    """A cluster of its own: the test kills one of its workers (the nanny then starts a new one)."""
    with _local_cluster() as cluster:
        yield cluster


def _kill_busy_worker(address: str, finished: threading.Event, report: dict) -> None:
    """Waits until the job is under way, then SIGKILLs the worker process holding the most finished results
    while it is running a task, so that both a running task and already computed partitions are lost."""
    import dask.distributed
    with dask.distributed.Client(address, timeout=30) as client:
        pids = client.run(os.getpid)
        report["pids_before"] = dict(pids)
        while not finished.is_set():
            processing = client.processing()
            in_memory = client.has_what()
            busy = [w for w, keys in processing.items() if keys and in_memory.get(w) and w in pids]
            if busy:
                victim = max(busy, key=lambda w: len(in_memory[w]))
                report["results_lost"] = len(in_memory[victim])
                report["tasks_running"] = len(processing[victim])
                os.kill(pids[victim], signal.SIGKILL)
                report["killed"] = victim
                return
            time.sleep(0.02)


def test_augment_survives_a_killed_worker(tmp_path, tiny_bert, tiny_glove, fault_cluster):
    # 4 distinct copies of the sample task, so that the job runs long enough to be hit in the middle.
    lines = pathlib.Path(SAMPLE_INPUT).read_text(encoding="utf-8").splitlines()
    body = [lines[0]] + [f"{s} {copy}\t{label}" if copy else f"{s}\t{label}"
                         for copy in range(4) for s, label in (line.split("\t") for line in lines[1:])]
    train = tmp_path / "train.tsv"
    train.write_text("\n".join(body) + "\n", encoding="utf-8")
    common = [f"--model={tiny_bert}", f"--glove={tiny_glove}", f"--input={train}", "--num_aug=8", "--num_shards=4",
              "--emit_candidates", "--torch_threads=1",
              "--candidate_store=none"]  # the hit run computes its answers (a warm store would leave little to hit)
    undisturbed = augment_pipeline.run(["--runner=DirectRunner", f"--output={tmp_path / 'undisturbed'}"] + common)

    finished, report = threading.Event(), {}
    killer = threading.Thread(target=_kill_busy_worker, args=(fault_cluster.scheduler_address, finished, report))
    killer.start()
    try:
        hit = augment_pipeline.run(["--runner=DaskRunner",
                                    f"--dask_client_address={fault_cluster.scheduler_address}",
                                    f"--output={tmp_path / 'hit'}"] + common)
    finally:
        finished.set()
        killer.join()
    assert "killed" in report, "the job finished before a worker could be killed"
    assert report["results_lost"] > 0  # finished partitions died with the worker and had to be recomputed
    # The nanny replaced the killed worker process.
    import dask.distributed
    with dask.distributed.Client(fault_cluster.scheduler_address, timeout=30) as client:
        client.wait_for_workers(2, timeout=60)
        assert report["pids_before"][report["killed"]] not in client.run(os.getpid).values()

    assert hit["counts"] == undisturbed["counts"]
    assert hit["outputs"] == undisturbed["outputs"]
    a, b = _all_files(tmp_path / "undisturbed"), _all_files(tmp_path / "hit")
    assert sorted(a) == sorted(b)  # no half-written temporary file left behind either
    for name in a:
        if name != "manifest.json":
            assert a[name] == b[name], name
    rows = [row for entry in hit["outputs"]["data"]["files"]
            for row in pq.read_table(tmp_path / "hit" / entry["path"]).to_pylist()]
    keys = [(row["example_id"], row["aug_index"]) for row in rows]
    assert len(keys) == len(set(keys)) == undisturbed["outputs"]["data"]["totals"]["rows"]


class _MeanFn(beam.CombineFn):
    """A CombineFn whose accumulator differs from its input and output: a lifted combine must merge them."""

    def create_accumulator(self):
        return (0, 0)

    def add_input(self, accumulator, value):
        return accumulator[0] + value, accumulator[1] + 1

    def merge_accumulators(self, accumulators):
        sums, counts = zip(*accumulators)
        return sum(sums), sum(counts)

    def extract_output(self, accumulator):
        return accumulator[0] / accumulator[1] if accumulator[1] else float("nan")


class _SplitFn(beam.DoFn):
    def process(self, element, offset, names):
        key, value = element
        if value % 3 == 0:
            yield beam.pvalue.TaggedOutput("threes", (names.get(key, "?"), value + offset))
        else:
            yield key, value


class _DumpFn(beam.DoFn):
    """Writes each element as a line of a file of its own (results stay on the workers: this is how they come back)."""

    def __init__(self, folder: str, name: str):
        self._folder, self._name = folder, name

    def process(self, element):
        import json
        import uuid
        path = pathlib.Path(self._folder) / f"{self._name}-{uuid.uuid4().hex}"
        path.write_text(json.dumps(element, sort_keys=True, default=sorted), encoding="utf-8")


def _translation_pipeline(pipeline, folder: str) -> None:
    numbers = (pipeline | "Numbers" >> beam.Create([(f"k{i % 7}", i) for i in range(200)])
               | "Spread" >> beam.Reshuffle())
    names = pipeline | "Names" >> beam.Create([("k1", "one"), ("k2", "two")])
    offset = pipeline | "Offset" >> beam.Create([1000])
    split = numbers | "Split" >> beam.ParDo(_SplitFn(), offset=beam.pvalue.AsSingleton(offset),
                                           names=beam.pvalue.AsDict(names)).with_outputs("threes", main="rest")
    results = {
        "sums": split.rest | "Sum" >> beam.CombinePerKey(sum),
        "means": split.rest | "Mean" >> beam.CombinePerKey(_MeanFn()),
        "mean_all": split.rest | beam.Values() | "MeanAll" >> beam.CombineGlobally(_MeanFn()),
        "empty_sum": (pipeline | "Nothing" >> beam.Create([]) | "SumNothing" >> beam.CombineGlobally(sum)),
        "groups": (split.threes | "Group" >> beam.GroupByKey()
                   | "Sorted" >> beam.MapTuple(lambda key, values: (key, sorted(values)))),
        "tuple_keys": ((split.rest, split.threes) | "Both" >> beam.Flatten()
                       | "TupleKey" >> beam.Map(lambda kv: ((kv[0], len(kv[0])), kv[1]))
                       | "Count" >> beam.combiners.Count.PerKey()),
        "joined": ({"rest": split.rest, "names": names} | "Join" >> beam.CoGroupByKey()
                   | "SortedJoin" >> beam.MapTuple(lambda key, groups: (key, sorted(groups["rest"]),
                                                                         groups["names"]))),
    }
    # A chain the runner fuses into Split's tasks (Double, Odd, the odd dump), an output read both inside the chain
    # and by a GroupByKey, a fused step's tagged outputs, and a ParDo with a side input that starts a chain of its own.
    doubled = split.rest | "Double" >> beam.MapTuple(lambda key, value: (key, 2 * value + value % 2))
    parity = doubled | "Odd" >> beam.ParDo(_ParityFn()).with_outputs("odd", main="even")
    results["chain_even"] = parity.even | "SumEven" >> beam.CombinePerKey(sum)
    results["chain_odd"] = parity.odd
    results["chain_groups"] = (doubled | "GroupDoubled" >> beam.GroupByKey()
                               | "SortedDoubled" >> beam.MapTuple(lambda key, values: (key, sorted(values))))
    results["chain_offset"] = doubled | "WithOffset" >> beam.Map(lambda kv, off: (kv[0], kv[1] + off),
                                                                 off=beam.pvalue.AsSingleton(offset))
    for name, pcoll in results.items():
        _ = pcoll | f"Dump{name}" >> beam.ParDo(_DumpFn(folder, name))


class _ParityFn(beam.DoFn):
    def process(self, element):
        yield beam.pvalue.TaggedOutput("odd", element) if element[1] % 2 else element


def _dumped(folder: pathlib.Path):
    found = {}
    for path in folder.iterdir():
        found.setdefault(path.name.rsplit("-", 1)[0], []).append(path.read_text(encoding="utf-8"))
    return {name: sorted(lines) for name, lines in found.items()}


def test_translation_equals_the_direct_runner(tmp_path, dask_cluster):
    """GroupByKey, lifted CombinePerKey/CombineGlobally (an empty one included), tagged outputs with side inputs,
    Flatten, CoGroupByKey and Reshuffle give the DirectRunner's results, at several partition counts."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from pipelines.dask_runner import AllLeavesDaskRunner
    (tmp_path / "direct").mkdir()
    untyped = ["--no_pipeline_type_check"]  # _SplitFn's outputs mix tags; Beam's inference would refuse them
    with beam.Pipeline(runner="DirectRunner", options=PipelineOptions(untyped)) as pipeline:
        _translation_pipeline(pipeline, str(tmp_path / "direct"))
    expected = _dumped(tmp_path / "direct")
    assert len(expected) == 11 and expected["empty_sum"] == ["0"] and expected["chain_odd"]
    for partitions in (1, 3, 8):
        folder = tmp_path / f"dask-{partitions}"
        folder.mkdir()
        options = PipelineOptions(untyped + [f"--dask_client_address={dask_cluster.scheduler_address}",
                                             f"--dask_npartitions={partitions}"])
        with beam.Pipeline(runner=AllLeavesDaskRunner(), options=options) as pipeline:
            _translation_pipeline(pipeline, str(folder))
        assert _dumped(folder) == expected, partitions


def _translated():
    """The translation pipeline's graph (3 partitions), without running it."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.dask.overrides import dask_overrides
    from pipelines.dask_translation import _Translator
    pipeline = beam.Pipeline(options=PipelineOptions(["--no_pipeline_type_check"]))
    _translation_pipeline(pipeline, "unused")
    pipeline.replace_all(dask_overrides())
    translator = _Translator(partitions=3, spread=3, run_id="run")
    pipeline.visit(translator)
    translator.leaves()
    return translator


def test_pardo_chains_run_fused_in_one_task_per_partition():
    """A ParDo reading a ParDo's output runs inside its producer's tasks (Beam's fusion), unless it has side inputs;
    a chain's task returns only the outputs read outside it (a fused reader's input is dropped inside the task)."""
    translator = _translated()
    groups = {node.full_label: group for node, group in translator.groups.items()}
    split, odd = "Split/ParDo(_SplitFn)", "Odd/ParDo(_ParityFn)"
    assert groups["Double"] is groups[split] and groups[odd] is groups[split]
    assert groups["Dumpchain_odd"] is groups[split]
    assert groups["WithOffset"] is not groups[split]  # a side input: a chain of its own
    steps = [step.spec.key[1] for step in groups[split].steps]
    assert steps[0] == split and steps.index("Double") < steps.index(odd) < steps.index("Dumpchain_odd")
    kept = groups[split].kept
    assert ("Double", None) in kept and (odd, None) in kept and (odd, "odd") not in kept
    # One task per partition for the whole chain: no task of Double's or Odd's own.
    chain_tasks = [key for key in translator.graph if key[0].startswith(("Double-", "Odd-"))]
    assert chain_tasks == []


def test_selections_flattens_and_combines_add_no_tasks_of_their_own():
    """A chain's output is picked inside its reader's task (a task of its own only for a side input or a leaf); a
    Flatten of several outputs of one chain partition reads them as one partition; a combine's merges read its cuts
    whole (no task per cut and piece). The results are the DirectRunner's
    (test_translation_equals_the_direct_runner)."""
    from pipelines import dask_partitions
    translator = _translated()
    labels = {key[0].rsplit("-", 1)[0] for key in translator.graph}
    # Selecting tasks: the leaves' (the Dump steps: their outputs are read by nothing) and the side inputs' only.
    selecting = {key[0].rsplit("-", 1)[0] for key, task in translator.graph.items()
                 if isinstance(task, tuple) and task[0] is dask_partitions.select}
    assert selecting and all(label.startswith("Dump") or f"{label}/whole" in labels for label in selecting), selecting
    # Both = Flatten(Split's rest, Split's threes): one partition per Split partition, its two outputs joined.
    both = next(parts for node, parts in translator.parts.items() if node.full_label == "Both")
    split_keys = next(group.keys for node, group in translator.groups.items()
                      if node.full_label == "Split/ParDo(_SplitFn)")
    assert len(both) == len(split_keys)
    for part, split_key in zip(both, split_keys):
        function, selections = part
        assert function is dask_partitions.concat
        assert [selection[1] for selection in selections] == [split_key, split_key]
    # Combines: cuts and merges, no piece tasks; a GroupByKey keeps its pieces (each moves only its own data).
    assert not any(label.startswith(("Sum/", "Mean/")) and label.endswith("/piece") for label in labels)
    assert any(label.startswith("Group/") and label.endswith("/piece") for label in labels)


class _Costly(beam.PTransform):
    def __init__(self, value):
        super().__init__()
        self._value = value

    def annotations(self):
        from pipelines.runners import COSTLY_GROUPS
        return {**super().annotations(), COSTLY_GROUPS: self._value}

    def expand(self, pcoll):
        return pcoll | "Inner" >> beam.GroupByKey()


def test_a_costly_composites_groups_are_cut_finely():
    """A GroupByKey inside a composite annotated costly_groups gets the fine partition count (the augmentation's
    masked-LM batches) or a Reshuffle's (`few`: the corpus's buckets); another keeps `partitions`. The annotation
    survives Beam's proto round trip, which turns every composite into a plain PTransform before a runner sees it (an
    attribute of the class did not)."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.dask.overrides import dask_overrides
    from pipelines.augment.scoring import _ScoreGroups
    from pipelines.corpus.transforms import CreateInstances
    from pipelines.dask_translation import _Translator
    from pipelines.runners import COSTLY_GROUPS, FEW_GROUPS, FINE_GROUPS
    assert _ScoreGroups(None, None).annotations()[COSTLY_GROUPS] == FINE_GROUPS
    assert CreateInstances(None, None).annotations()[COSTLY_GROUPS] == FEW_GROUPS
    built = beam.Pipeline(options=PipelineOptions(["--no_pipeline_type_check"]))
    keyed = built | beam.Create([(i % 5, i) for i in range(20)])
    _ = keyed | "Costly" >> _Costly(FINE_GROUPS)
    _ = keyed | "Few" >> _Costly(FEW_GROUPS)
    _ = keyed | "Plain" >> beam.GroupByKey()
    pipeline = beam.Pipeline.from_runner_api(built.to_runner_api(), built.runner, built.options)
    pipeline.replace_all(dask_overrides())
    translator = _Translator(partitions=3, spread=4, root_spread=7, run_id="run")
    pipeline.visit(translator)
    counts = {node.full_label: len(parts) for node, parts in translator.parts.items()}
    assert counts == {"Create": 1, "Costly/Inner/GroupByWindow": 7, "Few/Inner/GroupByWindow": 4,
                      "Plain/GroupByWindow": 3}


def _fine_group_pipeline(pipeline, folder: str):
    """Sums per key through a `fine` costly group and through a plain one, each written as sorted lines."""
    from pipelines.runners import FINE_GROUPS
    keyed = pipeline | beam.Create([(i % 37, i) for i in range(500)]) | "Spread" >> beam.Reshuffle()
    for name, grouped in (("fine", keyed | "Costly" >> _Costly(FINE_GROUPS)), ("plain", keyed | beam.GroupByKey())):
        _ = (grouped
             | f"Sum{name}" >> beam.MapTuple(lambda key, values: f"{key} {sum(values)}")
             | f"All{name}" >> beam.combiners.ToList()
             | f"Write{name}" >> beam.Map(lambda lines, path: pathlib.Path(path).write_text(
                 "\n".join(sorted(lines))), f"{folder}/{name}.txt"))


def test_a_fine_groups_readers_wait_in_the_schedulers_queue(tmp_path, dask_cluster):
    """The tasks that read a `fine` group join its pieces themselves and are data producers (root-ish: the
    scheduler queues them and hands each to a worker with a free thread, wherever the pieces are); the pieces run
    first (priority 1). On a real cluster: the scheduler treats the readers as root-ish, the pieces come first, and
    the results are those of a plain group."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.dask.overrides import dask_overrides
    from distributed.diagnostics.plugin import SchedulerPlugin
    from pipelines.dask_runner import AllLeavesDaskRunner
    from pipelines.dask_translation import _Translator

    built = beam.Pipeline(options=PipelineOptions(["--no_pipeline_type_check"]))
    _fine_group_pipeline(built, "unused")
    pipeline = beam.Pipeline.from_runner_api(built.to_runner_api(), built.runner, built.options)
    pipeline.replace_all(dask_overrides())
    translator = _Translator(partitions=3, spread=4, root_spread=7, run_id="run")
    pipeline.visit(translator)
    leaves = translator.leaves()
    readers = {node.full_label: group for node, group in translator.groups.items()}
    fine, plain = readers["Sumfine"], readers["Sumplain"]
    assert fine.queued and not plain.queued
    assert len(fine.keys) == 7 and all(translator.graph[key].data_producer for key in fine.keys)
    labels = {key: key[0].rsplit("-", 1)[0] for key in translator.graph}
    assert "Costly/Inner" not in labels.values() and "GroupByKey" in labels.values()  # no join tasks of its own
    pieces = {key for key, label in labels.items() if label == "Costly/Inner/piece"}
    assert len(pieces) == 7 * 7  # the reshuffle's 7 partitions, each cut in 7 pieces
    annotations = leaves[0].__dask_graph__().layers[leaves[0].__dask_layers__()[0]].annotations["priority"]
    assert all(annotations(key) for key in pieces) and not any(annotations(key) for key in fine.keys)

    class Recorder(SchedulerPlugin):
        def __init__(self, scheduler):
            self.scheduler, self.rootish, self.priorities = scheduler, {}, {}

        def transition(self, key, start, finish, *args, **kwargs):
            if finish == "processing" and isinstance(key, tuple):
                task = self.scheduler.tasks[key]
                label = key[0].rsplit("-", 1)[0]
                self.rootish.setdefault(label, set()).add(self.scheduler.is_rootish(task))
                self.priorities.setdefault(label, set()).add(task.priority[0])

    recorder = Recorder(dask_cluster.scheduler)
    dask_cluster.scheduler.add_plugin(recorder, name="fine-group-recorder")
    try:
        options = PipelineOptions(["--no_pipeline_type_check",
                                   f"--dask_client_address={dask_cluster.scheduler_address}"])
        with beam.Pipeline(runner=AllLeavesDaskRunner(), options=options) as run:
            _fine_group_pipeline(run, str(tmp_path))
    finally:
        dask_cluster.scheduler.remove_plugin(name="fine-group-recorder")
    fine_readers = [label for label in recorder.rootish if label.startswith("Sumfine")]
    plain_readers = [label for label in recorder.rootish if label.startswith("Sumplain")]
    assert fine_readers and plain_readers
    assert all(recorder.rootish[label] == {True} for label in fine_readers), recorder.rootish
    assert recorder.priorities["Costly/Inner/piece"] == {-1}
    assert all(recorder.priorities[label] == {0} for label in fine_readers + plain_readers)
    expected = "\n".join(sorted(f"{key} {sum(range(key, 500, 37))}" for key in range(37)))
    assert (tmp_path / "fine.txt").read_text() == expected == (tmp_path / "plain.txt").read_text()


def test_a_named_cluster_is_connected_and_warmed_while_the_command_starts(dask_cluster):
    """The runner of a --dask_client_address connects in the background and asks each worker to import the
    pipeline's modules; a module that does not import is left to the task that needs it."""
    import sys
    from apache_beam.options.pipeline_options import PipelineOptions
    from pipelines.dask_runner import AllLeavesDaskRunner
    options = PipelineOptions([f"--dask_client_address={dask_cluster.scheduler_address}"])
    assert AllLeavesDaskRunner(worker_modules=("json",), options=PipelineOptions([]))._client_start is None
    runner = AllLeavesDaskRunner(worker_modules=("xml.dom.minidom", "no_such_module_here"), options=options)
    client = runner._client_start.take()
    try:
        deadline = time.time() + 60
        while True:
            imported = client.run(lambda: "xml.dom.minidom" in sys.modules)
            if all(imported.values()) or time.time() > deadline:
                break
            time.sleep(0.2)
        assert len(imported) == 2 and all(imported.values()), imported
    finally:
        client.close()
        # The in-process scheduler logs the closed connection: let it do so inside this test, not after it.
        deadline = time.time() + 10
        while client.id in dask_cluster.scheduler.clients and time.time() < deadline:
            time.sleep(0.05)


def test_the_local_clusters_workers_do_not_profile():
    """`--local_workers` has no dashboard to show the workers' statistical profiles, so they take none (the sampling
    wakes each worker 100 times a second)."""
    import dask
    import dask.distributed as ddist
    from pipelines import local_cluster
    cluster = local_cluster.ClusterStart(1, ()).take()  # as the runner starts it (the cluster's log lines hidden)
    try:
        with ddist.Client(cluster) as client:
            assert list(client.run(lambda: dask.config.get("distributed.worker.profile.enabled")).values()) == [False]
            callbacks = client.run(lambda dask_worker: sorted(dask_worker.periodic_callbacks))
            assert not any("profile" in name for names in callbacks.values() for name in names), callbacks
            # the event loops' health ticks every second (pipelines.dask_worker.QUIET_TIMERS), workers and scheduler
            ticks = client.run(lambda dask_worker: dask_worker.periodic_callbacks["tick"].callback_time)
            assert list(ticks.values()) == [1000] and cluster.scheduler.periodic_callbacks["tick"].callback_time == 1000
    finally:
        cluster.close()


def test_preloads_slow_the_idle_timers_a_user_left_at_their_defaults():
    """`pipelines.dask_worker.quiet_timers`: distributed's 20 ms tick and 10 ms profile sample become 1 s and 100 ms;
    a period the user configured stays; a server without a timer (a scheduler has no profile) gets none."""
    import dask
    from tornado.ioloop import PeriodicCallback
    from pipelines.dask_worker import quiet_timers

    class Server:
        def __init__(self, **periods):
            self.periodic_callbacks = {name: PeriodicCallback(lambda: None, ms) for name, ms in periods.items()}

    def periods(server):
        return {name: callback.callback_time for name, callback in server.periodic_callbacks.items()}
    server = Server(tick=20, profile=10, heartbeat=1000)
    quiet_timers(server)
    assert periods(server) == {"tick": 1000, "profile": 100, "heartbeat": 1000}
    with dask.config.set({"distributed.admin.tick.interval": "50ms", "distributed.worker.profile.interval": 10}):
        server = Server(tick=50, profile=10)
        quiet_timers(server)
        assert periods(server) == {"tick": 50, "profile": 100}
    server = Server(tick=20)
    quiet_timers(server)
    assert periods(server) == {"tick": 1000}


def test_tasks_pause_the_garbage_collector_and_restore_it():
    import gc
    from pipelines import dask_partitions as tasks
    was_enabled = gc.isenabled()
    try:
        gc.enable()
        assert tasks._collector_paused(gc.isenabled)() is False
        with tasks._COLLECTOR_PAUSED:
            assert tasks._collector_paused(gc.isenabled)() is False  # nested (a worker with several threads)
            assert not gc.isenabled()
        assert gc.isenabled()
        assert tasks.group_pieces([[("a", 1)], [("a", 2)]]) == [("a", [1, 2])] and gc.isenabled()
        gc.disable()
        tasks.group_pieces([[("a", 1)]])
        assert not gc.isenabled()  # left off, as it was
    finally:
        (gc.enable if was_enabled else gc.disable)()


_TASK_FAULT_PROBE = builders.FAULT_PROBE + """
from pipelines import dask_partitions as tasks

def in_task():
    faults(2)
    return faults()

print(faults(), tasks._collector_paused(in_task)(), faults())
"""


@pytest.mark.skipif(not pathlib.Path("/proc/self/maps").exists(), reason="glibc malloc on Linux")
def test_tasks_reuse_freed_buffers_where_the_nanny_set_the_trim_threshold(tmp_path):
    """Under a nanny's MALLOC_TRIM_THRESHOLD_ every buffer over 128 KiB is mapped and faulted in afresh; while a task
    runs, freed buffers are reused, and the nanny's setting is back once it ends."""
    import subprocess
    import sys
    environ = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", _TASK_FAULT_PROBE], env=environ, capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    before, during, after = (int(value) for value in out.stdout.split())
    pages = builders.FAULT_PROBE_PAGES
    assert before >= pages * 0.9 and after >= pages * 0.9
    assert during < pages * 0.1


def test_local_workers_refuses_another_runner_or_cluster(tmp_path, tiny_bert):
    from contract.errors import UserError
    from pipelines import corpus as corpus_pipeline
    text = tmp_path / "corpus.txt"
    _write_corpus(text, copies=1)
    common = [f"--input={text}", f"--tokenizer={tiny_bert}", f"--output={tmp_path / 'out'}"]
    with pytest.raises(UserError, match="does not go with --runner=FlinkRunner"):
        corpus_pipeline.run(common + ["--local_workers=2", "--runner=FlinkRunner"])
    with pytest.raises(UserError, match="drop it to use the cluster of --dask_client_address"):
        corpus_pipeline.run(common + ["--local_workers=2", "--runner=DaskRunner",
                                      "--dask_client_address=tcp://127.0.0.1:1"])
    with pytest.raises(UserError, match="--local_workers must be >= 1"):
        corpus_pipeline.run(common + ["--local_workers=0"])


def test_the_entry_point_starts_the_local_cluster_before_the_pipeline(monkeypatch):
    """`--local_workers N` (either spelling) starts the cluster as the command starts; the runner takes it when it
    asks for the same size and pipeline, and starts its own otherwise; anything unusable is left to the parser."""
    from pipelines import local_cluster
    started = []

    class Recorded:
        def __init__(self, workers, modules):
            started.append((workers, tuple(modules)))

    monkeypatch.setattr(local_cluster, "ClusterStart", Recorded)
    monkeypatch.setattr(local_cluster, "_EARLY", {})
    corpus_modules = local_cluster.WORKER_MODULES["pipelines.corpus"]
    for argv in (["--input=x", "--local_workers", "2"], ["--local_workers=2", "--quiet"]):
        local_cluster.start_early(argv, "pipelines.corpus")
        early = local_cluster._EARLY["start"]
        assert started[-1] == (2, corpus_modules)
        assert local_cluster.start(2, corpus_modules) is early and len(started) == 1
        started.clear()
    for argv in (["--local_workers=0"], ["--local_workers", "two"], ["--local_workers"], ["--input=x"]):
        local_cluster.start_early(argv, "pipelines.corpus")
        assert not started and not local_cluster._EARLY, argv
    local_cluster.start_early(["--local_workers=3"], "pipelines.corpus")
    assert isinstance(local_cluster.start(2, corpus_modules), Recorded) and started == [(3, corpus_modules),
                                                                                        (2, corpus_modules)]


def test_the_entry_point_connects_to_a_named_cluster_before_the_pipeline(monkeypatch):
    """With the Dask runner (any spelling) and a cluster's address or scheduler file, the command connects as it
    starts (its workers import the pipeline's modules meanwhile); the runner takes that connection when its options
    name the same cluster for the same modules, and connects again otherwise. Without the Dask runner, without a
    cluster, or with --local_workers, nothing connects early."""
    from pipelines import local_cluster
    connected = []

    class Recorded:
        def __init__(self, kwargs, modules):
            self.kwargs, self.modules = dict(kwargs), tuple(modules)
            connected.append(self)

    monkeypatch.setattr(local_cluster, "ClientStart", Recorded)
    monkeypatch.setattr(local_cluster, "ClusterStart", lambda workers, modules: ("cluster", workers))
    monkeypatch.setattr(local_cluster, "_EARLY", {})
    modules = local_cluster.WORKER_MODULES["pipelines.augment"]
    for argv, kwargs in ((["--runner=DaskRunner", "--dask_client_address", "tcp://host:8786"],
                          {"address": "tcp://host:8786"}),
                         (["--runner", "dask", "--dask_scheduler_file=/shared/scheduler.json"],
                          {"scheduler_file": "/shared/scheduler.json"})):
        local_cluster.start_early(argv, "pipelines.augment")
        early = local_cluster._EARLY["client"]
        assert (early.kwargs, early.modules) == (kwargs, modules)
        assert local_cluster.client_start(kwargs, modules) is early and len(connected) == 1
        connected.clear()
    local_cluster.start_early(["--runner=DaskRunner", "--dask_client_address=tcp://a:1"], "pipelines.augment")
    other = local_cluster.client_start({"address": "tcp://b:1"}, modules)
    assert other is connected[-1] and other.kwargs == {"address": "tcp://b:1"} and len(connected) == 2
    connected.clear()
    for argv in (["--dask_client_address=tcp://a:1"], ["--runner=DirectRunner", "--dask_client_address=tcp://a:1"],
                 ["--runner=DaskRunner"], ["--runner=DaskRunner", "--dask_client_address=tcp://a:1",
                                           "--local_workers=2"]):
        monkeypatch.setattr(local_cluster, "_EARLY", {})
        local_cluster.start_early(argv, "pipelines.augment")
        assert not connected and "client" not in local_cluster._EARLY, argv
