"""TinyBERT data augmentation of a task's training set, as a Beam pipeline.

Usage:
  python -m pipelines.augment --runner=DirectRunner --task SST-2 --input glue/SST-2/train.tsv \
      --output out/sst2-aug --model bert-base-uncased --glove glove.6B.300d.txt

Steps: read and validate the examples (rejects to rejects/), split each text into words and plan its candidate
lookups, answer each distinct masked-LM sentence once in length-grouped batches, answer each distinct GloVe word
once (a side input), run Algorithm 1 per example with an RNG seeded from (seed, example id), then write Parquet
shards under data/, train_aug.tsv in the reference layout, optional candidates/, a manifest and _SUCCESS.
"""

import logging
import time
from typing import Any, Dict, List, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import SetupOptions

from contract import fingerprint, layout, schemas
from contract.errors import UserError
from contract.layout import AUGMENTED_KIND, STORE_FILL_KIND
from contract.overlap import refuse_overlap
from contract.schemas import CANDIDATE_SCHEMA, augmented_schema
from pipelines import cli, local_cluster, outputs, progress
from pipelines import report as report_lib
from pipelines.augment import candidate_store, read, report, resources
from pipelines.augment.config import AugmentConfig, DrawSettings, GloveSettings, MaskedLMSettings, PlanSettings
from pipelines.augment.scoring import DescribeStoreFn, FindMaskedLMCandidates, ScoreMaskedLMFn
from pipelines.augment.transforms import (AugmentExamplesFn, FindGloveNeighbours, PlanExamplesFn, ReadExamples,
                                          ReadExamplesFn, WriteTrainAugTsvFn)
from pipelines.runners import resolve_runner

PROG = "python -m pipelines.augment"


def run(argv=None, save_main_session=False):
    """Parses options, checks what a person can fix, runs the pipeline, and prints a summary.

    `save_main_session` stays False: every DoFn lives in an importable module of the installed package, so
    workers import it; pickling `__main__` would copy module state (locks, loaded models) that cannot travel.

    Returns:
      The manifest of the finished output directory (None after printing the help for -h/--help, and after
      --prune_store).

    Raises:
      UserError: a bad option, input or output (one line); a run whose records were (nearly) all rejected.
    """
    started = time.time()
    parsed = cli.parse_args(list(argv or []), prog=PROG, doc=__doc__, settings=[AugmentConfig])
    if parsed is None:
        return None
    namespace, options = parsed
    options.view_as(SetupOptions).save_main_session = save_main_session
    config = AugmentConfig.from_namespace(namespace)  # checks every option value
    if config.prune_store:
        print(candidate_store.prune_model(config), flush=True)
        return None
    resolved = read.resolve_input(config)
    runner = resolve_runner(options, local_workers=config.local_workers,  # refuses bad runner options
                            worker_modules=local_cluster.WORKER_MODULES["pipelines.augment"])
    refuse_overlap(config.output, {"input": [f["path"] for f in resolved.files], "model": config.model,
                                   "glove": resources.resolve_glove(config), "stop_words": config.stop_words,
                                   "candidate_store": config.store_root()})
    run_resources = resources.resolve(config)
    try:
        run_id = outputs.claim_output_dir(config.output, overwrite=config.overwrite)
    except outputs.OutputExistsError as error:
        raise UserError(str(error)) from None
    progress.reset()
    resources.log_precisions(config)
    logging.info("augment: %s %s (%d file(s), %s) -> %s", resolved.layout.task.name, config.input,
                 len(resolved.files), outputs.human_bytes(sum(f["bytes"] for f in resolved.files)), config.output)
    try:
        with cli.worker_errors(config.output):
            with beam.Pipeline(runner=runner, options=options) as pipeline:
                build_pipeline(pipeline, config, resolved=resolved, run_resources=run_resources, run_id=run_id)
    finally:
        resources.forget_glove()  # the launcher's parsed GloVe, reused by an in-process worker
    return _summarize(config, resolved, started)


def main(argv=None):
    cli.run_main(run, argv)


