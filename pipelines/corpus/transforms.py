"""The corpus pipeline's steps after reading: sentences, tokens, buckets, instances (DoFns, then composites).

Random-next sentences come from a bucket of documents: each epoch, every document is hashed with (seed, epoch, its
key) into one of ceil(documents / docs_per_bucket) buckets, and a document's random-next B is drawn from the other
documents of its bucket, so no worker ever needs the whole corpus.
"""

import array
import dataclasses
import hashlib
import itertools
import json
import math
import random
from typing import Any, Dict, List, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from contract import schemas, seeds
from corpus import documents as documents_lib
from corpus import instances as instances_lib
from corpus import wordpiece
from pipelines import outputs, progress
from pipelines.runners import COSTLY_GROUPS, FEW_GROUPS

COUNTS_TABLE = "corpus"  # the manifest's count table; `counts` outputs are ((COUNTS_TABLE, name), n) pairs


@dataclasses.dataclass(frozen=True)
class InstanceSettings:
    """How tokenized documents become instances, fixed before the pipeline is built.

    Attributes:
      seed, epochs, docs_per_bucket: the bucket assignment's settings (seed and epochs also the instances').
      mode: "pairs" or "single" (config.INSTANCE_MODES).
      config: the instance cutter's settings.
      special: the tokenizer's special token ids.
      continuation_ids: ids of "##" pieces, for whole-word masking (empty without it).
      typecode: the `array` typecode of token ids ("H" or "i").
      num_shards: shards per epoch.
      schema: the instance rows' Arrow schema.
      show_progress: count the documents cut in the progress lines.
    """
    seed: int
    epochs: int
    docs_per_bucket: int
    mode: str
    config: instances_lib.InstanceConfig
    special: instances_lib.SpecialTokens
    continuation_ids: frozenset
    typecode: str
    num_shards: int
    schema: pa.Schema
    show_progress: bool = False


# ---------------------------------------------------------------------------------------------------------------
# DoFns


class SplitSentencesFn(beam.DoFn):
    """(key, paragraphs, already_split) to (key, sentences) with Punkt; a document without sentences is rejected."""
    REJECTS = "rejects"

    def setup(self):
        # Made on first use: text input is already split, and importing NLTK costs seconds of start-up per worker.
        self._splitter = None

    def process(self, element):
        key, paragraphs, already_split = element
        if already_split:
            sentences = paragraphs
        else:
            if self._splitter is None:
                self._splitter = documents_lib.make_sentence_splitter()
            sentences = documents_lib.split_sentences(self._splitter, paragraphs)
        if not sentences:
            yield beam.pvalue.TaggedOutput(self.REJECTS, schemas.reject(key, 0, "empty_document", paragraphs))
            return
        yield key, sentences


