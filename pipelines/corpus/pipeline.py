"""The corpus run, top-down: parse and check the options, load the tokenizer, claim the output, build the graph,
run it, summarize. (`python -m pipelines.corpus --help` shows the options and the output it writes.)"""

import logging
import time
from typing import Any, Dict, List, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.options.pipeline_options import SetupOptions, TypeOptions

import pipelines.corpus
from contract import fingerprint, layout, schemas
from contract.errors import UserError
from contract.layout import CORPUS_KIND
from contract.schemas import instance_schema, token_dtype_name, token_typecode
from contract.overlap import refuse_overlap
from corpus import tokenizer as tokenizer_lib
from pipelines import cli, local_cluster, outputs, progress, report, sources
from pipelines.corpus import resources
from pipelines.corpus.config import CorpusConfig
from pipelines.corpus.read import ReadDocuments, ReadSettings, diagnose
from pipelines.corpus.report import corpus_histograms, corpus_report, document_stats, instance_batch_stats
from pipelines.corpus.transforms import (COUNTS_TABLE, CreateInstances, DropDuplicateDocuments, InstanceSettings,
                                         SplitSentencesFn, TokenizeDocuments)
from pipelines.runners import resolve_runner

KIND = CORPUS_KIND
REJECTS_TABLE = "rejects"  # the manifest's rejects by reason
# Reject reasons that are skips by design, not bad input: they do not count towards --max_reject_fraction (a real
# dump holds about as many redirects as articles, and pages that are all templates or tables: empty after markup).
SKIP_REASONS = ("redirect", "not_article", "duplicate_document", "empty_article")


def run(argv: Optional[Sequence[str]] = None, save_main_session: bool = False) -> Optional[Dict[str, Any]]:
    """Runs the pipeline, prints a summary and returns the manifest it wrote (None after printing --help).

    `save_main_session` stays False: every DoFn lives in an importable module of the installed package.

    Raises:
      UserError: one line for unusable options, a missing or damaged input, an unloadable tokenizer, an output
        that is not ours to write, or a run whose records were (nearly) all rejected.
    """
    started = time.time()
    parsed = cli.parse_args(list(argv or []), prog="python -m pipelines.corpus", doc=pipelines.corpus.__doc__,
                            settings=[CorpusConfig])
    if parsed is None:
        return None
    namespace, pipeline_options = parsed
    # Workers on other machines or in other folders (a Dask worker's cwd) read local paths as absolute ones.
    config = CorpusConfig.from_namespace(namespace)
    pipeline_options.view_as(SetupOptions).save_main_session = save_main_session
    # No transform here declares type hints, so Beam's construction-time check has nothing to check; it would only
    # infer element types by decompiling every lambda, a fifth of the run's start-up. (Runtime checks are separate.)
    pipeline_options.view_as(TypeOptions).pipeline_type_check = False
    files = sources.input_files(config.input)
    if all(f["bytes"] == 0 for f in files):
        raise UserError(f"--input {config.input} is empty ({len(files)} file(s) of 0 bytes)")
    runner = resolve_runner(pipeline_options, local_workers=config.local_workers,  # refuses bad runner options
                            worker_modules=local_cluster.WORKER_MODULES["pipelines.corpus"])
    refuse_overlap(config.output, {"input": [f["path"] for f in files], "tokenizer": config.tokenizer})
    tokenizer = resources.load_tokenizer(config.tokenizer)
    instances = _instance_settings(config, tokenizer)
    try:
        run_id = outputs.claim_output_dir(config.output, overwrite=config.overwrite)
    except outputs.OutputExistsError as error:
        raise UserError(str(error)) from None
    progress.reset()
    logging.info("corpus: %s %s (%d file(s), %s) -> %s", config.input_format, config.input, len(files),
                 outputs.human_bytes(sum(f["bytes"] for f in files)), config.output)
    header = _manifest_header(config, files=files, tokenizer=tokenizer, vocab_size=instances.special.vocab_size)

    with cli.worker_errors(config.output):
        with beam.Pipeline(runner=runner, options=pipeline_options) as pipeline:
            build_pipeline(pipeline, config=config, files=files, tokenizer_json=tokenizer.to_json(),
                           instances=instances, header=header, run_id=run_id)

    manifest = outputs.read_manifest(config.output, require_success=False)
    outputs.raise_if_failed(manifest, config.output, hint=lambda: diagnose(config.input_format, files[0]["path"]))
    print(_summary(manifest, config, seconds=time.time() - started), flush=True)
    return manifest