def build_pipeline(pipeline: beam.Pipeline, config: AugmentConfig, *, resolved: read.ResolvedInput,
                   run_resources: resources.RunResources, run_id: Optional[str] = None) -> None:
    """Adds the augmentation graph for `config` (and the input and resources resolved from it) to `pipeline`."""
    task = resolved.layout.task
    num_aug = config.resolved_num_aug(task)
    if run_resources.glove is None and num_aug:
        logging.info("GloVe is off: candidate words of several WordPieces keep themselves (counted as "
                     "words_without_glove); pass --glove PATH to give them GloVe neighbours")
    report_histograms = None if config.no_report else report.augment_histograms(
        num_aug=num_aug, num_fields=len(task.text_fields), top_k=config.top_k)

    read_out = pipeline | "ReadExamples" >> ReadExamples(
        [f["path"] for f in resolved.files], layout=resolved.layout, errors_dir=cli.errors_dir(config.output))
    output = config.output
    rejects_set = outputs.ShardSet(layout.REJECTS_SUBDIR, 1, schemas.REJECT_SCHEMA)
    reject_stats = read_out[ReadExamplesFn.REJECTS] | "WriteRejects" >> outputs.WriteShards(output, rejects_set)
    reasons = (read_out[ReadExamplesFn.REJECTS] | "RejectReasons" >> beam.Map(lambda kv: (kv[1]["reason"], 1))
               | "CountRejects" >> outputs.CountByKey())
    shard_stats = {"rejects": (rejects_set, reject_stats)}
    header_line = read.read_header(resolved.files[0]["path"], resolved.layout)
    header = _manifest_header(config, resolved, run_resources, num_aug=num_aug, header_line=header_line)
    quality = outputs.QualityRule(accepted=("stats", "examples"), rejects="rejects",
                                  max_reject_fraction=config.max_reject_fraction)
    if config.score_only:  # the store's answers only: no draw, no rows
        planned = _plan(read_out.examples, config=config, run_resources=run_resources, glove=False)
        mlm = _find_masked_lm(planned, config=config, run_resources=run_resources, show_progress=not config.quiet)
        examples = read_out.examples | "ExampleCounts" >> beam.Map(lambda _: ("examples", 1))
        stats = (mlm.stats, examples) | "MergeStats" >> beam.Flatten() | "CountStats" >> outputs.CountByKey()
        store_counts = mlm[ScoreMaskedLMFn.STORE] | "CountStore" >> outputs.CountByKey()
        _ = pipeline | "Finalize" >> outputs.FinalizeOutput(
            output_dir=output, header={**header, "kind": STORE_FILL_KIND}, shard_stats=shard_stats,
            counts={"rejects": reasons, "stats": stats, "store": store_counts}, quality=quality, run_id=run_id,
            manifest_fields=_describe_store(pipeline, run_resources, store_counts))
        return

    draw = DrawSettings(task=task, num_aug=num_aug, replace_prob=config.replace_prob, seed=config.seed,
                        emit_candidates=config.emit_candidates, glove=run_resources.glove is not None,
                        word_rule=config.word_rule, show_progress=not config.quiet,
                        report_histograms=report_histograms)
    augmented, lookup_stats, store_counts = _augment(pipeline, read_out.examples, config=config,
                                                     run_resources=run_resources, settings=draw)

    data_set = outputs.ShardSet("data", config.num_shards, augmented_schema(task.text_fields))
    tsv_set = outputs.ShardSet("tsv-parts", config.num_shards, None, file_format="tsv")
    # Augmentation multiplies each example ~N times: rebalance before the shard writers.
    data_stats = (augmented.rows | "SpreadRows" >> beam.Reshuffle()
                  | "WriteData" >> outputs.WriteShards(output, data_set))
    tsv_stats = augmented[AugmentExamplesFn.TSV] | "WriteTsvParts" >> outputs.WriteShards(output, tsv_set)
    tsv_done = (pipeline | "TsvTrigger" >> beam.Create([None])
                | "WriteTrainAugTsv" >> beam.ParDo(WriteTrainAugTsvFn(output, header_line, tsv_set),
                                                   beam.pvalue.AsList(tsv_stats)))
    stats = ((augmented[AugmentExamplesFn.STATS], *lookup_stats, tsv_done) | "MergeStats" >> beam.Flatten()
             | "CountStats" >> outputs.CountByKey())
    shard_stats["data"] = (data_set, data_stats)
    if config.emit_candidates:
        cand_set = outputs.ShardSet("candidates", config.num_shards, CANDIDATE_SCHEMA)
        shard_stats["candidates"] = (cand_set, augmented[AugmentExamplesFn.CANDIDATES]
                                     | "WriteCandidates" >> outputs.WriteShards(output, cand_set))
    counts = {"rejects": reasons, "stats": stats}
    if store_counts is not None:
        store_counts = store_counts | "CountStore" >> outputs.CountByKey()
        counts["store"] = store_counts

    report_done = None
    if report_histograms is not None:  # report/, written before the manifest and _SUCCESS (which wait for it)
        named_counts = ((reasons | "ReportRejectCounts" >> beam.Map(lambda kv: (("rejects", kv[0]), kv[1])),
                         stats | "ReportStatsCounts" >> beam.Map(lambda kv: (("stats", kv[0]), kv[1])))
                        | "ReportCounts" >> beam.Flatten())
        report_done = pipeline | "WriteReport" >> report_lib.WriteReport(
            output, report.augment_report,
            stats=augmented[AugmentExamplesFn.REPORT] | "SumReportStats" >> report_lib.SumReportStats(),
            top_words=augmented[AugmentExamplesFn.REPLACED_WORDS] | "FindTopWords" >> report.FindTopWords(),
            named_counts=named_counts, histograms=report_histograms, run_id=run_id,
            settings={"task": task.name, "num_aug": num_aug, "replace_prob": config.replace_prob,
                      "top_k": config.top_k, "seed": config.seed})
    if task.generic and task.labels is None and resolved.layout.label_field:
        # No --label_list: the labels the examples hold become the manifest's label_list, sorted (the class order a
        # trainer uses), so that a classifier can be trained on the output without naming them again.
        labels_seen = (read_out.examples | "LabelOf" >> beam.Map(lambda keyed: keyed[1].label)
                       | "DistinctLabels" >> beam.Distinct()
                       | "ListLabels" >> beam.combiners.ToList()
                       | "LabelListField" >> beam.Map(_label_list_field))
        report_done = labels_seen if report_done is None else (
            (report_done, labels_seen) | "ManifestFields" >> beam.Flatten())
    if store_counts is not None and run_resources.store is not None:
        described = _describe_store(pipeline, run_resources, store_counts)
        report_done = described if report_done is None else (
            (report_done, described) | "ManifestStoreFields" >> beam.Flatten())
    _ = pipeline | "Finalize" >> outputs.FinalizeOutput(
        output_dir=output, header=header, shard_stats=shard_stats, counts=counts, quality=quality,
        dataset_card={"data_glob": "data/*.parquet", "text_fields": list(task.text_fields),
                      "label_names": list(task.labels) if task.labels else None},
        run_id=run_id, manifest_fields=report_done)