class TokenizeDocumentsFn(beam.DoFn):
    """(key, sentences) to packed documents (key, (ids, lengths)), one fast-tokenizer call per BATCH_SENTENCES.

    Documents are buffered until they hold BATCH_SENTENCES sentences (and at the end of a bundle), then tokenized
    in one call: a batch by sentences, not documents, because Wikipedia articles range from one sentence to
    thousands. Each output keeps its own document's window and timestamp.

    A BERT WordPiece tokenizer goes through `corpus.wordpiece.CachedWordPiece` (ASCII and Latin sentences tokenized
    in Python with a word cache, the rest by the Rust tokenizer; the same ids, in a third of the CPU time on English
    text). `setup()` checks it against the Rust tokenizer on probe sentences and leaves it out if they disagree.

    Other tokenizers: each document goes to the tokenizer as one text, its sentences joined by a newline that a copy
    of the tokenizer knows as a special added token: the newline comes back as its own id between the sentences'
    ids, so one Encoding per document replaces one per sentence (an eighth of the tokenizing time here). Sentences
    never hold a newline (`documents.normalize_text`), added tokens are cut out before the normalizer and
    pre-tokenizer run, and a WordPiece pre-tokenizer splits at whitespace anyway, so every sentence's ids are those
    of encoding it alone; `setup()` checks that on probe sentences and encodes sentence by sentence if a tokenizer
    disagrees.

    A packed document is the token ids of all its sentences back to back (`array` bytes of `typecode`) and each
    sentence's token count (`array("I")` bytes): two byte strings per document between stages instead of a list
    per sentence. Sentences with no tokens are left out; a document left with none is rejected.
    """
    REJECTS = "rejects"
    COUNTS = "counts"
    BATCH_SENTENCES = 4096
    SEPARATOR = "\n"
    PROBE = ["Hello, World!", "naïve café 東京 co-op", "x", "\x00\u200b", "", "  spaced  ", "[SEP] [MASK]",
             "it's 3.5%", "Tab\tsep {a|b} ~x^2 `q` $5 #1 @me", "unaffable" + "x" * 120, "[sep] [Mask] [UNK]"]

    def __init__(self, tokenizer_json: str, typecode: str):
        # Beam pickles (and bz2-compresses) a DoFn several times while it builds and runs a pipeline: the WordPiece
        # vocab travels as one token per line, half the size of its JSON (a tenth of the start-up).
        self._tokenizer_parts = _split_vocab(tokenizer_json)
        self._typecode = typecode
        self._empty_sentences = Metrics.counter("TokenizeDocuments", "sentences_without_tokens")

    def setup(self):
        from tokenizers import AddedToken, Tokenizer
        tokenizer_json = _join_vocab(self._tokenizer_parts)
        self._tokenizer = Tokenizer.from_str(tokenizer_json)
        self._joining = None  # (tokenizer that knows SEPARATOR, its id), where it gives the same ids
        alone = [e.ids for e in self._tokenizer.encode_batch_fast(self.PROBE, add_special_tokens=False)]
        self._fast = wordpiece.CachedWordPiece.from_backend(self._tokenizer)
        if self._fast is not None and self._fast.encode_batch(self.PROBE) != alone:
            self._fast = None
        if self._fast is None and self._tokenizer.token_to_id(self.SEPARATOR) is None:
            joining = Tokenizer.from_str(tokenizer_json)
            joining.add_special_tokens([AddedToken(self.SEPARATOR, special=True, normalized=False)])
            separator_id = joining.token_to_id(self.SEPARATOR)
            joined = joining.encode_batch_fast([self.SEPARATOR.join(self.PROBE)], add_special_tokens=False)[0].ids
            if joined == [i for k, ids in enumerate(alone) for i in ([separator_id] if k else []) + ids]:
                self._joining = (joining, separator_id)
        self._dtype = np.dtype(self._typecode)

    def start_bundle(self):
        self._pending: List[WindowedValue] = []
        self._pending_sentences = 0
        self._counts: Dict[Any, Dict[str, int]] = {}  # per window: documents, sentences, tokens

    def process(self, element, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        self._pending.append(WindowedValue(element, timestamp, (window,)))
        self._pending_sentences += len(element[1])
        if self._pending_sentences >= self.BATCH_SENTENCES:
            yield from self._flush()

    def finish_bundle(self):
        yield from self._flush()
        for window, counts in self._counts.items():
            for name, value in counts.items():
                yield beam.pvalue.TaggedOutput(
                    self.COUNTS, WindowedValue(((COUNTS_TABLE, name), value), window.max_timestamp(), (window,)))

    def _flush(self):
        pending, self._pending, self._pending_sentences = self._pending, [], 0
        if not pending:
            return
        for item, (ids, lengths) in zip(pending, self._encode([item.value[1] for item in pending])):
            key, sentences = item.value
            if len(lengths) < len(sentences):
                self._empty_sentences.inc(len(sentences) - len(lengths))
            if not len(lengths):
                yield beam.pvalue.TaggedOutput(self.REJECTS, item.with_value(
                    schemas.reject(key, 0, "no_tokens", sentences)))
                continue
            counts = self._counts.setdefault(item.windows[0], {"documents": 0, "sentences": 0, "tokens": 0})
            counts["documents"] += 1
            counts["sentences"] += len(lengths)
            counts["tokens"] += len(ids)
            yield item.with_value((key, (ids.tobytes(), lengths.tobytes())))

    def _encode(self, documents: List[List[str]]):
        """(ids of the non-empty sentences back to back, their lengths as uint32) per document, as numpy arrays."""
        texts = None
        if self._joining is not None:
            texts = [self.SEPARATOR.join(sentences) for sentences in documents]
            if any(text.count(self.SEPARATOR) != len(sentences) - 1 for text, sentences in zip(texts, documents)):
                texts = None  # a sentence with a newline of its own (never from this pipeline's readers)
        if texts is None:
            flat = [sentence for sentences in documents for sentence in sentences]
            if self._fast is not None:
                encoded = iter(self._fast.encode_batch(flat))
            else:
                encodings = self._tokenizer.encode_batch_fast(flat, add_special_tokens=False)
                encoded = (encoding.ids for encoding in encodings)
            for sentences in documents:
                ids = [sentence_ids for _, sentence_ids in zip(sentences, encoded)]
                lengths = np.fromiter(map(len, ids), dtype=np.uint32, count=len(ids))
                yield (np.fromiter(itertools.chain.from_iterable(ids), dtype=self._dtype, count=int(lengths.sum())),
                       lengths[lengths > 0])
            return
        joining, separator_id = self._joining
        for encoding in joining.encode_batch_fast(texts, add_special_tokens=False):
            ids = np.array(encoding.ids, dtype=np.int64)
            is_separator = ids == separator_id
            bounds = np.concatenate(([-1], np.flatnonzero(is_separator), [len(ids)]))
            lengths = (np.diff(bounds) - 1).astype(np.uint32)
            yield ids[~is_separator].astype(self._dtype), lengths[lengths > 0]


class AssignBucketsFn(beam.DoFn):
    """(key, document) to ((epoch, bucket), (key, document)) for every epoch; see the module docstring."""

    def __init__(self, settings: InstanceSettings):
        self._settings = settings

    def process(self, element, counts):
        key, _ = element
        num_documents = counts.get((COUNTS_TABLE, "documents"), 0)
        num_buckets = max(1, math.ceil(num_documents / self._settings.docs_per_bucket))
        for epoch in range(self._settings.epochs):
            bucket = seeds.stable_hash(("bucket", self._settings.seed, epoch, key)) % num_buckets
            yield (epoch, bucket), element


class CreateInstancesFn(beam.DoFn):
    """A bucket of packed documents to ((epoch, shard), encoded rows): its instances, batched per output shard.

    Rows leave as Arrow record batches (`outputs.encode_batch`) for `outputs.WriteBatchedShards`: per-row costs in
    the runner (a key, a pickled dict of int lists, a GroupByKey entry per row) were most of the run time. The
    shard is the one the keyed sink would assign, `outputs.shard_of(instance_id, num_shards)`. A shard's batch is
    flushed every BATCH_ROWS rows, so memory stays bounded whatever the bucket size or shard count.
    """
    COUNTS = "counts"
    BATCH_ROWS = 2048

    def __init__(self, settings: InstanceSettings):
        self._settings = settings
        self._lonely = Metrics.counter("CreateInstances", "buckets_of_one_document")

    def process(self, element, counts=None):
        settings = self._settings
        (epoch, _), members = element
        members = sorted(members, key=lambda kv: kv[0])  # bucket order must not depend on bundle order
        keys = [key for key, _ in members]
        docs = [_unpack_document(packed, settings.typecode) for _, packed in members]
        del members
        if len(docs) == 1 and settings.mode == "pairs":
            self._lonely.inc()
        cumulative = instances_lib.cumulative_counts([len(doc) for doc in docs])  # once per bucket, not per draw
        instances = tokens = 0
        batches: Dict[int, _InstanceBatch] = {}
        for index, key in enumerate(keys):
            rng = random.Random(seeds.stable_hash(("instances", settings.seed, epoch, key)))
            if settings.mode == "pairs":
                made = instances_lib.create_pair_instances(docs, index, rng, config=settings.config,
                                                           special=settings.special,
                                                           continuation_ids=settings.continuation_ids,
                                                           cumulative=cumulative)
            else:
                made = instances_lib.create_single_segment_instances(docs[index], rng, config=settings.config,
                                                                     special=settings.special,
                                                                     continuation_ids=settings.continuation_ids)
            for number, instance in enumerate(made):
                instance_id = f"{key}:{number}"
                tokens += len(instance.input_ids)
                shard = outputs.shard_of(instance_id, settings.num_shards)
                batch = batches.get(shard)
                if batch is None:
                    batch = batches[shard] = _InstanceBatch()
                batch.append(instance_id, instance)
                if len(batch) >= self.BATCH_ROWS:
                    yield (epoch, shard), outputs.encode_batch(batch.to_record_batch(settings.schema))
                    del batches[shard]
            instances += len(made)
        if settings.show_progress:
            total = (counts or {}).get((COUNTS_TABLE, "documents"), 0) * settings.epochs
            progress.advance("documents cut into instances (all epochs)", len(keys), total=total)
        for shard, batch in sorted(batches.items()):
            yield (epoch, shard), outputs.encode_batch(batch.to_record_batch(settings.schema))
        yield beam.pvalue.TaggedOutput(self.COUNTS, ((COUNTS_TABLE, "instances"), instances))
        yield beam.pvalue.TaggedOutput(self.COUNTS, ((COUNTS_TABLE, "instance_tokens"), tokens))


class _InstanceBatch:
    """Instances bound for one shard, gathered column by column (flat token lists + offsets)."""

    def __init__(self):
        self.instance_ids: List[str] = []
        self.input_ids: List[int] = []
        self.input_offsets = [0]
        self.segment_a_lens: List[int] = []
        self.is_random_next: List[bool] = []
        self.positions: List[int] = []
        self.labels: List[int] = []
        self.mask_offsets = [0]

    def __len__(self) -> int:
        return len(self.instance_ids)

    def append(self, instance_id: str, instance: instances_lib.Instance) -> None:
        self.instance_ids.append(instance_id)
        self.input_ids += instance.input_ids
        self.input_offsets.append(len(self.input_ids))
        self.segment_a_lens.append(instance.segment_a_len)
        self.is_random_next.append(instance.is_random_next)
        if instance.masked_lm_positions:  # none at TinyBERT's default masked_lm_prob 0
            self.positions += instance.masked_lm_positions
            self.labels += instance.masked_lm_labels
        self.mask_offsets.append(len(self.positions))

    def to_record_batch(self, schema: pa.Schema) -> pa.RecordBatch:
        id_type = schema.field("input_ids").type.value_type

        def list_column(offsets: List[int], values: List[int], value_type: pa.DataType) -> pa.Array:
            return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, value_type))

        return pa.RecordBatch.from_arrays([
            pa.array(self.instance_ids, pa.string()),
            list_column(self.input_offsets, self.input_ids, id_type),
            pa.array(self.segment_a_lens, pa.int16()),
            pa.array(self.is_random_next, pa.bool_()),
            list_column(self.mask_offsets, self.positions, pa.int16()),
            list_column(self.mask_offsets, self.labels, id_type),
        ], schema=schema)


