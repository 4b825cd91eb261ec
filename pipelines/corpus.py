"""Wikipedia dumps or any text -> general-distillation Parquet shards (TinyBERT's `pregenerate_training_data.py`).

Usage:
  python -m pipelines.corpus \\
      --input '/data/enwiki-latest-pages-articles-multistream*.xml.bz2' --input_format wikipedia-xml \\
      --output /data/tinybert-general --tokenizer bert-base-uncased --epochs 3 --seed 42 --num_shards 64

Output (see docs/corpus.md for the data contract): `epoch-E/part-NNNNN-of-MMMMM.parquet` for each epoch,
`rejects/part-...parquet`, `manifest.json`, `_SUCCESS`.

Random-next sentences come from a bucket of documents: each epoch, every document is hashed with (seed, epoch, its
key) into one of ceil(documents / docs_per_bucket) buckets, and a document's random-next B is drawn from the other
documents of its bucket, so no worker ever needs the whole corpus.
"""

if __name__ == "__main__":
    # Not run as `__main__` (whose DoFns cloudpickle would copy by value, and whose options Beam would see twice):
    # the imported module runs instead, and its DoFns pickle by reference (see pipelines/augment.py).
    import sys
    from pipelines import entry
    sys.exit(entry.corpus())

import argparse
import array
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import random
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, TypeOptions
from apache_beam.utils.windowed_value import WindowedValue

from contract import fingerprint, layout, schemas, seeds
from corpus import documents as documents_lib
from corpus import instances as instances_lib
from contract.layout import CORPUS_KIND
from contract.schemas import instance_schema, token_dtype_name, token_typecode
from pipelines import cli, outputs, progress, report, sources
from corpus import tokenizer as tokenizer_lib
from corpus import wiki, wordpiece
from contract.errors import InputError, UserError
from pipelines.options import IOConfig, option_values
from pipelines.runners import resolve_runner

INPUT_FORMATS = ("wikipedia-xml", "wikipedia-parquet", "text")
WIKI_MARKUPS = tuple(wiki.MARKUP_STRIPPERS)  # --wiki_markup: how wikitext becomes paragraphs
INSTANCE_MODES = ("pairs", "single")
KIND = CORPUS_KIND
COUNTS_TABLE = "corpus"  # the manifest's count table; `counts` outputs are ((COUNTS_TABLE, name), n) pairs
REJECTS_TABLE = "rejects"  # rejects by reason