def _augment(pipeline: beam.Pipeline, examples: beam.PCollection, *, config: AugmentConfig,
             run_resources: resources.RunResources, settings: DrawSettings):
    """Examples -> the outputs of `AugmentExamplesFn` (rows, TSV lines, candidates, stats, report stats), the
    stats of the candidate lookups, and the candidate store's counts (None without masked-LM lookups): plan each
    example's lookups, answer each distinct masked-LM sentence and GloVe word once, then draw."""
    planned = _plan(examples, config=config, run_resources=run_resources, glove=settings.glove)
    if settings.num_aug == 0:  # the original rows only: no candidate is ever drawn, so none is looked up
        no_answers = pipeline | "NoMaskedLMAnswers" >> beam.Create([])
        glove_neighbours = pipeline | "NoGloveNeighbours" >> beam.Create([])
        return _draw(examples, planned.plans, no_answers, glove_neighbours, settings), (), None
    mlm = _find_masked_lm(planned, config=config, run_resources=run_resources, show_progress=settings.show_progress)
    if settings.glove:
        glove = planned[PlanExamplesFn.GLOVE_WORDS] | "FindGloveNeighbours" >> FindGloveNeighbours(GloveSettings(
            path=run_resources.glove, vocab_limit=config.glove_vocab, top_k=config.top_k))
        glove_neighbours, lookup_stats = glove.neighbours, (mlm.stats, glove.stats)
    else:  # no GloVe: an empty side input, so every multi-piece word keeps itself
        glove_neighbours, lookup_stats = pipeline | "NoGloveNeighbours" >> beam.Create([]), (mlm.stats,)
    return (_draw(examples, planned.plans, mlm.answers, glove_neighbours, settings), lookup_stats,
            mlm[ScoreMaskedLMFn.STORE])


def _plan(examples: beam.PCollection, *, config: AugmentConfig, run_resources: resources.RunResources,
          glove: bool):
    """Each example's words and lookups (`PlanExamplesFn`): plans, masked-LM requests, GloVe words."""
    # Reading is one task per file: spread the examples over the workers.
    spread = examples | "SpreadExamples" >> beam.Reshuffle()
    return spread | "PlanExamples" >> beam.ParDo(PlanExamplesFn(PlanSettings(
        model=config.model, word_rule=config.word_rule, stop_words=run_resources.stop_words,
        glove=glove))).with_outputs(PlanExamplesFn.MLM_REQUESTS, PlanExamplesFn.GLOVE_WORDS, main="plans")


def _find_masked_lm(planned, *, config: AugmentConfig, run_resources: resources.RunResources, show_progress: bool):
    """The masked-LM answers of the planned requests, from the candidate store or the model (scoring.py)."""
    return planned[PlanExamplesFn.MLM_REQUESTS] | "FindMaskedLMCandidates" >> FindMaskedLMCandidates(
        MaskedLMSettings(model=config.model, top_k=config.top_k, precision=config.precision, device=config.device,
                         max_batch_tokens=config.max_batch_tokens, torch_threads=config.torch_threads,
                         partitions=config.mlm_partitions, show_progress=show_progress, store=run_resources.store,
                         errors_dir=cli.errors_dir(config.output)))