def _unpack_document(packed: Tuple[bytes, bytes], typecode: str) -> instances_lib.PackedDocument:
    """A packed document (see TokenizeDocumentsFn) as the instance cutter takes it."""
    ids_bytes, lengths_bytes = packed
    ids = array.array(typecode)
    ids.frombytes(ids_bytes)
    lengths = array.array("I")
    lengths.frombytes(lengths_bytes)
    # The ids stay an array (2 bytes a token, sliced by memcpy): a bucket of a thousand long articles as Python
    # int lists would cost tens of bytes a token.
    return instances_lib.PackedDocument(ids, list(itertools.accumulate(lengths)))


# ---------------------------------------------------------------------------------------------------------------
# Composites


class DropDuplicateDocuments(beam.PTransform):
    """Keeps one document (the smallest key) of each set of identical ones; the others become rejects.

    Returns:
      A dict: "documents" (key, sentences), "rejects" reject rows.
    """

    def expand(self, documents):
        grouped = (documents
                   | "KeyByContent" >> beam.Map(
                       lambda kv: (hashlib.sha256("\n".join(kv[1]).encode("utf-8")).hexdigest(), kv))
                   | "GroupByContent" >> beam.GroupByKey())
        kept = grouped | "KeepFirst" >> beam.Map(lambda kv: min(kv[1], key=lambda doc: doc[0]))
        rejects = grouped | "RejectOthers" >> beam.FlatMap(_duplicate_rejects)
        return {"documents": kept, "rejects": rejects}


