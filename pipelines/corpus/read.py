"""Input files to documents: work items (byte ranges of a dump or of a text file, Parquet row groups, whole
compressed text files), then the documents of Wikipedia XML dumps, `wikimedia/wikipedia` Parquet files and plain text, bad records as rejects.

A document is (key, paragraphs, already_split): its key starts with the file's name relative to the folder all
inputs share; text input comes already split into sentences (one a line), the others as paragraphs.
"""

import dataclasses
import logging
from typing import Any, Dict, Optional, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from contract import compression as compression_lib
from contract import schemas
from contract.errors import InputError
from corpus import documents as documents_lib
from corpus import text_ranges, wiki
from pipelines import cli, progress, sources


@dataclasses.dataclass(frozen=True)
class ReadSettings:
    """How input files become documents.

    Attributes:
      input_format: one of config.INPUT_FORMATS.
      split_bytes: work range size for splittable dumps and uncompressed text.
      wiki_markup: one of config.WIKI_MARKUPS, how wikipedia-xml pages become paragraphs.
      show_progress: count the documents read in the progress lines.
      errors_dir: where a worker records the InputError it stops with (`cli.errors_dir`); None records nothing.
    """
    input_format: str
    split_bytes: int
    wiki_markup: str = "fast"
    show_progress: bool = False
    errors_dir: Optional[str] = None


class SplitInputFn(beam.DoFn):
    """An input file to work items: byte ranges of a splittable dump or of uncompressed text, Parquet row groups, or
    the whole file (compressed text: logged once per file where it is larger than a range)."""

    def __init__(self, settings: ReadSettings):
        self._settings = settings
        self.errors_dir = settings.errors_dir

    @cli.reports_user_errors
    def process(self, file_info):
        path, size, name = file_info["path"], file_info["bytes"], file_info["name"]
        if self._settings.input_format == "wikipedia-xml":
            for _, start, end in wiki.plan_ranges(path, size, split_bytes=self._settings.split_bytes,
                                                  open_fn=_open_raw):
                yield {"path": path, "name": name, "start": start, "end": end, "size": size}
        elif self._settings.input_format == "wikipedia-parquet":
            import pyarrow.parquet as pq
            try:
                with _open_raw(path) as handle:
                    parquet_file = pq.ParquetFile(handle)
                    _check_text_column(path, parquet_file.schema_arrow)
                    num_row_groups = parquet_file.num_row_groups
                    repeated = _repeated_ids(parquet_file)
            except (pa.ArrowInvalid, OSError) as error:
                raise InputError(f"{path}: not a readable Parquet file ({str(error).splitlines()[0]}); download "
                                 "it again or check --input_format") from None
            for group in range(num_row_groups):
                yield {"path": path, "name": name, "start": group, "end": group + 1, "size": size,
                       "repeated_ids": repeated}
        else:
            with _open_raw(path) as handle:
                compression = compression_lib.compression_of(handle.read(compression_lib.HEAD_BYTES))
            if compression is None:
                for start, end in text_ranges.plan_ranges(size, self._settings.split_bytes):
                    yield {"path": path, "name": name, "start": start, "end": end, "size": size}
                return
            if size > self._settings.split_bytes and compression in ("gzip", "bz2", "xz"):  # others: refused on read
                logging.warning("%s: %s text cannot be split into --split_bytes ranges (a %s stream is only read "
                                "from its start), so one worker reads all of it; decompress it to spread it over "
                                "the workers", path, compression, compression)
            yield {"path": path, "name": name, "start": 0, "end": size, "size": size, "compressed": True}


