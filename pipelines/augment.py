"""TinyBERT data augmentation of a task's training set, as a Beam pipeline.

Usage:
  python -m pipelines.augment --runner=DirectRunner --task SST-2 --input glue/SST-2/train.tsv \
      --output out/sst2-aug --model bert-base-uncased --glove glove.6B.300d.txt

Steps: read and validate the examples (rejects to rejects/), split each text into words and plan its candidate
lookups, answer each distinct masked-LM sentence once in length-grouped batches, answer each distinct GloVe word
once (a side input), run Algorithm 1 per example with an RNG seeded from (seed, example id), then write Parquet
shards under data/, train_aug.tsv in the reference layout, optional candidates/, a manifest and _SUCCESS.
"""

if __name__ == "__main__":
    # Run as `python -m pipelines.augment`, this file would be `__main__`: cloudpickle copies a `__main__` module's
    # DoFns by value with every global they reach (a lock cannot travel), and Beam would see its options declared
    # twice. So the module body is not run as `__main__` at all: the imported `pipelines.augment` runs instead, and
    # its DoFns pickle by reference to the module that workers import from the installed package.
    import sys
    from pipelines import entry
    sys.exit(entry.augment())

import hashlib
import io
import json
import dataclasses
import logging
import os
import pathlib
import re
import tempfile
import time
import zipfile
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions
from apache_beam.utils import shared

from contract import fingerprint, layout, schemas, seeds
from augment.augmenter import augment_example, field_candidates, plan_fields
from augment.glove import GloveIndex
from augment.mlm import (MAX_POSITIONS, PRECISIONS, WINDOW_PIECES, MaskedLMScorer, describe_precisions,
                         window_queries)
from augment.tasks import (GLUE_HEADERS, GLUE_TASKS, HUB_LABEL_NAMES, HUB_TEXT_COLUMNS, Example, RejectedRecord,
                           TaskFormat, generic_task, parse_glue_row, parse_hub_row, parse_named_row, replace_cells,
                           resolve_task)
from augment.words import WORD_RULES, WordRule, WordSplitter, is_letter_word
from contract.layout import AUGMENTED_KIND
from contract.schemas import CANDIDATE_SCHEMA, augmented_schema
from pipelines import cli, outputs, progress, report, sources
from corpus import tokenizer as tokenizer_lib
from contract.errors import InputError, UserError
from pipelines.options import IOConfig, option_values
from pipelines.runners import resolve_runner

DEFAULT_GLOVE = "glove.6B.300d.txt"  # the default of --word_rule reference; unicode defaults to no GloVe
SAMPLE_INPUT = str(pathlib.Path(__file__).resolve().parent / "samples" / "sst2" / "train.tsv")
INPUT_FORMATS = ("auto", "tsv", "csv", "jsonl", "parquet")


# ----------------------------------------------------------------------------------------------------------- I/O
def open_glove_lines(spec: str) -> Iterable[str]:
    """Lines of a published GloVe file: `.txt`, `.txt.gz`, or a `.zip` member as `archive.zip:member.txt`.

    A `.zip` without a member name reads its only (or first `.txt`) member.
    """
    archive, _, member = spec.partition(".zip:")
    if spec.endswith(".zip") or member:
        archive = archive if spec.endswith(".zip") and not member else archive + ".zip"
        with FileSystems.open(archive, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            with zipfile.ZipFile(io.BytesIO(raw.read())) as bundle:
                names = [n for n in bundle.namelist() if n.endswith(".txt")] or bundle.namelist()
                with bundle.open(member or names[0]) as handle:
                    for line in io.TextIOWrapper(handle, encoding="utf-8"):
                        yield line
        return
    with FileSystems.open(spec, compression_type=CompressionTypes.AUTO) as handle:
        while True:  # Beam's decompressing file object has readline() but is not an io.IOBase
            line = handle.readline()
            if not line:
                return
            yield line.decode("utf-8")


def glove_exists(spec: str) -> bool:
    archive, _, member = spec.partition(".zip:")
    return FileSystems.exists(archive + ".zip" if member else spec)


def load_masked_lm(name_or_path: str):
    """The masked LM, loaded under the project's one transformers lock (`corpus.tokenizer.TRANSFORMERS_LOCK`)."""
    from transformers import AutoModelForMaskedLM
    with tokenizer_lib.TRANSFORMERS_LOCK:
        return AutoModelForMaskedLM.from_pretrained(name_or_path).eval()


def load_tokenizer(name_or_path: str):
    """The transformers fast tokenizer (the scorer needs its methods), under the same lock as the model."""
    return tokenizer_lib.load_transformers_tokenizer(name_or_path)


DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def choose_device(device: str, *, claim_dir: Optional[str] = None) -> Tuple[str, Any]:
    """The torch device of this worker process, and the claim that holds it (keep it as long as the model).

    `cpu` and `cuda:N` are taken as given. `auto` (a GPU when torch sees one, else the CPU) and `cuda` spread the
    worker processes of a machine over its GPUs: each process claims the first GPU index whose lock file
    (`<claim_dir>/<i>.lock`, default `/tmp/tinybert-gpu-<uid>/`, under `tempfile.gettempdir()`) it can `flock`, and holds the lock while its model
    is loaded; a process that finds every GPU claimed (more workers than GPUs) takes `cuda:<pid % count>`. The
    kernel drops a lock when its process ends, so a crashed worker frees its GPU. Threads of one process share the
    process's one model, hence its one device.
    """
    import torch
    if device == "cpu" or device.startswith("cuda:"):
        return device, None
    if not torch.cuda.is_available():
        return "cpu", None  # `--device cuda` without a GPU is refused earlier, in _check_options
    count = torch.cuda.device_count()
    user = os.getuid() if hasattr(os, "getuid") else os.getlogin()
    index, claim = _claim_gpu(count, claim_dir or os.path.join(tempfile.gettempdir(), f"tinybert-gpu-{user}"))
    return f"cuda:{index}", claim


def _claim_gpu(count: int, claim_dir: str) -> Tuple[int, Any]:
    try:
        import fcntl  # POSIX only; elsewhere the pid rule below
        os.makedirs(claim_dir, exist_ok=True)
        for index in range(count):
            handle = open(os.path.join(claim_dir, f"{index}.lock"), "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # another live process holds this GPU
                handle.close()
                continue
            return index, handle
    except (OSError, ImportError) as error:  # no writable temp dir, or no flock: fall back to the pid rule
        logging.warning("cannot claim a GPU under %s (%s); choosing by process id", claim_dir, error)
    return os.getpid() % count, None


def hub_label_names(task: TaskFormat, schema: pa.Schema) -> Optional[List[str]]:
    """The label names a hub Parquet file declares (its `huggingface` schema metadata), else the known GLUE ones."""
    try:
        info = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))
        names = info.get("info", {}).get("features", {}).get("label", {}).get("names")
    except (ValueError, AttributeError):
        names = None
    return list(names) if names else (list(HUB_LABEL_NAMES[task.name]) if HUB_LABEL_NAMES[task.name] else None)