class TokenizeDocuments(beam.PTransform):
    """(key, sentences) to packed documents (key, (ids, lengths)), batched through the fast tokenizer.

    Returns:
      A DoOutputsTuple: main = documents, `rejects`, `counts` (((COUNTS_TABLE, name), n) for documents,
      sentences, tokens).
    """

    def __init__(self, tokenizer_json: str, typecode: str):
        """Args:
          tokenizer_json: the `tokenizers.Tokenizer` serialization (`to_str()`), without truncation or padding.
          typecode: the `array` typecode of token ids ("H" or "i").
        """
        super().__init__()
        self._tokenizer_json = tokenizer_json
        self._typecode = typecode

    def expand(self, documents):
        return (documents
                | "Tokenize" >> beam.ParDo(TokenizeDocumentsFn(self._tokenizer_json, self._typecode)).with_outputs(
                    TokenizeDocumentsFn.REJECTS, TokenizeDocumentsFn.COUNTS, main="documents"))


class CreateInstances(beam.PTransform):
    """Tokenized documents to instances of every epoch, drawn per random-next bucket. Annotated `costly_groups`
    (few): a bucket takes far longer to cut than to move, so a runner that can spreads the buckets over a few tasks
    per worker, not one or two.

    Args:
      document_counts: the summed `counts` of `TokenizeDocuments` (((COUNTS_TABLE, "documents"), n) among them),
        read as a side input for the number of buckets.
      settings: how documents become instances.

    Returns:
      A DoOutputsTuple: main = ((epoch, shard), encoded rows) for `outputs.WriteBatchedShards`, `counts`
      (instances, instance_tokens).
    """

    def __init__(self, document_counts: beam.PCollection, settings: InstanceSettings):
        super().__init__()
        self._document_counts = document_counts
        self._settings = settings

    def annotations(self):
        return {**super().annotations(), COSTLY_GROUPS: FEW_GROUPS}

    def expand(self, documents):
        return (documents
                | "AssignBuckets" >> beam.ParDo(AssignBucketsFn(self._settings),
                                                counts=beam.pvalue.AsDict(self._document_counts))
                | "GroupBuckets" >> beam.GroupByKey()
                | "MakeInstances" >> beam.ParDo(CreateInstancesFn(self._settings),
                                                counts=beam.pvalue.AsDict(self._document_counts)).with_outputs(
                    CreateInstancesFn.COUNTS, main="instances"))


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def _duplicate_rejects(group):
    _, docs = group
    docs = sorted(docs, key=lambda doc: doc[0])
    for key, sentences in docs[1:]:
        yield schemas.reject(key, 0, "duplicate_document", f"same text as {docs[0][0]}: {sentences[:3]}")


def _split_vocab(tokenizer_json: str) -> Tuple[str, Optional[str]]:
    """(the serialization without its model vocab, the vocab as tokens in id order joined by newlines), or
    (the serialization, None) where the vocab is not a dict of ids 0..n-1 of tokens without newlines."""
    data = json.loads(tokenizer_json)
    vocab = (data.get("model") or {}).get("vocab")
    if not isinstance(vocab, dict) or sorted(vocab.values()) != list(range(len(vocab))) \
            or any("\n" in token for token in vocab):
        return tokenizer_json, None
    data["model"]["vocab"] = {}
    return json.dumps(data), "\n".join(sorted(vocab, key=vocab.__getitem__))


def _join_vocab(parts: Tuple[str, Optional[str]]) -> str:
    """The serialization `_split_vocab` took apart."""
    rest, tokens = parts
    if tokens is None:
        return rest
    data = json.loads(rest)
    data["model"]["vocab"] = {token: index for index, token in enumerate(tokens.split("\n"))}
    return json.dumps(data)

