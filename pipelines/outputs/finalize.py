"""Completes an output directory: the empty shards, README.md, manifest.json, then `_SUCCESS`, written last.

`FinalizeOutput` runs once, after every shard writer and count of the pipeline (side inputs), so the manifest it
builds lists every file with its row count and stats:
  {"format_version", "code_version", <the pipeline's header: kind, inputs, tokenizer, options...>,
   "outputs": {name: {"subdir", "num_shards", "schema", "files": [{"path", "rows", ...}], "totals"}},
   "counts": {table: {key: n}}, ["report"], ["status": "failed", "failure"]}
"""

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from contract.layout import CODE_VERSION, DATASET_CARD, FORMAT_VERSION, MANIFEST_NAME, REJECTS_SUBDIR, SUCCESS_MARKER
from contract.manifest import encode_manifest
from pipelines.outputs.filesystem import check_claim, release_claim
from pipelines.outputs.shards import ShardSet, join_path, write_shard
from pipelines.outputs.results import QualityRule, dataset_card


class FinalizeOutputFn(beam.DoFn):
    """Writes missing (empty) shards, then manifest.json, then the completion marker, once every input is done."""

    def __init__(self, output_dir: str, header: Mapping[str, Any], shard_sets: Mapping[str, ShardSet],
                 count_names: Sequence[str], named_count_names: Sequence[str] = (), *,
                 quality: Optional[QualityRule] = None, dataset_card: Optional[Dict[str, Any]] = None,
                 run_id: Optional[str] = None):
        self._quality = quality
        self._dataset_card = dataset_card
        self._output_dir = output_dir
        self._run_id = run_id  # the claim's id (claim_output_dir); None: no check
        self._header = dict(header)
        self._shard_sets = dict(shard_sets)
        self._count_names = list(count_names)
        self._named_count_names = list(named_count_names)

    def process(self, unused_element, *side_inputs, manifest_fields=()):
        set_names = sorted(self._shard_sets)
        if self._named_count_names:
            *side_inputs, named_pairs = side_inputs
        num_stats = len(side_inputs) - len(self._count_names)
        stats = [item for stats_list in side_inputs[:num_stats] for item in stats_list]
        count_lists = list(side_inputs[num_stats:])
        count_names = list(self._count_names)
        for name in self._named_count_names:
            count_names.append(name)
            count_lists.append([(key, value) for (owner, key), value in named_pairs if owner == name])
        outputs = {}
        for name in set_names:
            shard_set = self._shard_sets[name]
            own = [item for item in stats if item["path"].startswith(shard_set.subdir + "/")]
            outputs[name] = _complete_shard_set(self._output_dir, shard_set, own)
            _remove_stray_temporaries(join_path(self._output_dir, shard_set.subdir))
        counts = {name: dict(sorted((str(k), int(v)) for k, v in pairs))
                  for name, pairs in zip(count_names, count_lists)}
        manifest = {"format_version": FORMAT_VERSION, "code_version": CODE_VERSION, **self._header,
                    "outputs": outputs, "counts": counts}
        for fields in manifest_fields:  # e.g. {"report": "report/report.md"}, written before this step ran
            manifest.update(fields)
        check_claim(self._output_dir, self._run_id)  # another run took the folder: write nothing further
        failure = self._quality.failure(counts) if self._quality is not None else None
        if failure is not None:  # the rows are kept for a look, but nothing marks them usable
            manifest["status"] = "failed"
            manifest["failure"] = failure
        if self._dataset_card is not None:
            rejected = outputs.get(REJECTS_SUBDIR, {}).get("totals", {}).get("rows", 0)
            card = dict(self._dataset_card)
            if "label_names" in card and card["label_names"] is None and manifest.get("label_list"):
                card["label_names"] = manifest["label_list"]  # known only once the rows were read
            _write_text(join_path(self._output_dir, DATASET_CARD), dataset_card(**card, with_rejects=rejected > 0))
        _write_text(join_path(self._output_dir, MANIFEST_NAME), encode_manifest(manifest))
        if failure is None:
            _write_text(join_path(self._output_dir, SUCCESS_MARKER), "")
            release_claim(self._output_dir, self._run_id)
        yield manifest