def _describe_store(pipeline: beam.Pipeline, run_resources: resources.RunResources, store_counts):
    """The manifest's `candidate_store` fields (None without a store), measured once every answer is written."""
    if run_resources.store is None:
        return None
    return (pipeline | "StoreTrigger" >> beam.Create([None])
            | "DescribeStore" >> beam.ParDo(DescribeStoreFn(run_resources.store), beam.pvalue.AsList(store_counts)))


def _draw(examples: beam.PCollection, plans: beam.PCollection, mlm_answers: beam.PCollection,
          glove_neighbours: beam.PCollection, settings: DrawSettings):
    """Each example's plan joined with its masked-LM answers, and Algorithm 1 with the GloVe neighbours."""
    total_examples = examples | "CountExamples" >> beam.combiners.Count.Globally()
    return ({"example": plans, "mlm": mlm_answers}
            | "JoinAnswers" >> beam.CoGroupByKey()
            | "AugmentExamples" >> beam.ParDo(
                AugmentExamplesFn(settings), glove=beam.pvalue.AsDict(glove_neighbours),
                total_examples=beam.pvalue.AsSingleton(total_examples)).with_outputs(
                    AugmentExamplesFn.TSV, AugmentExamplesFn.CANDIDATES, AugmentExamplesFn.STATS,
                    AugmentExamplesFn.REPORT, AugmentExamplesFn.REPLACED_WORDS, main="rows"))


def _label_list_field(labels) -> Dict[str, Any]:
    return {"label_list": sorted(label for label in labels if label is not None), "label_list_from": "labels seen"}


def _manifest_header(config: AugmentConfig, resolved: read.ResolvedInput, run_resources: resources.RunResources, *,
                     num_aug: int, header_line: Optional[str]) -> Dict[str, Any]:
    """The manifest's fields known before the run: the task, the model, every setting, the inputs."""
    task = resolved.layout.task
    return {
        "kind": AUGMENTED_KIND, "task": task.name, "text_fields": list(task.text_fields), "label_field": "label",
        # where the input (and a dev file in its layout) holds the label
        "input_label_column": resolved.layout.label_field,
        "label_list": list(task.labels) if task.labels else None, "regression": task.regression,
        "tokenizer": fingerprint.tokenizer_fingerprint(run_resources.tokenizer, config.model), "model": config.model,
        "glove": run_resources.glove, "glove_vocab": config.glove_vocab, "num_aug": num_aug, "top_k": config.top_k,
        "word_rule": config.word_rule, "stop_words": None if config.stop_words is None else {
            "path": config.stop_words, "sha256": run_resources.stop_words_sha256},
        "replace_prob": config.replace_prob, "seed": config.seed, "precision": config.precision,
        "input_format": resolved.layout.input_format, "inputs": resolved.files, "tsv_header": header_line,
        "pair_fields": "other fields of an augmented row keep their original text",
    }


def _store_lines(manifest: Dict[str, Any]) -> List[str]:
    """The summary's line on the masked-LM answers: how many came from the candidate store, and its size."""
    counts = manifest.get("counts", {}).get("store")
    if counts is None:
        return []
    line = (f"masked LM {counts.get('answers_from_store', 0):,} answers from the candidate store, "
            f"{counts.get('answers_computed', 0):,} computed")
    store = manifest.get("candidate_store")
    if store:
        line += (f"; store {outputs.human_bytes(store['store_bytes'])} in {store['store_files']:,} files at "
                 f"{store['path']} (this model: {store['model_id']}/)")
    return [line]


def _summarize(config: AugmentConfig, resolved: read.ResolvedInput, started: float) -> Dict[str, Any]:
    """The finished run's manifest, after printing its summary; a run that failed its quality rule raises.

    Raises:
      UserError: the run's records were (nearly) all rejected, with the likely cause.
    """
    manifest = outputs.read_manifest(config.output, require_success=False)
    outputs.raise_if_failed(manifest, config.output,
                            hint=lambda: read.diagnose(resolved, manifest["counts"].get("rejects", {}), config))
    if manifest.get("label_list_from") == "labels seen":
        logging.info("augment: no --label_list: the %d labels seen, sorted, are recorded as the label_list: %s",
                     len(manifest["label_list"]), manifest["label_list"])
    print(outputs.summary("augment", manifest, config.shown_output, time.time() - started, rows_output="data",
                          extra=_store_lines(manifest)), flush=True)
    return manifest