# ------------------------------------------------------------------------------------------------------- DoFns
class _Holder:
    """`shared.Shared` keeps weak references: wrap objects (like tuples or dicts) that cannot have one."""

    def __init__(self, value):
        self.value = value


class ReadExamplesFn(beam.DoFn):
    """Reads one input file into Examples; every record that cannot be used goes to the rejects output.

    Files stream record by record (memory stays flat whatever the file size). A damaged file (a truncated gzip or
    bz2 stream, a CSV whose quoting never closes, a Parquet file that is not one) raises `InputError`: the run
    stops with one line naming the file, and no `_SUCCESS` is written.
    """
    REJECTS = "rejects"

    def __init__(self, task: TaskFormat, *, input_format: str, label_field: Optional[str],
                 id_field: Optional[str]):
        self._task = task
        self._format = input_format
        self._label_field = label_field
        self._id_field = id_field
        self._examples = Metrics.counter("ReadExamples", "examples")
        self._rejected = Metrics.counter("ReadExamples", "rejected")

    def process(self, element: Tuple[int, str, str]):
        file_index, path, name = element
        prefix = f"{name}:" if name else ""
        for row_index, example, failure in self._records(path):
            if failure is not None:
                self._rejected.inc()
                yield beam.pvalue.TaggedOutput(self.REJECTS, ((file_index, row_index), schemas.reject(
                    path, row_index, failure[0], failure[1])))
                continue
            if prefix:
                example = Example(prefix + example.example_id, example.row_index, example.texts, example.label,
                                  example.cells)
            self._examples.inc()
            yield (file_index, row_index), example

    def _records(self, path: str):
        """Yields (row index, Example or None, (reason, raw record) or None)."""
        if self._format == "parquet":
            yield from self._parquet_records(path)
            return
        with sources.open_input(path) as handle:
            if self._format == "csv":
                yield from self._csv_records(handle)
            else:
                yield from self._line_records(handle)

    def _parquet_records(self, path: str):
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                table = pq.ParquetFile(handle)
                hub = hub_label_names(self._task, table.schema_arrow) if self._task.text_columns else None
                row_index = 0
                for batch in table.iter_batches(batch_size=4096):
                    for record in batch.to_pylist():
                        if hub is not None:
                            yield self._hub(record, row_index, hub)
                        else:
                            yield self._named(record, row_index, record)
                        row_index += 1
        except (pa.ArrowInvalid, OSError) as error:
            raise InputError(f"{path}: not a readable Parquet file ({str(error).splitlines()[0]}); "
                             "check the file or --input_format") from None

    def _csv_records(self, handle):
        header = None
        row_index = 0
        for cells, raw in sources.iter_csv_records(handle):
            if header is None:
                header = cells or []
                continue
            if cells is None:
                yield row_index, None, ("undecodable_utf8", raw)
            elif len(cells) != len(header):
                yield row_index, None, ("wrong_column_count", raw)
            else:
                yield self._named(dict(zip(header, cells)), row_index, raw)
            row_index += 1

    def _line_records(self, handle):
        header: Optional[List[str]] = None
        expect_header = self._task.has_header and self._format != "jsonl"
        num_columns = self._task.num_columns
        row_index = 0
        for line_number, (_, raw) in enumerate(sources.iter_lines(handle)):
            if line_number == 0:
                raw = sources.strip_bom(raw)
                if expect_header:
                    header = raw.decode("utf-8", errors="replace").split("\t")
                    num_columns = num_columns or len(header)
                    continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield row_index, None, ("undecodable_utf8", raw)
                row_index += 1
                continue
            try:
                if self._format == "jsonl":
                    record = json.loads(line)
                    if not isinstance(record, dict):
                        raise RejectedRecord("bad_json", "not a JSON object")
                    yield self._named(record, row_index, line)
                else:
                    cells = line.split("\t")  # GLUE files are read without quoting, as the reference reads them
                    if self._task.text_columns is not None:
                        yield row_index, parse_glue_row(self._task, cells, row_index, num_columns), None
                    elif len(cells) != len(header):
                        raise RejectedRecord("wrong_column_count", f"{len(cells)} columns, expected {len(header)}")
                    else:
                        yield self._named(dict(zip(header, cells)), row_index, line)
            except json.JSONDecodeError:
                yield row_index, None, ("bad_json", line)
            except RejectedRecord as error:
                yield row_index, None, (error.reason, line)
            row_index += 1

    def _named(self, record: Dict[str, Any], row_index: int, raw: Any):
        try:
            return row_index, parse_named_row(self._task, record, row_index, label_field=self._label_field,
                                              id_field=self._id_field), None
        except RejectedRecord as error:
            return row_index, None, (error.reason, raw)

    def _hub(self, record: Dict[str, Any], row_index: int, label_names: Optional[List[str]]):
        try:
            return row_index, parse_hub_row(self._task, record, row_index, label_names), None
        except RejectedRecord as error:
            return row_index, None, (error.reason, record)


class PlanExamplesFn(beam.DoFn):
    """Splits every text field into words and emits the lookups its candidate words need."""
    MLM_REQUESTS = "mlm_requests"
    GLOVE_WORDS = "glove_words"

    def __init__(self, model_name: str, *, word_rule: str = "reference", stop_words: Optional[Tuple[str, ...]] = None,
                 glove: bool = True):
        self._model_name = model_name
        self._word_rule = word_rule
        self._stop_words = stop_words
        self._glove = glove

    def setup(self):
        self._tokenizer = load_tokenizer(self._model_name)
        self._splitter = WordSplitter(self._tokenizer.backend_tokenizer)
        # Words are compared after the model's normalizer (an uncased BERT strips accents): so are the stop words.
        stop_words = None if self._stop_words is None else [
            self._splitter.normalize(word).strip() for word in self._stop_words]
        self._rule = WordRule.create(self._word_rule, stop_words)

    def process(self, element):
        key, example = element
        plans = plan_fields(example.texts, splitter=self._splitter, tokenizer=self._tokenizer, word_rule=self._rule)
        for field_index, plan in enumerate(plans):
            if plan.mlm_words:
                sentence = np.asarray(plan.piece_ids, dtype=np.int32).tobytes()
                positions = tuple(position for _, position in plan.mlm_words)
                yield beam.pvalue.TaggedOutput(self.MLM_REQUESTS, (sentence, (key, field_index, positions)))
            if self._glove:
                for _, word in plan.glove_words:
                    yield beam.pvalue.TaggedOutput(self.GLOVE_WORDS, word)
        yield key, (example, plans)