def main(argv: Optional[Sequence[str]] = None) -> None:
    cli.run_main(run, argv)


def build_pipeline(pipeline: beam.Pipeline, *, config: CorpusConfig, files: List[Dict[str, Any]],
                   tokenizer_json: str, instances: InstanceSettings, header: Dict[str, Any], run_id: str) -> None:
    """Adds the corpus graph to `pipeline`: read documents, split sentences, drop duplicates (--dedup), tokenize,
    cut instances per bucket, write every epoch's shards and the rejects, the report, then the manifest and
    `_SUCCESS`.

    Args:
      config: the run's options.
      files: the input files (`sources.input_files`).
      tokenizer_json: the fast tokenizer's serialization.
      instances: how documents become instances.
      header: the manifest's fields known before the run.
      run_id: the output claim's id.
    """
    read = pipeline | "ReadDocuments" >> ReadDocuments(files, ReadSettings(
        input_format=config.input_format, split_bytes=config.split_bytes, wiki_markup=config.wiki_markup,
        show_progress=not config.quiet, errors_dir=cli.errors_dir(config.output)))
    split = read.documents | "SplitSentences" >> beam.ParDo(SplitSentencesFn()).with_outputs(
        SplitSentencesFn.REJECTS, main="documents")
    reject_parts = [read.rejects, split.rejects]
    documents = split.documents
    if config.dedup:
        deduped = documents | "DropDuplicateDocuments" >> DropDuplicateDocuments()
        documents = deduped["documents"]
        reject_parts.append(deduped["rejects"])
    tokenized = documents | "TokenizeDocuments" >> TokenizeDocuments(tokenizer_json, instances.typecode)
    reject_parts.append(tokenized.rejects)
    # Summed once: the manifest's counts, and the document count that sets the number of buckets.
    document_counts = tokenized.counts | "SumDocumentCounts" >> outputs.CountByKey()
    made = tokenized.documents | "CreateInstances" >> CreateInstances(document_counts, instances)

    # Every epoch's shards through one sink: the row batches are keyed (epoch, shard) already.
    epoch_sets = [outputs.ShardSet(f"epoch-{epoch}", config.num_shards, instances.schema, stats=_instance_stats)
                  for epoch in range(config.epochs)]
    instance_stats = made.instances | "WriteInstances" >> outputs.WriteBatchedShards(
        config.output, epoch_sets, sort_by="instance_id")
    shard_stats = {shard_set.subdir: (shard_set, instance_stats) for shard_set in epoch_sets}
    rejects_set = outputs.ShardSet(layout.REJECTS_SUBDIR, config.num_shards, schemas.REJECT_SCHEMA)
    rejects = reject_parts | "FlattenRejects" >> beam.Flatten()
    shard_stats[rejects_set.subdir] = (rejects_set, rejects | "WriteRejects" >> outputs.WriteShards(
        config.output, rejects_set, key_fn=_reject_key))

    # Every manifest count in one CombinePerKey (a stage each): ((table, key), n) pairs.
    counts = ((document_counts, made.counts,
               rejects | "RejectReasons" >> beam.Map(lambda row: ((REJECTS_TABLE, row["reason"]), 1)))
              | "FlattenCounts" >> beam.Flatten()
              | "SumCounts" >> outputs.CountByKey())
    report_done = None
    if not config.no_report:  # report/, written before the manifest and _SUCCESS (which wait for it)
        histograms = corpus_histograms(max_seq_len=config.max_seq_len)
        report_stats = (
            (made.instances | "InstanceReportStats" >> beam.Map(instance_batch_stats,
                                                                length_hist=histograms[0]),
             tokenized.documents | "DocumentReportStats" >> beam.Map(
                 document_stats, itemsize=np.dtype(instances.typecode).itemsize,
                 tokens_hist=histograms[1]))
            | "FlattenReportStats" >> beam.Flatten()
            | "SumReportStats" >> report.SumReportStats())
        report_done = pipeline | "WriteReport" >> report.WriteReport(
            config.output, corpus_report, stats=report_stats, named_counts=counts,
            histograms=histograms, run_id=run_id,
            settings={"instance_mode": config.instance_mode, "max_seq_len": config.max_seq_len,
                      "epochs": config.epochs, "seed": config.seed})
    quality = outputs.QualityRule(accepted=(COUNTS_TABLE, "documents"), rejects=REJECTS_TABLE,
                                  max_reject_fraction=config.max_reject_fraction, ignore=SKIP_REASONS)
    _ = pipeline | "FinalizeOutput" >> outputs.FinalizeOutput(
        output_dir=config.output, header=header, shard_stats=shard_stats,
        named_counts=((COUNTS_TABLE, REJECTS_TABLE), counts), quality=quality,
        dataset_card={"data_glob": "epoch-*/*.parquet"}, run_id=run_id, manifest_fields=report_done)