class CorpusOptions(PipelineOptions):
    """Corpus options; --input, --output, --input_format, --seed, --num_shards, --overwrite are IOOptions."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--tokenizer", default="bert-base-uncased",
                            help="Hugging Face hub name or local directory of a fast tokenizer")
        parser.add_argument("--max_seq_len", type=int, default=128)
        parser.add_argument("--short_seq_prob", type=float, default=0.1)
        parser.add_argument("--masked_lm_prob", type=float, default=0.0,
                            help="0 (TinyBERT's default) stores no masked-LM predictions")
        parser.add_argument("--max_predictions_per_seq", type=int, default=20)
        parser.add_argument("--whole_word_mask", action="store_true",
                            help="mask all pieces of a word together (with --masked_lm_prob > 0)")
        parser.add_argument("--epochs", type=int, default=3, help="differently sampled epochs of instances")
        parser.add_argument("--instance_mode", choices=INSTANCE_MODES, default="pairs",
                            help="pairs: [CLS] A [SEP] B [SEP] with 50%% random-next B; single: [CLS] text [SEP]")
        parser.add_argument("--docs_per_bucket", type=int, default=1000,
                            help="documents per random-next bucket (see docs/corpus.md)")
        parser.add_argument("--dedup", action="store_true", help="drop documents identical to another one")
        parser.add_argument("--split_bytes", type=int, default=64 << 20,
                            help="work range size for splittable dumps (uncompressed or multistream .bz2 XML)")
        parser.add_argument("--wiki_markup", choices=WIKI_MARKUPS, default="fast",
                            help="wikipedia-xml: fast (corpus/wikimarkup.py, linear-time stripper) or "
                                 "mwparserfromhell (a full parser, about 7x slower)")


@dataclasses.dataclass(frozen=True)
class CorpusConfig(IOConfig):
    """The corpus options, read once in run(): IOOptions and CorpusOptions with their defaults filled, checked, and
    the local output and tokenizer paths made absolute, for workers in other folders or on other machines. Never
    mutated; `shown_output` keeps --output as given, for the summary."""
    # CorpusOptions
    tokenizer: str
    max_seq_len: int
    short_seq_prob: float
    masked_lm_prob: float
    max_predictions_per_seq: int
    whole_word_mask: bool
    epochs: int
    instance_mode: str
    docs_per_bucket: int
    dedup: bool
    split_bytes: int
    wiki_markup: str
    shown_output: str

    @classmethod
    def from_options(cls, options: PipelineOptions) -> "CorpusConfig":
        """The config of parsed `options` (IOOptions and CorpusOptions among them).

        Raises:
          UserError: the first option value that cannot work (`_check_options`).
        """
        values = option_values(options, CorpusOptions, input_format="text", num_shards=8)
        given = cls(**values, shown_output=values["output"])
        _check_options(given)
        return dataclasses.replace(given, output=sources.absolute(given.output),
                                   tokenizer=sources.absolute(given.tokenizer, may_be_hub_name=True))


# ---------------------------------------------------------------------------------------------------------------
# DoFns


class SplitInputFn(beam.DoFn):
    """An input file to work items: byte ranges of a splittable dump, Parquet row groups, or the whole file."""

    def __init__(self, input_format: str, split_bytes: int):
        self._input_format = input_format
        self._split_bytes = split_bytes

    def process(self, file_info):
        path, size, name = file_info["path"], file_info["bytes"], file_info["name"]
        if self._input_format == "wikipedia-xml":
            for _, start, end in wiki.plan_ranges(path, size, split_bytes=self._split_bytes, open_fn=_open_raw):
                yield {"path": path, "name": name, "start": start, "end": end, "size": size}
        elif self._input_format == "wikipedia-parquet":
            import pyarrow.parquet as pq
            try:
                with _open_raw(path) as handle:
                    parquet_file = pq.ParquetFile(handle)
                    _check_text_column(path, parquet_file.schema_arrow)
                    num_row_groups = parquet_file.num_row_groups
            except (pa.ArrowInvalid, OSError) as error:
                raise InputError(f"{path}: not a readable Parquet file ({str(error).splitlines()[0]}); download "
                                 "it again or check --input_format") from None
            for group in range(num_row_groups):
                yield {"path": path, "name": name, "start": group, "end": group + 1, "size": size}
        else:
            yield {"path": path, "name": name, "start": 0, "end": size, "size": size}


class ReadDocumentsFn(beam.DoFn):
    """A work item to documents (key, paragraphs, already_split); bad records go to REJECTS."""
    REJECTS = "rejects"

    def __init__(self, input_format: str, wiki_markup: str = "fast", *, show_progress: bool = False):
        self._input_format = input_format
        self._wiki_markup = wiki_markup
        self._show_progress = show_progress
        self._rejected = Metrics.counter("ReadDocuments", "rejected")
        self._read = Metrics.counter("ReadDocuments", "documents")

    def process(self, work):
        reader = {"wikipedia-xml": self._read_xml, "wikipedia-parquet": self._read_parquet,
                  "text": self._read_text}[self._input_format]
        for item in reader(work):
            if isinstance(item, dict):
                self._rejected.inc()
                yield beam.pvalue.TaggedOutput(self.REJECTS, item)
            else:
                self._read.inc()
                if self._show_progress:
                    progress.advance("documents read", 1)
                yield item

    def _read_xml(self, work):
        path, start, end = work["path"], work["start"], work["end"]
        # Offsets inside a bz2 range count decompressed bytes from the range's first stream: name the range.
        source = path if start == 0 else f"{path}@{start}"
        name = work["name"]
        to_paragraphs = wiki.MARKUP_STRIPPERS[self._wiki_markup]
        with _open_raw(path) as handle:
            for page in _checked_pages(wiki.iter_pages(handle, path, start, end, work["size"]), path):
                try:
                    article = wiki.parse_page(page.xml)
                except wiki.MalformedPage as error:
                    yield schemas.reject(source, page.offset, "malformed_page", f"{error}\n{_excerpt(page.xml)}")
                    continue
                label = f"{article.page_id}\t{article.title}"
                if article.namespace != "0":
                    yield schemas.reject(source, page.offset, "not_article", f"ns={article.namespace}\t{label}")
                elif article.redirect:
                    yield schemas.reject(source, page.offset, "redirect", label)
                else:
                    try:
                        paragraphs = to_paragraphs(article.wikitext)
                    except Exception as error:  # the parser's own failure on odd markup: one reject, not a crash
                        yield schemas.reject(source, page.offset, "unparsable_wikitext", f"{label}\t{error}")
                        continue
                    if not paragraphs:
                        yield schemas.reject(source, page.offset, "empty_article",
                                             f"{label}\t{article.wikitext[:1000]}")
                        continue
                    yield (documents_lib.document_key(name, article.page_id), paragraphs, False)

    def _read_parquet(self, work):
        import pyarrow.parquet as pq
        path, group = work["path"], work["start"]
        try:
            with _open_raw(path) as handle:
                parquet_file = pq.ParquetFile(handle)
                _check_text_column(path, parquet_file.schema_arrow)
                names = set(parquet_file.schema_arrow.names)
                columns = [name for name in ("id", "title", "text") if name in names]
                table = parquet_file.read_row_group(group, columns=columns)
                first_row = sum(parquet_file.metadata.row_group(g).num_rows for g in range(group))
        except (pa.ArrowInvalid, OSError) as error:
            raise InputError(f"{path}: not a readable Parquet file ({str(error).splitlines()[0]}); download it "
                             "again or check --input_format") from None
        rows = table.to_pydict()
        for index, text in enumerate(rows["text"]):
            row_index = first_row + index
            local_id = rows["id"][index] if "id" in rows and rows["id"][index] is not None else row_index
            paragraphs = [line for line in (documents_lib.normalize_text(p) for p in (text or "").split("\n"))
                          if line]
            if not paragraphs:
                yield schemas.reject(path, row_index, "empty_article",
                                     {k: rows[k][index] for k in rows})
                continue
            yield (documents_lib.document_key(work["name"], local_id), paragraphs, False)

    def _read_text(self, work):
        path = work["path"]
        with sources.open_input(path) as handle:
            for item in documents_lib.iter_text_documents(sources.iter_lines(handle)):
                if isinstance(item, documents_lib.BadLine):
                    yield schemas.reject(path, item.offset, item.reason, item.raw)
                else:
                    yield (documents_lib.document_key(work["name"], item.offset), item.lines, True)


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
    of the tokenizer knows as a special added token: the newline comes back as its own id between the sentences' ids, so one
    Encoding per document replaces one per sentence (an eighth of the tokenizing time here). Sentences never hold a
    newline (`documents.normalize_text`), added tokens are cut out before the normalizer and pre-tokenizer run,
    and a WordPiece pre-tokenizer splits at whitespace anyway, so every sentence's ids are those of encoding it
    alone; `setup()` checks that on probe sentences and encodes sentence by sentence if a tokenizer disagrees.

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

    def __init__(self, *, seed: int, epochs: int, docs_per_bucket: int):
        self._seed = seed
        self._epochs = epochs
        self._docs_per_bucket = docs_per_bucket

    def process(self, element, counts):
        key, _ = element
        num_documents = counts.get((COUNTS_TABLE, "documents"), 0)
        num_buckets = max(1, math.ceil(num_documents / self._docs_per_bucket))
        for epoch in range(self._epochs):
            bucket = seeds.stable_hash(("bucket", self._seed, epoch, key)) % num_buckets
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

    def __init__(self, *, seed: int, mode: str, config: instances_lib.InstanceConfig,
                 special: instances_lib.SpecialTokens, continuation_ids: frozenset, typecode: str, num_shards: int,
                 schema: pa.Schema, show_progress: bool = False, epochs: int = 1):
        self._show_progress = show_progress
        self._epochs = epochs
        self._num_shards = num_shards
        self._seed = seed
        self._mode = mode
        self._config = config
        self._special = special
        self._continuation_ids = continuation_ids
        self._typecode = typecode
        self._schema = schema
        self._lonely = Metrics.counter("CreateInstances", "buckets_of_one_document")

    def process(self, element, counts=None):
        (epoch, _), members = element
        members = sorted(members, key=lambda kv: kv[0])  # bucket order must not depend on bundle order
        keys = [key for key, _ in members]
        docs = [_unpack_document(packed, self._typecode) for _, packed in members]
        del members
        if len(docs) == 1 and self._mode == "pairs":
            self._lonely.inc()
        cumulative = instances_lib.cumulative_counts([len(doc) for doc in docs])  # once per bucket, not per draw
        instances = tokens = 0
        batches: Dict[int, _InstanceBatch] = {}
        for index, key in enumerate(keys):
            rng = random.Random(seeds.stable_hash(("instances", self._seed, epoch, key)))
            if self._mode == "pairs":
                made = instances_lib.create_pair_instances(docs, index, rng, config=self._config,
                                                           special=self._special,
                                                           continuation_ids=self._continuation_ids,
                                                           cumulative=cumulative)
            else:
                made = instances_lib.create_single_segment_instances(docs[index], rng, config=self._config,
                                                                     special=self._special,
                                                                     continuation_ids=self._continuation_ids)
            for number, instance in enumerate(made):
                instance_id = f"{key}:{number}"
                tokens += len(instance.input_ids)
                shard = outputs.shard_of(instance_id, self._num_shards)
                batch = batches.get(shard)
                if batch is None:
                    batch = batches[shard] = _InstanceBatch()
                batch.append(instance_id, instance)
                if len(batch) >= self.BATCH_ROWS:
                    yield (epoch, shard), outputs.encode_batch(batch.to_record_batch(self._schema))
                    del batches[shard]
            instances += len(made)
        if self._show_progress:
            total = (counts or {}).get((COUNTS_TABLE, "documents"), 0) * self._epochs
            progress.advance("documents cut into instances (all epochs)", len(keys), total=total)
        for shard, batch in sorted(batches.items()):
            yield (epoch, shard), outputs.encode_batch(batch.to_record_batch(self._schema))
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


class ReadDocuments(beam.PTransform):
    """Input files to documents (key, paragraphs, already_split).

    Args:
      files: [{"path", "bytes"}] from `sources.input_files`.
      input_format: one of INPUT_FORMATS.
      split_bytes: work range size for splittable dumps.
      wiki_markup: one of WIKI_MARKUPS, how wikipedia-xml pages become paragraphs.

    Returns:
      A DoOutputsTuple: main = documents, `rejects` = reject rows.
    """

    def __init__(self, files: Sequence[Dict[str, Any]], *, input_format: str, split_bytes: int,
                 wiki_markup: str = "fast", show_progress: bool = False):
        super().__init__()
        self._show_progress = show_progress
        self._files = list(files)
        self._input_format = input_format
        self._split_bytes = split_bytes
        self._wiki_markup = wiki_markup

    def expand(self, pipeline):
        # Document keys start with each file's path relative to the folder all inputs share: unique even where
        # two folders hold files of one name (the `wikimedia/wikipedia` layout).
        names = sources.relative_names([f["path"] for f in self._files])
        files = [dict(f, name=names[f["path"]]) for f in self._files]
        # Not beam.Create: it reshuffles several elements, and SpreadRanges below spreads the work items anyway.
        return (pipeline
                | "Start" >> beam.Impulse()
                | "ListInputs" >> beam.FlatMap(lambda _: files)
                | "SplitInputs" >> beam.ParDo(SplitInputFn(self._input_format, self._split_bytes))
                # One file fans out to many ranges: spread them over the workers before reading.
                | "SpreadRanges" >> beam.Reshuffle()
                | "ReadRanges" >> beam.ParDo(ReadDocumentsFn(self._input_format, self._wiki_markup,
                                                             show_progress=self._show_progress)).with_outputs(
                    ReadDocumentsFn.REJECTS, main="documents"))


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
    """Tokenized documents to instances of every epoch, drawn per random-next bucket.

    Returns:
      A DoOutputsTuple: main = ((epoch, shard), encoded rows) for `outputs.WriteBatchedShards`, `counts`
      (instances, instance_tokens).
    """

    def __init__(self, document_counts: beam.PCollection, *, seed: int, epochs: int, docs_per_bucket: int,
                 mode: str, config: instances_lib.InstanceConfig, special: instances_lib.SpecialTokens,
                 continuation_ids: frozenset, typecode: str, num_shards: int, schema: pa.Schema,
                 show_progress: bool = False):
        """Args:
          document_counts: the summed `counts` of `TokenizeDocuments` (((COUNTS_TABLE, "documents"), n) among
            them), read as a side input for the number of buckets.
          seed, epochs, docs_per_bucket: the bucket assignment's (and, seed and epochs, the instances') settings.
          mode, config, special, continuation_ids, typecode, num_shards, schema, show_progress: as
            `CreateInstancesFn` takes them.
        """
        super().__init__()
        self._document_counts = document_counts
        self._seed = seed
        self._epochs = epochs
        self._docs_per_bucket = docs_per_bucket
        self._fn = CreateInstancesFn(seed=seed, mode=mode, config=config, special=special,
                                     continuation_ids=continuation_ids, typecode=typecode, num_shards=num_shards,
                                     schema=schema, show_progress=show_progress, epochs=epochs)

    def expand(self, documents):
        return (documents
                | "AssignBuckets" >> beam.ParDo(
                    AssignBucketsFn(seed=self._seed, epochs=self._epochs, docs_per_bucket=self._docs_per_bucket),
                    counts=beam.pvalue.AsDict(self._document_counts))
                | "GroupBuckets" >> beam.GroupByKey()
                | "MakeInstances" >> beam.ParDo(self._fn, counts=beam.pvalue.AsDict(self._document_counts)).with_outputs(
                    CreateInstancesFn.COUNTS, main="instances"))


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def _checked_pages(pages, path: str):
    """`pages`, with a damaged dump stream turned into the one line that stops the run."""
    try:
        yield from pages
    except wiki.DamagedStream as error:
        raise InputError(f"{path}: damaged dump: {error}; download the file again") from None


def _diagnose(input_format: str, path: str) -> str:
    """The likely cause of a run whose records were (nearly) all rejected, as a short clause, or ""."""
    if input_format != "text":
        return ""
    head = sources.sniff(path, 200)
    if head.startswith(b"PAR1"):
        return "the input looks like Parquet: pass --input_format wikipedia-parquet"
    if head.lstrip().startswith(b"<mediawiki"):
        return "the input looks like a Wikipedia dump: pass --input_format wikipedia-xml"
    return ""


def _check_text_column(path: str, schema: pa.Schema) -> None:
    """A `wikimedia/wikipedia`-layout file has a string `text` column; anything else is the wrong file.

    Raises:
      InputError: no `text` column, or one that is not text.
    """
    if "text" not in schema.names:
        raise InputError(f"{path}: no 'text' column (columns: {', '.join(schema.names[:12])}); wikipedia-parquet "
                         "reads the wikimedia/wikipedia layout (id, url, title, text)")
    kind = schema.field("text").type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise InputError(f"{path}: column 'text' is {kind}, not text; wikipedia-parquet reads the "
                         "wikimedia/wikipedia layout (id, url, title, text)")


def _open_raw(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _excerpt(data: bytes, limit: int = 2000) -> str:
    return data[:limit].decode("utf-8", errors="backslashreplace")


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


def _instance_stats(rows) -> Dict[str, int]:
    if isinstance(rows, pa.Table):  # a shard from WriteBatchedShards
        return {"tokens": int(pc.sum(pc.list_value_length(rows["input_ids"])).as_py() or 0)}
    return {"tokens": sum(len(row["input_ids"]) for row in rows)}


def _reject_key(row: Dict[str, Any]) -> str:
    return f"{row['source']}\x00{row['row_index']:016d}\x00{row['reason']}"


def _special_tokens(tokenizer: tokenizer_lib.LoadedTokenizer) -> instances_lib.SpecialTokens:
    ids = {name: tokenizer.special_id(name) for name in ("cls_token", "sep_token", "mask_token")}
    missing = [f"{name}_id" for name, value in ids.items() if value is None]
    if missing:
        raise UserError(f"tokenizer lacks {', '.join(missing)}; a BERT-style WordPiece tokenizer is needed")
    filler = tokenizer.backend.token_to_id(".")
    return instances_lib.SpecialTokens(
        cls_id=ids["cls_token"], sep_id=ids["sep_token"], mask_id=ids["mask_token"],
        filler_id=filler if filler is not None else ids["sep_token"],
        vocab_size=tokenizer.backend.get_vocab_size(with_added_tokens=True))


# ---------------------------------------------------------------------------------------------------------------
# Entry point


# Reject reasons that are skips by design, not bad input: they do not count towards --max_reject_fraction (a real
# dump holds about as many redirects as articles, and pages that are all templates or tables: empty after markup).
SKIP_REASONS = ("redirect", "not_article", "duplicate_document", "empty_article")
MIN_SEQ_LEN = 8  # [CLS] A [SEP] B [SEP] with a few tokens on each side


def _check_options(config: CorpusConfig) -> None:
    """One line for the first option value that cannot work.

    Raises:
      UserError: the option and what it accepts.
    """
    if not config.input or not config.output:
        raise UserError("--input and --output are required (e.g. --input 'wiki/*.xml.bz2' --output out/general)")
    if config.input_format not in INPUT_FORMATS:
        raise UserError(f"--input_format must be one of {', '.join(INPUT_FORMATS)} (got {config.input_format})")
    for name in ("epochs", "num_shards", "docs_per_bucket", "split_bytes", "max_predictions_per_seq"):
        if getattr(config, name) < 1:
            raise UserError(f"--{name} must be at least 1 (got {getattr(config, name)})")
    if not MIN_SEQ_LEN <= config.max_seq_len <= 32767:
        raise UserError(f"--max_seq_len must be within [{MIN_SEQ_LEN}, 32767] (got {config.max_seq_len}): an "
                        "instance holds [CLS], [SEP]s and tokens of its segments, and positions are int16")
    for name in ("short_seq_prob", "masked_lm_prob", "max_reject_fraction"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise UserError(f"--{name} must be within [0, 1] (got {getattr(config, name)})")


def run(argv: Optional[Sequence[str]] = None, save_main_session: bool = False) -> Optional[Dict[str, Any]]:
    """Runs the pipeline, prints a summary and returns the manifest it wrote.

    `save_main_session` stays False: every DoFn lives in an importable module of the installed package.

    Raises:
      UserError: one line for unusable options, a missing or damaged input, an unloadable tokenizer, an output
        that is not ours to write, or a run whose records were (nearly) all rejected.
    """
    started = time.time()
    pipeline_options = cli.options_or_help(list(argv or []), prog="python -m pipelines.corpus", doc=__doc__,
                                           pipeline_options=CorpusOptions)
    if pipeline_options is None:
        return None
    # Workers on other machines or in other folders (a Dask worker's cwd) read local paths as absolute ones.
    config = CorpusConfig.from_options(pipeline_options)
    pipeline_options.view_as(SetupOptions).save_main_session = save_main_session
    # No transform here declares type hints, so Beam's construction-time check has nothing to check; it would only
    # infer element types by decompiling every lambda, a fifth of the run's start-up. (Runtime checks are separate.)
    pipeline_options.view_as(TypeOptions).pipeline_type_check = False
    try:
        instance_config = instances_lib.InstanceConfig(
            max_seq_len=config.max_seq_len, short_seq_prob=config.short_seq_prob,
            masked_lm_prob=config.masked_lm_prob, max_predictions_per_seq=config.max_predictions_per_seq,
            whole_word_mask=config.whole_word_mask)
    except ValueError as error:
        raise UserError(str(error)) from None
    files = sources.input_files(config.input)
    if all(f["bytes"] == 0 for f in files):
        raise UserError(f"--input {config.input} is empty ({len(files)} file(s) of 0 bytes)")
    try:
        tokenizer = tokenizer_lib.load(config.tokenizer)
    except tokenizer_lib.TokenizerError as error:
        raise UserError(f"{error}; pass --tokenizer a hub name (reachable or in the local cache) or a "
                        "directory holding a fast tokenizer") from None
    special = _special_tokens(tokenizer)
    typecode = token_typecode(special.vocab_size)
    continuation_ids = frozenset()
    if config.whole_word_mask:
        continuation_ids = frozenset(i for t, i in tokenizer.backend.get_vocab(with_added_tokens=True).items()
                                     if t.startswith("##"))
    try:
        run_id = outputs.claim_output_dir(config.output, overwrite=config.overwrite)
    except outputs.OutputExistsError as error:
        raise UserError(str(error)) from None
    progress.reset()
    logging.info("corpus: %s %s (%d file(s), %s) -> %s", config.input_format, config.input, len(files),
                 outputs.human_bytes(sum(f["bytes"] for f in files)), config.output)

    header = {
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
        "token_dtype": token_dtype_name(special.vocab_size),
    }
    schema = instance_schema(special.vocab_size)
    epoch_sets = [outputs.ShardSet(f"epoch-{epoch}", config.num_shards, schema, stats=_instance_stats)
                  for epoch in range(config.epochs)]
    rejects_set = outputs.ShardSet(layout.REJECTS_SUBDIR, config.num_shards, schemas.REJECT_SCHEMA)

    with beam.Pipeline(runner=resolve_runner(pipeline_options), options=pipeline_options) as pipeline:
        read = pipeline | "ReadDocuments" >> ReadDocuments(files, input_format=config.input_format,
                                                           split_bytes=config.split_bytes,
                                                           wiki_markup=config.wiki_markup,
                                                           show_progress=not config.quiet)
        split = read.documents | "SplitSentences" >> beam.ParDo(SplitSentencesFn()).with_outputs(
            SplitSentencesFn.REJECTS, main="documents")
        reject_parts = [read.rejects, split.rejects]
        documents = split.documents
        if config.dedup:
            deduped = documents | "DropDuplicateDocuments" >> DropDuplicateDocuments()
            documents = deduped["documents"]
            reject_parts.append(deduped["rejects"])
        tokenized = documents | "TokenizeDocuments" >> TokenizeDocuments(tokenizer.to_json(), typecode)
        reject_parts.append(tokenized.rejects)
        # Summed once: the manifest's counts, and the document count that sets the number of buckets.
        document_counts = tokenized.counts | "SumDocumentCounts" >> outputs.CountByKey()
        made = tokenized.documents | "CreateInstances" >> CreateInstances(
            document_counts, seed=config.seed, epochs=config.epochs, docs_per_bucket=config.docs_per_bucket,
            mode=config.instance_mode, config=instance_config, special=special, continuation_ids=continuation_ids,
            typecode=typecode, num_shards=config.num_shards, schema=schema, show_progress=not config.quiet)
        # Every epoch's shards through one sink: the row batches are keyed (epoch, shard) already.
        instance_stats = made.instances | "WriteInstances" >> outputs.WriteBatchedShards(
            config.output, epoch_sets, sort_by="instance_id")
        shard_stats = {shard_set.subdir: (shard_set, instance_stats) for shard_set in epoch_sets}
        rejects = reject_parts | "FlattenRejects" >> beam.Flatten()
        shard_stats[rejects_set.subdir] = (rejects_set, rejects | "WriteRejects" >> outputs.WriteShards(
            config.output, rejects_set, key_fn=_reject_key))
        # Every manifest count in one CombinePerKey (a stage each): ((table, key), n) pairs.
        counts = ((document_counts, made.counts,
                   rejects | "RejectReasons" >> beam.Map(lambda row: ((REJECTS_TABLE, row["reason"]), 1)))
                  | "FlattenCounts" >> beam.Flatten()
                  | "SumCounts" >> outputs.CountByKey())
        quality = outputs.QualityRule(accepted=(COUNTS_TABLE, "documents"), rejects=REJECTS_TABLE,
                                      max_reject_fraction=config.max_reject_fraction, ignore=SKIP_REASONS)
        report_done = None
        if not config.no_report:  # report/, written before the manifest and _SUCCESS (which wait for it)
            histograms = report.corpus_histograms(max_seq_len=config.max_seq_len)
            report_stats = (
                (made.instances | "InstanceReportStats" >> beam.Map(report.instance_batch_stats,
                                                                    length_hist=histograms[0]),
                 tokenized.documents | "DocumentReportStats" >> beam.Map(
                     report.document_stats, itemsize=np.dtype(typecode).itemsize, tokens_hist=histograms[1]))
                | "FlattenReportStats" >> beam.Flatten()
                | "SumReportStats" >> report.SumReportStats())
            report_done = pipeline | "WriteReport" >> report.WriteReport(
                config.output, KIND, stats=report_stats, named_counts=counts, histograms=histograms, run_id=run_id,
                settings={"instance_mode": config.instance_mode, "max_seq_len": config.max_seq_len,
                          "epochs": config.epochs, "seed": config.seed})
        _ = pipeline | "FinalizeOutput" >> outputs.FinalizeOutput(
            output_dir=config.output, header=header, shard_stats=shard_stats,
            named_counts=((COUNTS_TABLE, REJECTS_TABLE), counts), quality=quality,
            dataset_card={"data_glob": "epoch-*/*.parquet"}, run_id=run_id, manifest_fields=report_done)

    manifest = outputs.read_manifest(config.output, require_success=False)
    outputs.raise_if_failed(manifest, config.output, hint=lambda: _diagnose(config.input_format, files[0]["path"]))
    corpus_counts = manifest["counts"].get(COUNTS_TABLE, {})
    extra = [f"documents {corpus_counts.get('documents', 0):,}, sentences {corpus_counts.get('sentences', 0):,}, "
             f"tokens {corpus_counts.get('tokens', 0):,} -> {corpus_counts.get('instances', 0):,} instances over "
             f"{config.epochs} epoch(s)"]
    print(outputs.summary("corpus", manifest, config.shown_output, time.time() - started, rows_output="",
                          extra=extra), flush=True)
    return manifest


def main(argv: Optional[Sequence[str]] = None) -> None:
    cli.run_main(run, argv)