class ScoreMaskedLMFn(beam.DoFn):
    """Answers the masked-LM queries of a group of distinct sentences in batches, one model per worker."""

    def __init__(self, model_name: str, *, top_k: int, precision: str, device: str, max_batch_tokens: int,
                 torch_threads: int = 0, show_progress: bool = False):
        self._model_name = model_name
        self._show_progress = show_progress
        self._torch_threads = torch_threads
        self._top_k = top_k
        self._precision = precision
        self._device = device
        self._max_batch_tokens = max_batch_tokens
        self._queries = Metrics.counter("ScoreMaskedLM", "distinct_queries")
        self._truncated = Metrics.counter("ScoreMaskedLM", "queries_beyond_512")
        self._shared = shared.Shared()  # one model per worker process, whatever the number of threads

    def setup(self):
        if self._torch_threads > 0:
            import torch
            torch.set_num_threads(self._torch_threads)

        def load():
            device, claim = choose_device(self._device)
            holder = _Holder(MaskedLMScorer(
                load_masked_lm(self._model_name), load_tokenizer(self._model_name), top_k=self._top_k,
                precision=self._precision, device=device,
                max_batch_tokens=self._max_batch_tokens))  # None: the device's default (65536 on a GPU)
            holder.device_claim = claim  # the GPU stays claimed while this process holds its model
            logging.info("masked LM on %s (%s, %d tokens per forward, pid %d)", device, self._precision,
                         holder.value.max_batch_tokens, os.getpid())
            return holder
        tag = f"mlm:{self._model_name}:{self._top_k}:{self._precision}:{self._device}:{self._max_batch_tokens}"
        self._holder = self._shared.acquire(load, tag=tag)  # keep a strong reference, or it may be reloaded
        self._scorer = self._holder.value

    def process(self, element, total_queries=None):
        _, sentences = element
        queries = {}
        beyond = 0
        for sentence, requests in sentences:
            # Only masks inside the 512-token window get queries, each holding only the pieces the input can hold:
            # a sentence of any length costs at most 511 bounded queries.
            piece_ids = np.frombuffer(sentence, dtype=np.int32)[:WINDOW_PIECES].tolist()
            positions = sorted({p for _, _, field_positions in requests for p in field_positions})
            queries[sentence] = window_queries(piece_ids, positions)
            beyond += len(positions) - len(queries[sentence])
        answers = self._scorer.candidates(q for qs in queries.values() for q in qs)
        distinct = len(answers) + beyond  # counted as before: a query past the window is distinct, answered []
        self._queries.inc(distinct)
        self._truncated.inc(beyond)
        if self._show_progress:
            progress.advance("masked-LM queries", distinct, total=total_queries)
        yield beam.pvalue.TaggedOutput("stats", ("mlm_distinct_queries", distinct))
        if beyond:
            yield beam.pvalue.TaggedOutput("stats", ("mlm_queries_beyond_512_tokens", beyond))
        for sentence, requests in sentences:
            by_position = {q.position: answers[q] for q in queries[sentence]}
            for key, field_index, positions in requests:
                # A position past the window has no answer: its word keeps itself (field_candidates).
                yield key, (field_index, {p: by_position[p] for p in positions if p in by_position})


class GloveNeighboursFn(beam.DoFn):
    """Nearest GloVe words of every distinct word, with one matrix product per batch of words."""

    def __init__(self, glove: str, *, vocab_limit: int, top_k: int):
        self._glove = glove
        self._vocab_limit = vocab_limit
        self._top_k = top_k
        self._shared = shared.Shared()

    def setup(self):
        def load():
            return _Holder(GloveIndex.from_lines(open_glove_lines(self._glove), vocab_limit=self._vocab_limit))
        self._holder = self._shared.acquire(load, tag=f"glove:{self._glove}:{self._vocab_limit}")
        self._index = self._holder.value

    def process(self, element):
        _, words = element
        neighbours = self._index.neighbours(words, self._top_k)
        missing = sum(1 for found in neighbours.values() if not found)
        yield beam.pvalue.TaggedOutput("stats", ("glove_distinct_words", len(neighbours)))
        yield beam.pvalue.TaggedOutput("stats", ("glove_words_not_in_vocab", missing))
        yield from neighbours.items()


