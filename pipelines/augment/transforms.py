"""The augmentation's DoFns, then its composites (`ReadExamples`, `FindMaskedLMCandidates`, `FindGloveNeighbours`).

Each takes a small frozen settings object (config.py); models, tokenizers and GloVe indexes load in `setup()`,
one per worker process (`apache_beam.utils.shared.Shared`), never per element.
"""

import logging
import os
from typing import List, Optional

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from augment.augmenter import augment_example, field_candidates, plan_fields
from augment.mlm import MAX_POSITIONS, WINDOW_PIECES, MaskedLMScorer, window_queries
from augment.tasks import Example, replace_cells
from augment.words import WordRule, WordSplitter, is_letter_word
from contract import schemas, seeds
from pipelines import cli, outputs, progress, sources
from pipelines.augment import read, report, resources
from pipelines.augment.config import DrawSettings, GloveSettings, MaskedLMSettings, PlanSettings


class _Holder:
    """`shared.Shared` keeps weak references: wrap objects (like tuples or dicts) that cannot have one."""

    def __init__(self, value):
        self.value = value


# ------------------------------------------------------------------------------------------------------- DoFns
class ReadExamplesFn(beam.DoFn):
    """Reads one input file into Examples (read.py); every record that cannot be used goes to the rejects output.

    A damaged file raises `InputError` (recorded under `errors_dir` for the launcher): the run stops with one line
    naming the file, and no `_SUCCESS` is written.
    """
    REJECTS = "rejects"

    def __init__(self, layout: read.InputLayout, *, errors_dir: Optional[str]):
        self._layout = layout
        self.errors_dir = errors_dir
        self._examples = Metrics.counter("ReadExamples", "examples")
        self._rejected = Metrics.counter("ReadExamples", "rejected")

    @cli.reports_user_errors
    def process(self, element):
        file_index, path, name = element
        prefix = f"{name}:" if name else ""
        for row_index, example, failure in read.read_records(path, self._layout):
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


class PlanExamplesFn(beam.DoFn):
    """Splits every text field into words and emits the lookups its candidate words need."""
    MLM_REQUESTS = "mlm_requests"
    GLOVE_WORDS = "glove_words"

    def __init__(self, settings: PlanSettings):
        self._settings = settings

    def setup(self):
        self._tokenizer = resources.load_tokenizer(self._settings.model)
        self._splitter = WordSplitter(self._tokenizer.backend_tokenizer)
        # Words are compared after the model's normalizer (an uncased BERT strips accents): so are the stop words.
        stop_words = None if self._settings.stop_words is None else [
            self._splitter.normalize(word).strip() for word in self._settings.stop_words]
        self._rule = WordRule.create(self._settings.word_rule, stop_words)

    def process(self, element):
        key, example = element
        plans = plan_fields(example.texts, splitter=self._splitter, tokenizer=self._tokenizer, word_rule=self._rule)
        for field_index, plan in enumerate(plans):
            if plan.mlm_words:
                sentence = np.asarray(plan.piece_ids, dtype=np.int32).tobytes()
                positions = tuple(position for _, position in plan.mlm_words)
                yield beam.pvalue.TaggedOutput(self.MLM_REQUESTS, (sentence, (key, field_index, positions)))
            if self._settings.glove:
                for _, word in plan.glove_words:
                    yield beam.pvalue.TaggedOutput(self.GLOVE_WORDS, word)
        yield key, (example, plans)


class ScoreMaskedLMFn(beam.DoFn):
    """Answers the masked-LM queries of a group of distinct sentences in batches, one model per worker."""

    def __init__(self, settings: MaskedLMSettings):
        self._settings = settings
        self._queries = Metrics.counter("ScoreMaskedLM", "distinct_queries")
        self._truncated = Metrics.counter("ScoreMaskedLM", "queries_beyond_512")
        self._shared = shared.Shared()  # one model per worker process, whatever the number of threads

    def setup(self):
        settings = self._settings
        if settings.torch_threads > 0:
            import torch
            torch.set_num_threads(settings.torch_threads)

        def load():
            device, claim = resources.choose_device(settings.device)
            holder = _Holder(MaskedLMScorer(
                resources.load_masked_lm(settings.model), resources.load_tokenizer(settings.model),
                top_k=settings.top_k, precision=settings.precision, device=device,
                max_batch_tokens=settings.max_batch_tokens))  # None: the device's default (65536 on a GPU)
            holder.device_claim = claim  # the GPU stays claimed while this process holds its model
            logging.info("masked LM on %s (%s, %d tokens per forward, pid %d)", device, settings.precision,
                         holder.value.max_batch_tokens, os.getpid())
            return holder
        tag = (f"mlm:{settings.model}:{settings.top_k}:{settings.precision}:{settings.device}:"
               f"{settings.max_batch_tokens}")
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
        if self._settings.show_progress:
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

    def __init__(self, settings: GloveSettings):
        self._settings = settings
        self._shared = shared.Shared()

    def setup(self):
        settings = self._settings

        def load():
            return _Holder(resources.load_glove(settings.path, settings.vocab_limit))
        self._holder = self._shared.acquire(load, tag=f"glove:{settings.path}:{settings.vocab_limit}")
        self._index = self._holder.value

    def process(self, element):
        _, words = element
        neighbours = self._index.neighbours(words, self._settings.top_k)
        missing = sum(1 for found in neighbours.values() if not found)
        yield beam.pvalue.TaggedOutput("stats", ("glove_distinct_words", len(neighbours)))
        yield beam.pvalue.TaggedOutput("stats", ("glove_words_not_in_vocab", missing))
        yield from neighbours.items()