def _instance_settings(config: CorpusConfig, tokenizer: tokenizer_lib.LoadedTokenizer) -> InstanceSettings:
    """How documents become instances, from the options and the tokenizer's vocab.

    Raises:
      UserError: a tokenizer without the special tokens an instance needs.
    """
    special = resources.special_tokens(tokenizer)
    return InstanceSettings(
        seed=config.seed, epochs=config.epochs, docs_per_bucket=config.docs_per_bucket, mode=config.instance_mode,
        config=config.instance_config(), special=special,
        continuation_ids=resources.continuation_ids(tokenizer) if config.whole_word_mask else frozenset(),
        typecode=token_typecode(special.vocab_size), num_shards=config.num_shards,
        schema=instance_schema(special.vocab_size), show_progress=not config.quiet)


def _manifest_header(config: CorpusConfig, *, files: List[Dict[str, Any]], tokenizer: tokenizer_lib.LoadedTokenizer,
                     vocab_size: int) -> Dict[str, Any]:
    """The manifest's fields known before the run: the tokenizer, the inputs and the settings."""
    return {
        "kind": KIND,
        "tokenizer": fingerprint.tokenizer_fingerprint(tokenizer, config.tokenizer),
        "input_format": config.input_format,
        "wiki_markup": config.wiki_markup if config.input_format == "wikipedia-xml" else None,
        "inputs": files,
        "max_seq_len": config.max_seq_len,
        "short_seq_prob": config.short_seq_prob,
        "masked_lm_prob": config.masked_lm_prob,
        "max_predictions_per_seq": config.max_predictions_per_seq,
        "whole_word_mask": config.whole_word_mask,
        "instance_mode": config.instance_mode,
        "seed": config.seed,
        "epochs": config.epochs,
        "docs_per_bucket": config.docs_per_bucket,
        "dedup": config.dedup,
        "token_dtype": token_dtype_name(vocab_size),
    }


def _summary(manifest: Dict[str, Any], config: CorpusConfig, *, seconds: float) -> str:
    corpus_counts = manifest["counts"].get(COUNTS_TABLE, {})
    extra = [f"documents {corpus_counts.get('documents', 0):,}, sentences {corpus_counts.get('sentences', 0):,}, "
             f"tokens {corpus_counts.get('tokens', 0):,} -> {corpus_counts.get('instances', 0):,} instances over "
             f"{config.epochs} epoch(s)"]
    return outputs.summary("corpus", manifest, config.shown_output, seconds, rows_output="", extra=extra)


def _instance_stats(rows) -> Dict[str, int]:
    if isinstance(rows, pa.Table):  # a shard from WriteBatchedShards
        return {"tokens": int(pc.sum(pc.list_value_length(rows["input_ids"])).as_py() or 0)}
    return {"tokens": sum(len(row["input_ids"]) for row in rows)}


def _reject_key(row: Dict[str, Any]) -> str:
    return f"{row['source']}\x00{row['row_index']:016d}\x00{row['reason']}"