class AugmentExamplesFn(beam.DoFn):
    """Algorithm 1 for one example, from its plan, its masked-LM answers and the GloVe side input."""
    TSV = "tsv"
    CANDIDATES = "candidates"
    STATS = "stats"
    REPORT = "report"  # one small stats dict per example (pipelines/report.py)
    REPLACED_WORDS = "replaced_words"  # (original word, times replaced) per example

    def __init__(self, task: TaskFormat, *, num_aug: int, replace_prob: float, seed: int, emit_candidates: bool,
                 glove: bool = True, word_rule: str = "reference", show_progress: bool = False,
                 report_histograms: Optional[Tuple[report.Histogram, report.Histogram]] = None):
        self._task = task
        self._report_histograms = report_histograms
        self._show_progress = show_progress
        self._glove = glove
        self._word_filter = is_letter_word if word_rule == "unicode" else None
        self._num_aug = num_aug
        self._replace_prob = replace_prob
        self._seed = seed
        self._emit_candidates = emit_candidates
        self._rows = Metrics.counter("AugmentExamples", "rows")

    def process(self, element, glove, total_examples=None):
        key, grouped = element
        (example, plans), = grouped["example"]
        mlm = [dict() for _ in plans]
        for field_index, answers in grouped["mlm"]:
            mlm[field_index].update(answers)
        candidates = [field_candidates(plan, mlm[i], glove, word_filter=self._word_filter)
                      for i, plan in enumerate(plans)]
        rows = augment_example(example, plans, candidates, num_aug=self._num_aug, replace_prob=self._replace_prob,
                               seed=self._seed)
        fields = self._task.text_fields
        for row in rows:
            row_key = key + (row.aug_index,)
            record = {"example_id": example.example_id, "row_index": example.row_index, "aug_index": row.aug_index,
                      "augmented_field": None if row.augmented_field is None else fields[row.augmented_field],
                      "label": example.label, "replaced_word_indices": list(row.replaced_word_indices)}
            record.update(zip(fields, row.texts))
            yield row_key, record
            yield beam.pvalue.TaggedOutput(self.TSV, (row_key, self._tsv_line(example, row.texts)))
        self._rows.inc(len(rows))
        if self._show_progress:
            progress.advance("examples augmented", 1, total=total_examples)
        yield beam.pvalue.TaggedOutput(self.STATS, ("examples", 1))
        yield beam.pvalue.TaggedOutput(self.STATS, ("rows", len(rows)))
        if self._report_histograms is not None:
            rows_hist, length_hist = self._report_histograms
            stats, replaced = report.example_stats(plans, mlm, glove, rows, word_filter=self._word_filter,
                                                   rows_hist=rows_hist, length_hist=length_hist)
            yield beam.pvalue.TaggedOutput(self.REPORT, stats)
            for word, times in sorted(replaced.items()):
                yield beam.pvalue.TaggedOutput(self.REPLACED_WORDS, (word, times))
        if not self._glove:
            kept = sum(len(plan.glove_words) for plan in plans)
            if kept:
                yield beam.pvalue.TaggedOutput(self.STATS, ("words_without_glove", kept))
        if self._emit_candidates:
            for field_index, plan in enumerate(plans):
                mlm_words = {w for w, _ in plan.mlm_words}
                for word_index, word in enumerate(plan.words):
                    found = candidates[field_index].get(word_index)
                    source = "none" if found is None else ("mlm" if word_index in mlm_words else "glove")
                    yield beam.pvalue.TaggedOutput(self.CANDIDATES, (key + (field_index, word_index), {
                        "example_id": example.example_id, "field": fields[field_index], "word_index": word_index,
                        "word": word, "source": source, "candidates": list(found or [])}))

    def _tsv_line(self, example: Example, texts) -> str:
        if example.cells is not None:
            cells = replace_cells(self._task, list(example.cells), texts)
        else:
            cells = list(texts) + ([example.label] if example.label is not None else [])
        return "\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in cells)