class ReadDocumentsFn(beam.DoFn):
    """A work item to documents (key, paragraphs, already_split); bad records go to REJECTS."""
    REJECTS = "rejects"

    def __init__(self, settings: ReadSettings):
        self._settings = settings
        self.errors_dir = settings.errors_dir
        self._rejected = Metrics.counter("ReadDocuments", "rejected")
        self._read = Metrics.counter("ReadDocuments", "documents")

    @cli.reports_user_errors
    def process(self, work):
        reader = {"wikipedia-xml": self._read_xml, "wikipedia-parquet": self._read_parquet,
                  "text": self._read_text}[self._settings.input_format]
        for item in reader(work):
            if isinstance(item, dict):
                self._rejected.inc()
                yield beam.pvalue.TaggedOutput(self.REJECTS, item)
            else:
                self._read.inc()
                if self._settings.show_progress:
                    progress.advance("documents read", 1)
                yield item

    def _read_xml(self, work):
        path, start, end = work["path"], work["start"], work["end"]
        name = work["name"]
        to_paragraphs = wiki.MARKUP_STRIPPERS[self._settings.wiki_markup]
        with _open_raw(path) as handle:
            for page in _checked_pages(wiki.iter_pages(handle, path, start, end, work["size"]), path):
                # A reject names its page the same way whatever range read it: a plain dump's page by its file
                # offset, a multistream bz2 dump's by its stream ("path@stream offset") and its offset there.
                source = path if page.stream is None else f"{path}@{page.stream}"
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
        repeated = work.get("repeated_ids") or {}
        for index, text in enumerate(rows["text"]):
            row_index = first_row + index
            local_id = rows["id"][index] if "id" in rows and rows["id"][index] is not None else row_index
            if str(local_id) in repeated and repeated[str(local_id)] != row_index:
                yield schemas.reject(path, row_index, "duplicate_id",
                                     {"first_row": repeated[str(local_id)], **{k: rows[k][index] for k in rows}})
                continue
            paragraphs = [line for line in (documents_lib.normalize_text(p) for p in (text or "").split("\n"))
                          if line]
            if not paragraphs:
                yield schemas.reject(path, row_index, "empty_article",
                                     {k: rows[k][index] for k in rows})
                continue
            yield (documents_lib.document_key(work["name"], local_id), paragraphs, False)

    def _read_text(self, work):
        path = work["path"]
        with (sources.open_input(path) if work.get("compressed") else _open_raw(path)) as handle:
            if work.get("compressed"):
                items = documents_lib.iter_text_documents(sources.iter_lines(handle))
            else:
                items = text_ranges.iter_range_documents(handle, work["start"], work["end"],
                                                         iter_lines=sources.iter_lines)
            for item in items:
                if isinstance(item, documents_lib.BadLine):
                    yield schemas.reject(path, item.offset, item.reason, item.raw)
                else:
                    yield (documents_lib.document_key(work["name"], item.offset), item.lines, True)


class ReadDocuments(beam.PTransform):
    """Input files to documents (key, paragraphs, already_split).

    Args:
      files: [{"path", "bytes"}] from `sources.input_files`.
      settings: the input format and how to read it.

    Returns:
      A DoOutputsTuple: main = documents, `rejects` = reject rows.

    Raises:
      InputError (on a worker): a damaged dump or a file that is not of the input format.
    """

    def __init__(self, files: Sequence[Dict[str, Any]], settings: ReadSettings):
        super().__init__()
        self._files = list(files)
        self._settings = settings

    def expand(self, pipeline):
        # Document keys start with each file's path relative to the folder all inputs share: unique even where
        # two folders hold files of one name (the `wikimedia/wikipedia` layout).
        names = sources.relative_names([f["path"] for f in self._files])
        files = [dict(f, name=names[f["path"]]) for f in self._files]
        # Not beam.Create: it reshuffles several elements, and SpreadRanges below spreads the work items anyway.
        return (pipeline
                | "Start" >> beam.Impulse()
                | "ListInputs" >> beam.FlatMap(lambda _: files)
                | "SplitInputs" >> beam.ParDo(SplitInputFn(self._settings))
                # One file fans out to many ranges: spread them over the workers before reading.
                | "SpreadRanges" >> beam.Reshuffle()
                | "ReadRanges" >> beam.ParDo(ReadDocumentsFn(self._settings)).with_outputs(
                    ReadDocumentsFn.REJECTS, main="documents"))


def diagnose(input_format: str, path: str) -> str:
    """The likely cause of a run whose records were (nearly) all rejected, as a short clause, or ""."""
    if input_format != "text":
        return ""
    head = sources.sniff(path, 200)
    if head.startswith(b"PAR1"):
        return "the input looks like Parquet: pass --input_format wikipedia-parquet"
    if head.lstrip().startswith(b"<mediawiki"):
        return "the input looks like a Wikipedia dump: pass --input_format wikipedia-xml"
    return ""


def _repeated_ids(parquet_file) -> Dict[str, int]:
    """{id: the row that has it first} of the ids that more than one row of the file has: a document's key is its
    file and id, so only the first row of an id is read, the others are `duplicate_id` rejects (their text is kept
    there). Reads the id column alone."""
    if "id" not in parquet_file.schema_arrow.names:
        return {}
    first: Dict[str, int] = {}
    repeated: Dict[str, int] = {}
    for row_index, value in enumerate(parquet_file.read(columns=["id"]).column("id").to_pylist()):
        if value is None:
            continue
        key = str(value)
        if key in first:
            repeated[key] = first[key]
        else:
            first[key] = row_index
    return repeated


def _checked_pages(pages, path: str):
    """`pages`, with a damaged dump stream turned into the one line that stops the run."""
    try:
        yield from pages
    except wiki.DamagedStream as error:
        raise InputError(f"{path}: damaged dump: {error}; download the file again") from None


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
