"""The masked-LM answers of the augmentation: `FindMaskedLMCandidates` and its `ScoreMaskedLMFn`, which looks each
query up in the candidate store first (candidate_store.py) and computes only the missing ones, writing each batch
to the store as soon as it is computed; and `DescribeCandidateStore`, the store's lines of the manifest.
"""

import logging
import os

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from augment import store as store_lib
from augment.mlm import MAX_POSITIONS, WINDOW_PIECES, MaskedLMScorer, window_queries
from contract import seeds
from contract.errors import UserError
from pipelines import cli, freed_memory, progress
from pipelines.runners import COSTLY_GROUPS, FINE_GROUPS
from pipelines.augment import candidate_store, resources
from pipelines.augment.config import MaskedLMSettings, StoreSettings
from pipelines.augment.transforms import SharedHolder


class ScoreMaskedLMFn(beam.DoFn):
    """Answers the masked-LM queries of a group of distinct sentences: from the candidate store where it holds
    them, else in batches on the model (one per worker process, loaded when the store first lacks an answer).

    Outputs: (example key, (field, {position: candidates})); counts under "stats" (as without a store) and under
    "store" (answers_from_store, answers_computed).
    """
    STATS = "stats"
    STORE = "store"

    def __init__(self, settings: MaskedLMSettings):
        self._settings = settings
        self.errors_dir = settings.errors_dir  # reports_user_errors records a UserError there
        self._queries = Metrics.counter("ScoreMaskedLM", "distinct_queries")
        self._truncated = Metrics.counter("ScoreMaskedLM", "queries_beyond_512")
        self._from_store = Metrics.counter("ScoreMaskedLM", "answers_from_store")
        self._shared = shared.Shared()  # one model per worker process, whatever the number of threads
        self._scorer = None
        self._store = None
        self._settings_id = None
        self._holds_memory = False  # a freed_memory hold, from the model's load to teardown

    def setup(self):
        settings = self._settings
        if settings.torch_threads > 0:
            import torch
            torch.set_num_threads(settings.torch_threads)
        store = settings.store
        if store is not None:
            # This machine's scorer variant (fused bf16 on a CPU, plain bf16 on a GPU) names the answers it reads
            # and writes; a run without weights reads the folder the launcher found.
            self._settings_id = store.settings_id if store.weightless else candidate_store.expected_settings_id(
                model=settings.model, precision=settings.precision, top_k=settings.top_k, device=settings.device)
            self._store = candidate_store.CandidateStore(store.root, store.model_id, self._settings_id)

    def _load_scorer(self) -> None:
        settings = self._settings

        trim_threshold = freed_memory.hold()
        self._holds_memory = True
        if trim_threshold is not None:
            logging.info("masked LM: malloc keeps freed buffers in this process (MALLOC_TRIM_THRESHOLD_=%d was "
                         "set) until the run ends", trim_threshold)

        def load():
            device, claim = resources.choose_device(settings.device)
            holder = SharedHolder(MaskedLMScorer(
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
        actual = store_lib.settings_id(variant=self._scorer.variant, top_k=settings.top_k)
        if self._store is not None and actual != self._settings_id:  # a prediction gone wrong: never mix variants
            logging.warning("candidate store: the scorer runs as %s, not %s as expected: its answers go to %s",
                            self._scorer.variant, self._settings_id, actual)
            self._settings_id = actual
            self._store = candidate_store.CandidateStore(settings.store.root, settings.store.model_id, actual)

    def teardown(self):
        if self._holds_memory:
            freed_memory.release()
            self._holds_memory = False

    @cli.reports_user_errors
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
        wanted = sorted({q for qs in queries.values() for q in qs})
        answers = self._store.look_up(wanted) if self._store is not None else {}
        missing = [query for query in wanted if query not in answers]
        if missing:
            answers.update(self._compute(missing))
        distinct = len(answers) + beyond  # counted as before: a query past the window is distinct, answered []
        self._queries.inc(distinct)
        self._truncated.inc(beyond)
        self._from_store.inc(len(answers) - len(missing))
        if self._settings.show_progress:
            progress.advance("masked-LM queries", distinct, total=total_queries)
        yield beam.pvalue.TaggedOutput(self.STATS, ("mlm_distinct_queries", distinct))
        if beyond:
            yield beam.pvalue.TaggedOutput(self.STATS, ("mlm_queries_beyond_512_tokens", beyond))
        yield beam.pvalue.TaggedOutput(self.STORE, ("answers_from_store", len(answers) - len(missing)))
        yield beam.pvalue.TaggedOutput(self.STORE, ("answers_computed", len(missing)))
        for sentence, requests in sentences:
            by_position = {q.position: answers[q] for q in queries[sentence]}
            for key, field_index, positions in requests:
                # A position past the window has no answer: its word keeps itself (field_candidates).
                yield key, (field_index, {p: by_position[p] for p in positions if p in by_position})

    def _compute(self, missing):
        """The answers of queries the store lacks, each forward batch written to the store once computed."""
        store = self._settings.store
        if store is not None and store.weightless:
            raise UserError(f"--candidate_store {store.root} lacks masked-LM answers of this input (at least "
                            f"{len(missing):,}) and --model {self._settings.model} holds no weights: fill the store "
                            "first with a run that has the weights (--score_only), or put the weights back into the "
                            "folder")
        if self._scorer is None:
            self._load_scorer()
        if self._store is None:
            return self._scorer.candidates(missing)
        return self._scorer.candidates(missing, on_batch=self._store.write)


class DescribeStoreFn(beam.DoFn):
    """The manifest's `candidate_store` fields, once every answer is written: where, which model, how big."""

    def __init__(self, store: StoreSettings):
        self._store = store

    def process(self, unused, counts):
        store = self._store
        size = candidate_store.store_size(store.root)
        yield {"candidate_store": {"path": store.root, "model_id": store.model_id, "settings_id": store.settings_id,
                                   "weightless": store.weightless, **dict(sorted(counts)),
                                   "store_files": size["files"], "store_bytes": size["bytes"]}}


class FindMaskedLMCandidates(beam.PTransform):
    """(sentence, request) pairs -> (example key, (field, {position: candidates})), each distinct sentence once.

    Distinct sentences are grouped by input length and a hash partition, and batched inside the group in sorted
    order, so which queries share a forward pass depends only on the data (and on which answers the candidate store
    already holds), never on the runner's bundles.

    Returns:
      The `ScoreMaskedLMFn` outputs: `answers`, `stats` and `store` (counts).
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
        return keyed | "ScoreGroups" >> _ScoreGroups(self._score_fn, total)


class _ScoreGroups(beam.PTransform):
    """(batch key, sentences) -> the `ScoreMaskedLMFn` outputs: each group is a few forward passes of the model,
    seconds of work against milliseconds to move it, so a runner that can (our Dask runner: `costly_groups`) cuts
    the groups into many small tasks that the workers take as they free up."""

    def __init__(self, score_fn: ScoreMaskedLMFn, total):
        super().__init__()
        self._score_fn = score_fn
        self._total = total

    def annotations(self):
        return {**super().annotations(), COSTLY_GROUPS: FINE_GROUPS}

    def expand(self, keyed):
        return (keyed
                | "GroupByLength" >> beam.GroupByKey()
                | "Score" >> beam.ParDo(self._score_fn, total_queries=beam.pvalue.AsSingleton(self._total))
                .with_outputs(ScoreMaskedLMFn.STATS, ScoreMaskedLMFn.STORE, main="answers"))