class WriteTrainAugTsvFn(beam.DoFn):
    """Joins the TSV shards, in shard order, into one train_aug.tsv (header first) and removes the parts."""

    def __init__(self, output_dir: str, header: Optional[str], shard_set: outputs.ShardSet):
        self._output_dir = output_dir
        self._header = header
        self._shard_set = shard_set

    def process(self, unused, stats):
        del stats  # only waited for: every part is written
        parts = [outputs.join_path(self._output_dir, self._shard_set.subdir, self._shard_set.file_name(i))
                 for i in range(self._shard_set.num_shards)]
        parts = [p for p in parts if FileSystems.exists(p)]
        target = outputs.join_path(self._output_dir, "train_aug.tsv")
        if not parts and FileSystems.exists(target):  # a retry after the parts were joined and removed
            with FileSystems.open(target, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
            yield "train_aug_tsv_rows", lines - (self._header is not None)
            return
        tmp = outputs.join_path(self._output_dir, ".tmp-train_aug.tsv")
        lines = 0
        with FileSystems.create(tmp) as out:
            if self._header is not None:
                out.write((self._header + "\n").encode("utf-8"))
            for part in parts:
                with FileSystems.open(part, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                    while True:
                        chunk = handle.read(1 << 20)
                        if not chunk:
                            break
                        lines += chunk.count(b"\n")
                        out.write(chunk)
        if FileSystems.exists(target):
            FileSystems.delete([target])
        FileSystems.rename([tmp], [target])
        # The parts directory goes too, with any temporary file a killed writer left in it.
        parts_dir = outputs.join_path(self._output_dir, self._shard_set.subdir)
        if FileSystems.exists(parts_dir):
            FileSystems.delete([parts_dir])
        yield "train_aug_tsv_rows", lines


# -------------------------------------------------------------------------------------------------- Composites
class ReadExamples(beam.PTransform):
    """Input files -> ((file index, row index), Example), with rejects as a tagged output.

    Args:
      files: the input paths, in order.
      task: where the task's fields are.
      input_format: tsv, csv, jsonl or parquet.
      label_field, id_field: a generic task's label and id columns (None for GLUE tasks).
    """

    def __init__(self, files: List[str], *, task: TaskFormat, input_format: str, label_field: Optional[str],
                 id_field: Optional[str]):
        super().__init__()
        self._files = files
        self._read_fn = ReadExamplesFn(task, input_format=input_format, label_field=label_field, id_field=id_field)

    def expand(self, pbegin):
        # Several files: example ids are prefixed with the file's path relative to the folder they share (unique
        # even where two folders hold files of one name).
        names = sources.relative_names(self._files) if len(self._files) > 1 else {f: "" for f in self._files}
        return (pbegin
                | "ListFiles" >> beam.Create([(i, f, names[f]) for i, f in enumerate(self._files)])
                | "ReadFile" >> beam.ParDo(self._read_fn).with_outputs(ReadExamplesFn.REJECTS, main="examples"))


class FindMaskedLMCandidates(beam.PTransform):
    """(sentence, request) pairs -> (example key, (field, {position: candidates})), each distinct sentence once.

    Distinct sentences are grouped by input length and a hash partition, and batched inside the group in sorted
    order, so which queries share a forward pass depends only on the data, never on the runner's bundles.
    """

    def __init__(self, model_name: str, *, partitions: int, top_k: int, precision: str, device: str,
                 max_batch_tokens: Optional[int], torch_threads: int = 0, show_progress: bool = False):
        super().__init__()
        self._score_fn = ScoreMaskedLMFn(model_name, top_k=top_k, precision=precision, device=device,
                                         max_batch_tokens=max_batch_tokens, torch_threads=torch_threads,
                                         show_progress=show_progress)
        self._partitions = partitions

    def expand(self, requests):
        partitions = self._partitions

        def batch_key(item):
            sentence, _ = item
            length = min(2 * (len(sentence) // 4) + 3, MAX_POSITIONS)
            return (length, seeds.stable_hash(sentence) % partitions), item

        keyed = (requests
                 | "GroupBySentence" >> beam.GroupByKey()
                 | "KeyByLength" >> beam.Map(lambda kv: batch_key((kv[0], list(kv[1])))))
        # The number of distinct queries, known once planning is done: the total of the progress lines.
        total = (keyed
                 | "QueriesPerSentence" >> beam.Map(
                     lambda kv: len({p for _, _, positions in kv[1][1] for p in positions}))
                 | "CountQueries" >> beam.CombineGlobally(sum))
        return (keyed
                | "GroupByLength" >> beam.GroupByKey()
                | "Score" >> beam.ParDo(self._score_fn, total_queries=beam.pvalue.AsSingleton(total)).with_outputs(
                    "stats", main="answers"))


class FindGloveNeighbours(beam.PTransform):
    """Words -> (word, neighbours), each distinct word once, all in one batched computation."""

    def __init__(self, glove: str, *, vocab_limit: int, top_k: int):
        super().__init__()
        self._neighbours_fn = GloveNeighboursFn(glove, vocab_limit=vocab_limit, top_k=top_k)

    def expand(self, words):
        return (words
                | "DistinctWords" >> beam.Distinct()
                | "KeyAll" >> beam.Map(lambda word: (0, word))
                | "GatherWords" >> beam.GroupByKey()
                | "Neighbours" >> beam.ParDo(self._neighbours_fn).with_outputs("stats", main="neighbours"))


# ---------------------------------------------------------------------------------------------------- Options
class AugmentOptions(PipelineOptions):
    """Augmentation options; --input, --output, --input_format, --seed, --num_shards, --overwrite are IOOptions."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--task", default="SST-2", help="GLUE task (CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, "
                            "RTE) or 'generic' with --text_columns")
        parser.add_argument("--text_columns", default=None, help="generic: comma-separated text columns")
        parser.add_argument("--label_column", default=None, help="generic: label column")
        parser.add_argument("--id_column", default=None, help="generic: id column (default: the data row index)")
        parser.add_argument("--label_list", default=None, help="generic: comma-separated allowed labels")
        parser.add_argument("--model", default="bert-base-uncased",
                            help="BERT masked LM: hub name or local directory (with its tokenizer)")
        parser.add_argument("--glove", default=None,
                            help="GloVe text file (.txt, .txt.gz, .zip or archive.zip:member.txt), or 'none': words of "
                            f"several WordPieces then keep themselves; default {DEFAULT_GLOVE} for --word_rule "
                            "reference, none for --word_rule unicode")
        parser.add_argument("--word_rule", default="reference", choices=WORD_RULES,
                            help="candidate words: 'reference' (a-z letters, English stop words, words joined by "
                            "spaces, as the reference) or 'unicode' (letters of any script, CJK characters one word "
                            "each, the source's spacing kept)")
        parser.add_argument("--stop_words", default=None,
                            help="UTF-8 file, one stop word per line, replacing the rule's list (reference: the "
                            "reference's English list; unicode: none)")
        parser.add_argument("--glove_vocab", type=int, default=100_000, help="use the first N GloVe words")
        parser.add_argument("--num_aug", type=int, default=None,
                            help="draws per sentence (N); default per task: " + ", ".join(
                                f"{name} {task.default_num_aug}" for name, task in GLUE_TASKS.items()) + ", generic 20")
        parser.add_argument("--top_k", type=int, default=15, help="candidates per word (M)")
        parser.add_argument("--replace_prob", type=float, default=0.4, help="replacement probability (p)")
        parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                            help="masked-LM encoder precision: fp32 gives the reference's candidates; bf16 for GPUs "
                            "and CPUs with native bf16; int8 (dynamic quantization) for other CPUs")
        parser.add_argument("--device", default="auto",
                            help="auto (a GPU if torch sees one, else the CPU), cpu, cuda (each worker process "
                            "claims its own GPU) or cuda:N (pin GPU N)")
        parser.add_argument("--emit_candidates", action="store_true",
                            help="also write every word's candidates under OUTPUT/candidates/")
        parser.add_argument("--max_batch_tokens", type=int, default=None,
                            help="tokens per masked-LM forward (default 8192 on a CPU, 65536 on a GPU)")
        parser.add_argument("--torch_threads", type=int, default=0,
                            help="intra-op threads per worker process (0 = torch's default: all cores); set "
                            "cores / workers when running several worker processes on one machine")
        parser.add_argument("--mlm_partitions", type=int, default=4,
                            help="hash partitions per input length for masked-LM batching (parallelism at scale)")


@dataclasses.dataclass(frozen=True)
class AugmentConfig(IOConfig):
    """The augmentation's options, read once in run(): IOOptions and AugmentOptions with their defaults filled and
    local paths (output, model, glove, stop_words) made absolute, for workers in other folders or on other
    machines. Never mutated; `shown_output` keeps --output as given, for the summary."""
    # AugmentOptions
    task: str
    text_columns: Optional[str]
    label_column: Optional[str]
    id_column: Optional[str]
    label_list: Optional[str]
    model: str
    glove: Optional[str]
    word_rule: str
    stop_words: Optional[str]
    glove_vocab: int
    num_aug: Optional[int]
    top_k: int
    replace_prob: float
    precision: str
    device: str
    emit_candidates: bool
    max_batch_tokens: Optional[int]
    torch_threads: int
    mlm_partitions: int
    shown_output: str

    @classmethod
    def from_options(cls, options: PipelineOptions) -> "AugmentConfig":
        """The config of parsed `options` (IOOptions and AugmentOptions among them)."""
        values = option_values(options, AugmentOptions, input=SAMPLE_INPUT, output="out/augment",
                               input_format="auto", num_shards=4)
        values["shown_output"] = values["output"]
        for name in ("output", "model", "glove", "stop_words"):
            values[name] = sources.absolute(values[name], may_be_hub_name=name == "model")
        return cls(**values)




class ResolvedInput(NamedTuple):
    """What run() settled about the input once: the matched files, the task format and where its fields are."""
    files: List[Dict[str, Any]]
    task: TaskFormat
    input_format: str
    label_field: Optional[str]
    id_field: Optional[str]


def _resolve_input(config: AugmentConfig) -> ResolvedInput:
    """The input files (matched once) and the task they hold.

    Raises:
      UserError: nothing matches --input, an unknown task, a generic task without --text_columns, a format that
        cannot be told, an empty input file.
    """
    files = sources.input_files(config.input)
    task, fmt, label_field, id_field = _resolve_task(config, files[0]["path"])
    if all(f["bytes"] == 0 for f in files):
        raise UserError(f"--input {config.input} is empty ({len(files)} file(s) of 0 bytes)")
    return ResolvedInput(files, task, fmt, label_field, id_field)


def _format_of(path: str) -> Optional[str]:
    name = path.lower()
    for suffix in (".gz", ".bz2"):
        name = name[:-len(suffix)] if name.endswith(suffix) else name
    ext = name.rsplit(".", 1)[-1]
    if sources.sniff(path, 4).startswith(b"PAR1"):
        return "parquet"
    return {"tsv": "tsv", "csv": "csv", "jsonl": "jsonl", "json": "jsonl", "parquet": "parquet"}.get(ext)


def _resolve_task(config: AugmentConfig, first_path: str) -> Tuple[TaskFormat, str, Optional[str], Optional[str]]:
    """(task format, input format, label field, id field), or UserError."""
    if config.task.lower() == "generic":
        if not config.text_columns:
            raise UserError("--task generic needs --text_columns (and usually --label_column)")
        fmt = config.input_format if config.input_format != "auto" else _format_of(first_path)
        if fmt is None:
            raise UserError(f"cannot tell the format of {first_path}; pass --input_format tsv|csv|jsonl|parquet")
        labels = [label.strip() for label in config.label_list.split(",")] if config.label_list else None
        task = generic_task([c.strip() for c in config.text_columns.split(",")], config.label_column, labels)
        return task, fmt, config.label_column, config.id_column
    try:
        task = resolve_task(config.task)
    except KeyError as error:
        raise UserError(error.args[0]) from None
    fmt = config.input_format if config.input_format != "auto" else (_format_of(first_path) or "tsv")
    if fmt not in ("tsv", "parquet"):
        raise UserError(f"GLUE task {task.name} reads its train.tsv or the hub's Parquet (columns "
                        f"{', '.join(HUB_TEXT_COLUMNS[task.name])}, label, idx); --input_format must be tsv or "
                        "parquet, or use --task generic")
    return task, fmt, None, None


def _read_header(path: str, task: TaskFormat, fmt: str) -> Optional[str]:
    """The header line train_aug.tsv starts with (the input's own, as the reference copies it), or None."""
    if fmt == "parquet" and task.text_columns is not None:  # hub Parquet of a GLUE task: the GLUE layout
        header = GLUE_HEADERS[task.name]
        return "\t".join(header) if header else None
    if not task.has_header or fmt in ("jsonl", "parquet"):
        return None
    if task.text_columns is None:
        return "\t".join(list(task.text_fields) + ["label"])
    with sources.open_input(path) as handle:
        for _, first in sources.iter_lines(handle):
            return sources.strip_bom(first).decode("utf-8", errors="replace")
    return None


def _check_options(config: AugmentConfig) -> None:
    """One line for the first option value that cannot work."""
    if config.input_format not in INPUT_FORMATS:
        raise UserError(f"--input_format must be one of {', '.join(INPUT_FORMATS)}")
    if config.top_k < 1:
        raise UserError(f"--top_k must be at least 1 (got {config.top_k})")
    if not 0.0 <= config.replace_prob <= 1.0:
        raise UserError(f"--replace_prob must be within [0, 1] (got {config.replace_prob})")
    if config.num_aug is not None and config.num_aug < 0:
        raise UserError(f"--num_aug must be >= 0 (got {config.num_aug})")
    for name in ("num_shards", "mlm_partitions", "glove_vocab", "max_batch_tokens"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise UserError(f"--{name} must be >= 1 (got {getattr(config, name)})")
    if config.max_batch_tokens is not None and config.max_batch_tokens < MAX_POSITIONS:
        raise UserError(f"--max_batch_tokens must hold one full-length query ({MAX_POSITIONS} tokens); got "
                        f"{config.max_batch_tokens}")
    if config.torch_threads < 0:
        raise UserError(f"--torch_threads must be >= 0 (got {config.torch_threads})")
    if not 0.0 <= config.max_reject_fraction <= 1.0:
        raise UserError(f"--max_reject_fraction must be within [0, 1] (got {config.max_reject_fraction})")
    if not DEVICE_PATTERN.fullmatch(config.device):
        raise UserError(f"--device must be auto, cpu, cuda or cuda:N (got {config.device!r})")
    if config.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise UserError(f"--device {config.device}: no CUDA GPU is visible to torch here; use --device cpu "
                            "or auto")
        index = config.device.partition(":")[2]
        if index and int(index) >= torch.cuda.device_count():
            raise UserError(f"--device {config.device}: torch sees {torch.cuda.device_count()} GPU(s) here "
                            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")


def _log_precisions(config: AugmentConfig) -> None:
    """One line at start: the precision paths this machine runs natively, and the one chosen."""
    import torch
    paths = describe_precisions()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    logging.info("augment: precision %s on device %s (%d GPU(s) visible); this CPU: %s", config.precision,
                 config.device, gpus, ", ".join(f"{name} {how}" for name, how in paths.items()))
    if config.precision == "bf16" and paths["bf16"] == "emulated" and not gpus:
        logging.warning("augment: this CPU has no bf16 instructions (avx512_bf16/amx_bf16): --precision bf16 will "
                        "be slower than fp32 here; --precision int8 is the fast path on such a CPU")


def _check_resources(config: AugmentConfig) -> None:
    """One line for a GloVe file, stop-word file or model directory that is missing or unusable."""
    glove = resolve_glove(config)
    if glove is not None and not glove_exists(glove):
        raise UserError(f"GloVe file {glove} not found; pass --glove PATH to a GloVe text file "
                        "(e.g. glove.6B.300d.txt from the Stanford GloVe site), or --glove none")
    if config.stop_words is not None:
        read_stop_words(config.stop_words)
    if os.path.isdir(config.model):
        names = set(os.listdir(config.model))
        if "config.json" not in names:
            raise UserError(f"--model {config.model} has no config.json; pass a directory written by "
                            "save_pretrained (or a hub name)")
        if not names & {"model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                        "pytorch_model.bin.index.json"}:
            raise UserError(f"--model {config.model} holds no weights (model.safetensors or pytorch_model.bin); "
                            "save the model with save_pretrained into it")


def resolve_glove(config: AugmentConfig) -> Optional[str]:
    """The GloVe file to use, or None when GloVe is off (--glove none, or omitted with --word_rule unicode)."""
    if config.glove is None:
        return DEFAULT_GLOVE if config.word_rule == "reference" else None
    return None if config.glove.strip().lower() in ("", "none") else config.glove


def read_stop_words(path: str) -> Tuple[Tuple[str, ...], str]:
    """(the stop words of a UTF-8 file, one per line, blank lines skipped; the SHA-256 of the file).

    Raises:
      UserError: the file is missing or not UTF-8.
    """
    if not FileSystems.exists(path):
        raise UserError(f"--stop_words file {path} not found")
    with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
        data = handle.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(f"--stop_words file {path} is not UTF-8 ({error.reason} at byte {error.start})") from None
    words = tuple(line.strip() for line in text.splitlines() if line.strip())
    return words, hashlib.sha256(data).hexdigest()


def build_pipeline(pipeline: beam.Pipeline, config: AugmentConfig, tokenizer, resolved: ResolvedInput, *,
                   run_id: Optional[str] = None) -> None:
    """Adds the augmentation graph for `config` (and the input `resolved` from them) to `pipeline`."""
    files, task, fmt, label_field, id_field = resolved
    num_aug = config.num_aug if config.num_aug is not None else task.default_num_aug
    output = config.output
    header_line = _read_header(files[0]["path"], task, fmt)
    show_progress = not config.quiet
    glove_file = resolve_glove(config)
    stop_words, stop_words_sha256 = (read_stop_words(config.stop_words) if config.stop_words is not None
                                     else (None, None))
    if glove_file is None:
        logging.info("GloVe is off: candidate words of several WordPieces keep themselves (counted as "
                     "words_without_glove); pass --glove PATH to give them GloVe neighbours")

    read = pipeline | "ReadExamples" >> ReadExamples(
        [f["path"] for f in files], task=task, input_format=fmt, label_field=label_field, id_field=id_field)
    # Reading is one task per file: spread the examples over the workers.
    examples = read.examples | "SpreadExamples" >> beam.Reshuffle()
    planned = examples | "PlanExamples" >> beam.ParDo(PlanExamplesFn(
        config.model, word_rule=config.word_rule, stop_words=stop_words, glove=glove_file is not None)).with_outputs(
        PlanExamplesFn.MLM_REQUESTS, PlanExamplesFn.GLOVE_WORDS, main="plans")
    mlm = planned[PlanExamplesFn.MLM_REQUESTS] | "FindMaskedLMCandidates" >> FindMaskedLMCandidates(
        config.model, partitions=config.mlm_partitions, top_k=config.top_k, precision=config.precision,
        device=config.device, max_batch_tokens=config.max_batch_tokens, torch_threads=config.torch_threads,
        show_progress=show_progress)
    if glove_file is not None:
        glove = planned[PlanExamplesFn.GLOVE_WORDS] | "FindGloveNeighbours" >> FindGloveNeighbours(
            glove_file, vocab_limit=config.glove_vocab, top_k=config.top_k)
        glove_neighbours, glove_stats = glove.neighbours, (glove.stats,)
    else:  # no GloVe: an empty side input, so every multi-piece word keeps itself
        glove_neighbours, glove_stats = pipeline | "NoGloveNeighbours" >> beam.Create([]), ()
    total_examples = read.examples | "CountExamples" >> beam.combiners.Count.Globally()
    report_histograms = None if config.no_report else report.augment_histograms(
        num_aug=num_aug, num_fields=len(task.text_fields), top_k=config.top_k)
    augmented = ({"example": planned.plans, "mlm": mlm.answers}
                 | "JoinAnswers" >> beam.CoGroupByKey()
                 | "AugmentExamples" >> beam.ParDo(
                     AugmentExamplesFn(task, num_aug=num_aug, replace_prob=config.replace_prob, seed=config.seed,
                                       emit_candidates=config.emit_candidates, glove=glove_file is not None,
                                       word_rule=config.word_rule, show_progress=show_progress,
                                       report_histograms=report_histograms),
                     glove=beam.pvalue.AsDict(glove_neighbours),
                     total_examples=beam.pvalue.AsSingleton(total_examples)).with_outputs(
                         AugmentExamplesFn.TSV, AugmentExamplesFn.CANDIDATES, AugmentExamplesFn.STATS,
                         AugmentExamplesFn.REPORT, AugmentExamplesFn.REPLACED_WORDS, main="rows"))

    data_set = outputs.ShardSet("data", config.num_shards, augmented_schema(task.text_fields))
    tsv_set = outputs.ShardSet("tsv-parts", config.num_shards, None, file_format="tsv")
    rejects_set = outputs.ShardSet(layout.REJECTS_SUBDIR, 1, schemas.REJECT_SCHEMA)
    # Augmentation multiplies each example ~N times: rebalance before the shard writers.
    data_stats = (augmented.rows | "SpreadRows" >> beam.Reshuffle()
                  | "WriteData" >> outputs.WriteShards(output, data_set))
    tsv_stats = augmented[AugmentExamplesFn.TSV] | "WriteTsvParts" >> outputs.WriteShards(output, tsv_set)
    tsv_done = (pipeline | "TsvTrigger" >> beam.Create([None])
                | "WriteTrainAugTsv" >> beam.ParDo(WriteTrainAugTsvFn(output, header_line, tsv_set),
                                                   beam.pvalue.AsList(tsv_stats)))
    reject_stats = read[ReadExamplesFn.REJECTS] | "WriteRejects" >> outputs.WriteShards(output, rejects_set)
    reasons = (read[ReadExamplesFn.REJECTS] | "RejectReasons" >> beam.Map(lambda kv: (kv[1]["reason"], 1))
               | "CountRejects" >> outputs.CountByKey())
    stats = ((augmented[AugmentExamplesFn.STATS], mlm.stats, *glove_stats, tsv_done) | "MergeStats" >> beam.Flatten()
             | "CountStats" >> outputs.CountByKey())
    shard_stats = {"data": (data_set, data_stats), "rejects": (rejects_set, reject_stats)}
    if config.emit_candidates:
        cand_set = outputs.ShardSet("candidates", config.num_shards, CANDIDATE_SCHEMA)
        shard_stats["candidates"] = (cand_set, augmented[AugmentExamplesFn.CANDIDATES]
                                     | "WriteCandidates" >> outputs.WriteShards(output, cand_set))
    header = {
        "kind": AUGMENTED_KIND, "task": task.name, "text_fields": list(task.text_fields), "label_field": "label",
        "input_label_column": label_field,  # where the input (and a dev file in its layout) holds the label
        "label_list": list(task.label_list) if task.label_list else None, "regression": task.regression,
        "tokenizer": fingerprint.tokenizer_fingerprint(tokenizer, config.model), "model": config.model,
        "glove": glove_file, "glove_vocab": config.glove_vocab, "num_aug": num_aug, "top_k": config.top_k,
        "word_rule": config.word_rule, "stop_words": None if config.stop_words is None else {
            "path": config.stop_words, "sha256": stop_words_sha256},
        "replace_prob": config.replace_prob, "seed": config.seed, "precision": config.precision,
        "input_format": fmt, "inputs": files, "tsv_header": header_line,
        "pair_fields": "other fields of an augmented row keep their original text",
    }
    quality = outputs.QualityRule(accepted=("stats", "examples"), rejects="rejects",
                                  max_reject_fraction=config.max_reject_fraction)
    report_done = None
    if report_histograms is not None:  # report/, written before the manifest and _SUCCESS (which wait for it)
        named_counts = ((reasons | "ReportRejectCounts" >> beam.Map(lambda kv: (("rejects", kv[0]), kv[1])),
                         stats | "ReportStatsCounts" >> beam.Map(lambda kv: (("stats", kv[0]), kv[1])))
                        | "ReportCounts" >> beam.Flatten())
        report_done = pipeline | "WriteReport" >> report.WriteReport(
            output, AUGMENTED_KIND,
            stats=augmented[AugmentExamplesFn.REPORT] | "SumReportStats" >> report.SumReportStats(),
            top_words=augmented[AugmentExamplesFn.REPLACED_WORDS] | "FindTopWords" >> report.FindTopWords(),
            named_counts=named_counts, histograms=report_histograms, run_id=run_id,
            settings={"task": task.name, "num_aug": num_aug, "replace_prob": config.replace_prob,
                      "top_k": config.top_k, "seed": config.seed})
    _ = pipeline | "Finalize" >> outputs.FinalizeOutput(
        output_dir=output, header=header, shard_stats=shard_stats, counts={"rejects": reasons, "stats": stats},
        quality=quality, dataset_card={"data_glob": "data/*.parquet", "text_fields": list(task.text_fields),
                                       "label_names": list(task.label_list) if task.label_list else None},
        run_id=run_id, manifest_fields=report_done)


def diagnose(resolved: ResolvedInput, reasons: Dict[str, int], config: AugmentConfig) -> str:
    """The likely cause of a run whose records were (nearly) all rejected, as a short clause, or ""."""
    path = resolved.files[0]["path"]
    task, fmt = resolved.task, resolved.input_format
    head = sources.sniff(path)
    if head.startswith(b"PAR1") and fmt != "parquet":
        return f"{os.path.basename(path)} looks like Parquet: pass --input_format parquet"
    if head[:1] in (b"{", b"[") and fmt in ("tsv", "csv"):
        return f"{os.path.basename(path)} looks like JSON lines: pass --input_format jsonl"
    first = sources.strip_bom(head.splitlines()[0] if head.splitlines() else b"").decode("utf-8", "replace")
    top = max(reasons, key=reasons.get) if reasons else ""
    if task.text_columns is not None and fmt == "tsv":
        columns = first.split("\t")
        expected = GLUE_HEADERS.get(task.name)
        if expected and len(columns) != len(expected) or top == "wrong_column_count":
            expected_layout = "<TAB>".join(expected) if expected else f"{task.num_columns} tab-separated columns"
            return (f"the header has {len(columns)} column{'s' * (len(columns) != 1)}; {task.name} expects "
                    f"{expected_layout}" + (" (a CSV? use --task generic --input_format csv)" if "," in first else ""))
    if top == "missing_column":
        found = (first.split("\t") if fmt == "tsv" else first.split(",")) if fmt in ("tsv", "csv") else []
        wanted = list(task.text_fields) + ([config.label_column] if config.label_column else [])
        return (f"the input's columns are {found[:12]}; --text_columns/--label_column name {wanted}"
                if found else f"--text_columns/--label_column name {wanted}; check them against the input's fields")
    if top == "bad_label" and task.label_list:
        return f"labels must be one of {list(task.label_list)} (--label_list)"
    if top == "undecodable_utf8":
        return "the input is not UTF-8 text; convert it (e.g. iconv -t utf-8)"
    return ""


def run(argv=None, save_main_session=False):
    """Parses options, checks what a person can fix, runs the pipeline, and prints a summary.

    `save_main_session` stays False: every DoFn lives in an importable module of the installed package, so
    workers import it; pickling `__main__` would copy module state (locks, loaded models) that cannot travel.

    Returns:
      The manifest of the finished output directory.

    Raises:
      UserError: a bad option, input or output (one line); a run whose records were (nearly) all rejected.
    """
    started = time.time()
    options = cli.options_or_help(list(argv or []), prog="python -m pipelines.augment", doc=__doc__,
                                  pipeline_options=AugmentOptions)
    if options is None:
        return None
    options.view_as(SetupOptions).save_main_session = save_main_session
    # Workers on other machines or in other folders (a Dask worker's cwd) read local paths as absolute ones.
    config = AugmentConfig.from_options(options)
    _check_options(config)
    resolved = _resolve_input(config)
    _check_resources(config)
    try:
        tokenizer = load_tokenizer(config.model)
    except Exception as error:  # the hub's and the loader's errors differ; the fix is the same
        raise UserError(f"cannot load the tokenizer of --model {config.model} ({type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else ''}); pass a hub name or a local "
                        "directory holding a BERT masked LM and its tokenizer") from None
    try:
        run_id = outputs.claim_output_dir(config.output, overwrite=config.overwrite)
    except outputs.OutputExistsError as error:
        raise UserError(str(error)) from None
    progress.reset()
    _log_precisions(config)
    logging.info("augment: %s %s (%d file(s), %s) -> %s", resolved.task.name, config.input or SAMPLE_INPUT,
                 len(resolved.files), outputs.human_bytes(sum(f["bytes"] for f in resolved.files)), config.output)
    with beam.Pipeline(runner=resolve_runner(options), options=options) as pipeline:
        build_pipeline(pipeline, config, tokenizer, resolved, run_id=run_id)
    manifest = outputs.read_manifest(config.output, require_success=False)
    outputs.raise_if_failed(manifest, config.output,
                            hint=lambda: diagnose(resolved, manifest["counts"].get("rejects", {}), config))
    print(outputs.summary("augment", manifest, config.shown_output, time.time() - started, rows_output="data"),
          flush=True)
    return manifest


def main(argv=None):
    cli.run_main(run, argv)