class AugmentExamplesFn(beam.DoFn):
    """Algorithm 1 for one example, from its plan, its masked-LM answers and the GloVe side input."""
    TSV = "tsv"
    CANDIDATES = "candidates"
    STATS = "stats"
    REPORT = "report"  # one small stats dict per example (report.py)
    REPLACED_WORDS = "replaced_words"  # (original word, times replaced) per example

    def __init__(self, settings: DrawSettings):
        self._settings = settings
        self._word_filter = is_letter_word if settings.word_rule == "unicode" else None
        self._rows = Metrics.counter("AugmentExamples", "rows")

    def process(self, element, glove, total_examples=None):
        settings = self._settings
        key, grouped = element
        (example, plans), = grouped["example"]
        mlm = [dict() for _ in plans]
        for field_index, answers in grouped["mlm"]:
            mlm[field_index].update(answers)
        candidates = [field_candidates(plan, mlm[i], glove, word_filter=self._word_filter)
                      for i, plan in enumerate(plans)]
        rows = augment_example(example, plans, candidates, num_aug=settings.num_aug,
                               replace_prob=settings.replace_prob, seed=settings.seed)
        fields = settings.task.text_fields
        for row in rows:
            row_key = key + (row.aug_index,)
            record = {"example_id": example.example_id, "row_index": example.row_index, "aug_index": row.aug_index,
                      "augmented_field": None if row.augmented_field is None else fields[row.augmented_field],
                      "label": example.label, "replaced_word_indices": list(row.replaced_word_indices)}
            record.update(zip(fields, row.texts))
            yield row_key, record
            yield beam.pvalue.TaggedOutput(self.TSV, (row_key, self._tsv_line(example, row.texts)))
        self._rows.inc(len(rows))
        if settings.show_progress:
            progress.advance("examples augmented", 1, total=total_examples)
        yield beam.pvalue.TaggedOutput(self.STATS, ("examples", 1))
        yield beam.pvalue.TaggedOutput(self.STATS, ("rows", len(rows)))
        if settings.report_histograms is not None:
            rows_hist, length_hist = settings.report_histograms
            stats, replaced = report.example_stats(plans, mlm, glove, rows, word_filter=self._word_filter,
                                                   rows_hist=rows_hist, length_hist=length_hist)
            yield beam.pvalue.TaggedOutput(self.REPORT, stats)
            for word, times in sorted(replaced.items()):
                yield beam.pvalue.TaggedOutput(self.REPLACED_WORDS, (word, times))
        if not settings.glove:
            kept = sum(len(plan.glove_words) for plan in plans)
            if kept:
                yield beam.pvalue.TaggedOutput(self.STATS, ("words_without_glove", kept))
        if settings.emit_candidates:
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
            cells = replace_cells(self._settings.task, list(example.cells), texts)
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
      layout: where the records keep their fields (task, format, a generic task's label and id columns).
      errors_dir: where a worker records the InputError of a damaged file (`cli.errors_dir`).
    """

    def __init__(self, files: List[str], *, layout: read.InputLayout, errors_dir: Optional[str]):
        super().__init__()
        self._files = files
        self._read_fn = ReadExamplesFn(layout, errors_dir=errors_dir)

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

    def __init__(self, settings: MaskedLMSettings):
        super().__init__()
        self._score_fn = ScoreMaskedLMFn(settings)
        self._partitions = settings.partitions

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

    def __init__(self, settings: GloveSettings):
        super().__init__()
        self._neighbours_fn = GloveNeighboursFn(settings)

    def expand(self, words):
        return (words
                | "DistinctWords" >> beam.Distinct()
                | "KeyAll" >> beam.Map(lambda word: (0, word))
                | "GatherWords" >> beam.GroupByKey()
                | "Neighbours" >> beam.ParDo(self._neighbours_fn).with_outputs("stats", main="neighbours"))