def _complete_shard_set(output_dir: str, shard_set: ShardSet, stats: List[Dict[str, Any]]) -> Dict[str, Any]:
    by_shard = {s["shard"]: s for s in stats}  # a retried shard reports the same stats twice at most
    for shard in range(shard_set.num_shards):
        if shard not in by_shard:
            by_shard[shard] = write_shard(output_dir, shard_set, shard=shard, rows=[])
    files = [by_shard[i] for i in range(shard_set.num_shards)]
    totals: Dict[str, int] = {}
    for item in files:
        for key, value in item.items():
            if key not in ("path", "shard") and isinstance(value, int):
                totals[key] = totals.get(key, 0) + value
    schema = shard_set.schema.to_string() if shard_set.schema is not None else shard_set.file_format
    return {"subdir": shard_set.subdir, "num_shards": shard_set.num_shards, "schema": schema,
            "files": [{k: v for k, v in f.items() if k != "shard"} for f in files], "totals": totals}


def _remove_stray_temporaries(directory: str) -> None:
    """Deletes temporary files of writers that died before their rename (a killed worker; the retry wrote anew)."""
    stray = [m.path for m in FileSystems.match([join_path(directory, ".tmp-*")])[0].metadata_list]
    if stray:
        FileSystems.delete(stray)


def _write_text(path: str, text: str) -> None:
    with FileSystems.create(path) as handle:
        handle.write(text.encode("utf-8"))


class FinalizeOutput(beam.PTransform):
    """Completes an output directory from the shard stats and counts of a pipeline; apply it to the pipeline root.

    Args:
      output_dir: the output root.
      header: manifest fields known before the run (inputs, tokenizer, seed, options...).
      shard_stats: {name: (ShardSet, PCollection of stats dicts from WriteShards)}; several names may share
        one collection (WriteBatchedShards): each set takes the stats under its subdir.
      counts: {name: PCollection of (key, count)}, e.g. rejects by reason.
      named_counts: (names, PCollection of ((name, key), count)): several manifest count tables from one
        collection, so that a pipeline sums all its counts in one CombinePerKey (each is a stage of its own);
        every name appears in the manifest, empty if it has no pairs.
      quality: when the counts break it, the manifest says `"status": "failed"` and no `_SUCCESS` is written.
      dataset_card: the keyword arguments of `dataset_card()` for the README.md written into the output (the
        `datasets` loader's configs and features).
      run_id: the id `claim_output_dir` returned: the manifest and `_SUCCESS` are written only while the in-progress
        marker still carries it, and the marker is removed after `_SUCCESS`. None: no check, the marker is left.
      manifest_fields: a PCollection of dicts merged into the manifest, from steps that must finish before it (the
        report/ writer): the manifest and `_SUCCESS` wait for them.

    Returns:
      A PCollection holding the manifest dict, once written.
    """

    def __init__(self, *, output_dir: str, header: Mapping[str, Any],
                 shard_stats: Mapping[str, Tuple[ShardSet, beam.PCollection]],
                 counts: Optional[Mapping[str, beam.PCollection]] = None,
                 named_counts: Optional[Tuple[Sequence[str], beam.PCollection]] = None,
                 quality: Optional[QualityRule] = None, dataset_card: Optional[Dict[str, Any]] = None,
                 run_id: Optional[str] = None, manifest_fields: Optional[beam.PCollection] = None):
        super().__init__()
        self._manifest_fields = manifest_fields
        self._run_id = run_id
        self._quality = quality
        self._dataset_card = dataset_card
        self._output_dir = output_dir
        self._header = header
        self._shard_stats = dict(shard_stats)
        self._counts = dict(counts or {})
        self._named_counts = named_counts

    def expand(self, pipeline):
        set_names = sorted(self._shard_stats)
        count_names = sorted(self._counts)
        stats_collections = []  # one side input per collection: several sets may share one (WriteBatchedShards)
        for name in set_names:
            if not any(self._shard_stats[name][1] is seen for seen in stats_collections):
                stats_collections.append(self._shard_stats[name][1])
        side_inputs = ([beam.pvalue.AsList(pcoll) for pcoll in stats_collections]
                       + [beam.pvalue.AsList(self._counts[n]) for n in count_names])
        named_names: Sequence[str] = ()
        if self._named_counts is not None:
            named_names, named_pcoll = self._named_counts
            side_inputs.append(beam.pvalue.AsList(named_pcoll))
        shard_sets = {n: self._shard_stats[n][0] for n in set_names}
        extra = {} if self._manifest_fields is None else {
            "manifest_fields": beam.pvalue.AsList(self._manifest_fields)}
        return (pipeline
                | "Trigger" >> beam.Impulse()
                | "WriteManifest" >> beam.ParDo(
                    FinalizeOutputFn(self._output_dir, self._header, shard_sets, count_names, named_names,
                                     quality=self._quality, dataset_card=self._dataset_card, run_id=self._run_id),
                    *side_inputs, **extra))
