"""The augmentation's input: which files and task (`resolve_input`), and one reader per format.

Every reader yields `(row index, Example, None)` for a usable record and `(row index, None, (reason, raw record))`
for one that goes to rejects/. Files stream record by record (memory stays flat whatever the file size). A damaged
file (a truncated gzip or bz2 stream, a CSV whose quoting never closes, a Parquet file that is not one) raises
`InputError`: the run stops with one line naming the file.
"""

import dataclasses
import json
import os
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from augment.tasks import (Example, RejectedRecord, generic_task, parse_glue_row, parse_hub_row, parse_named_row,
                           resolve_task)
from contract.tasks import Task
from contract.errors import InputError, UserError
from pipelines import sources
from pipelines.augment.config import AugmentConfig

# (row index, the Example or None, (reject reason, raw record) or None)
Record = Tuple[int, Optional[Example], Optional[Tuple[str, Any]]]


@dataclasses.dataclass(frozen=True)
class InputLayout:
    """Where the records of the input keep their fields.

    Attributes:
      task: the task's fields.
      input_format: tsv, csv, jsonl or parquet.
      label_field, id_field: a generic task's label and id columns (None for GLUE tasks).
    """
    task: Task
    input_format: str
    label_field: Optional[str] = None
    id_field: Optional[str] = None


class ResolvedInput(NamedTuple):
    """What run() settled about the input once: the matched files, and where their fields are."""
    files: List[Dict[str, Any]]
    layout: InputLayout


def resolve_input(config: AugmentConfig) -> ResolvedInput:
    """The input files (matched once) and the task they hold.

    Raises:
      UserError: nothing matches --input, an unknown task, a generic task without --text_columns, a format that
        cannot be told, an empty input file.
    """
    files = sources.input_files(config.input)
    layout = _resolve_layout(config, files[0]["path"])
    if all(f["bytes"] == 0 for f in files):
        raise UserError(f"--input {config.input} is empty ({len(files)} file(s) of 0 bytes)")
    return ResolvedInput(files, layout)


def _format_of(path: str) -> Optional[str]:
    """The format a file's content (Parquet's magic bytes) or name tells, or None."""
    name = path.lower()
    for suffix in (".gz", ".bz2"):
        name = name[:-len(suffix)] if name.endswith(suffix) else name
    ext = name.rsplit(".", 1)[-1]
    if sources.sniff(path, 4).startswith(b"PAR1"):
        return "parquet"
    return {"tsv": "tsv", "csv": "csv", "jsonl": "jsonl", "json": "jsonl", "parquet": "parquet"}.get(ext)


def _resolve_layout(config: AugmentConfig, first_path: str) -> InputLayout:
    if config.task.lower() == "generic":
        if not config.text_columns:
            raise UserError("--task generic needs --text_columns (and usually --label_column)")
        fmt = config.input_format if config.input_format != "auto" else _format_of(first_path)
        if fmt is None:
            raise UserError(f"cannot tell the format of {first_path}; pass --input_format tsv|csv|jsonl|parquet")
        labels = [label.strip() for label in config.label_list.split(",")] if config.label_list else None
        task = generic_task([c.strip() for c in config.text_columns.split(",")], config.label_column, labels)
        return InputLayout(task, fmt, config.label_column, config.id_column)
    try:
        task = resolve_task(config.task)
    except KeyError as error:
        raise UserError(error.args[0]) from None
    fmt = config.input_format if config.input_format != "auto" else (_format_of(first_path) or "tsv")
    if fmt not in ("tsv", "parquet"):
        raise UserError(f"GLUE task {task.name} reads its train.tsv or the hub's Parquet (columns "
                        f"{', '.join(task.hub_text_columns)}, label, idx); --input_format must be tsv or "
                        "parquet, or use --task generic")
    return InputLayout(task, fmt)


def read_header(path: str, layout: InputLayout) -> Optional[str]:
    """The header line train_aug.tsv starts with (the input's own, as the reference copies it), or None."""
    task, fmt = layout.task, layout.input_format
    if fmt == "parquet" and task.text_columns is not None:  # hub Parquet of a GLUE task: the GLUE layout
        header = task.glue_header
        return "\t".join(header) if header else None
    if not task.has_header or fmt in ("jsonl", "parquet"):
        return None
    if task.text_columns is None:
        return "\t".join(list(task.text_fields) + ["label"])
    with sources.open_input(path) as handle:
        for _, first in sources.iter_lines(handle):
            return sources.strip_bom(first).decode("utf-8", errors="replace")
    return None


def diagnose(resolved: ResolvedInput, reasons: Dict[str, int], config: AugmentConfig) -> str:
    """The likely cause of a run whose records were (nearly) all rejected, as a short clause, or ""."""
    path = resolved.files[0]["path"]
    task, fmt = resolved.layout.task, resolved.layout.input_format
    head = sources.sniff(path)
    if head.startswith(b"PAR1") and fmt != "parquet":
        return f"{os.path.basename(path)} looks like Parquet: pass --input_format parquet"
    if head[:1] in (b"{", b"[") and fmt in ("tsv", "csv"):
        return f"{os.path.basename(path)} looks like JSON lines: pass --input_format jsonl"
    first = sources.strip_bom(head.splitlines()[0] if head.splitlines() else b"").decode("utf-8", "replace")
    top = max(reasons, key=reasons.get) if reasons else ""
    if task.text_columns is not None and fmt == "tsv":
        columns = first.split("\t")
        expected = task.glue_header
        if expected and len(columns) != len(expected) or top == "wrong_column_count":
            expected_layout = "<TAB>".join(expected) if expected else f"{task.num_columns} tab-separated columns"
            return (f"the header has {len(columns)} column{'s' * (len(columns) != 1)}; {task.name} expects "
                    f"{expected_layout}" + (" (a CSV? use --task generic --input_format csv)" if "," in first else ""))
    if top == "missing_column":
        found = (first.split("\t") if fmt == "tsv" else first.split(",")) if fmt in ("tsv", "csv") else []
        wanted = list(task.text_fields) + ([config.label_column] if config.label_column else [])
        return (f"the input's columns are {found[:12]}; --text_columns/--label_column name {wanted}"
                if found else f"--text_columns/--label_column name {wanted}; check them against the input's fields")
    if top == "bad_label" and task.labels:
        return f"labels must be one of {list(task.labels)} (--label_list)"
    if top == "undecodable_utf8":
        return "the input is not UTF-8 text; convert it (e.g. iconv -t utf-8)"
    return ""


# ----------------------------------------------------------------------------------------------------- readers
def read_records(path: str, layout: InputLayout) -> Iterator[Record]:
    """The records of one input file, in file order.

    Raises:
      InputError: a damaged file.
    """
    if layout.input_format == "parquet":
        yield from _parquet_records(path, layout)
        return
    with sources.open_input(path) as handle:
        if layout.input_format == "csv":
            yield from _csv_records(handle, layout)
        elif layout.input_format == "jsonl":
            yield from _jsonl_records(handle, layout)
        else:
            yield from _tsv_records(handle, layout)


def _tsv_records(handle, layout: InputLayout) -> Iterator[Record]:
    """GLUE files by column index, read without quoting as the reference reads them; generic ones by header name."""
    task = layout.task
    lines = _lines(handle)
    header: Optional[List[str]] = None
    num_columns = task.num_columns
    if task.has_header:
        first = next(lines, None)
        if first is None:
            return
        header = first.decode("utf-8", errors="replace").split("\t")
        num_columns = num_columns or len(header)
    for row_index, raw, line in _decoded(lines):
        if line is None:
            yield row_index, None, ("undecodable_utf8", raw)
            continue
        cells = line.split("\t")
        try:
            if task.text_columns is not None:
                yield row_index, parse_glue_row(task, cells, row_index, num_columns), None
            elif len(cells) != len(header):
                raise RejectedRecord("wrong_column_count", f"{len(cells)} columns, expected {len(header)}")
            else:
                yield _named(layout, dict(zip(header, cells)), row_index, line)
        except RejectedRecord as error:
            yield row_index, None, (error.reason, line)


def _jsonl_records(handle, layout: InputLayout) -> Iterator[Record]:
    """One JSON object per line, fields by name."""
    for row_index, raw, line in _decoded(_lines(handle)):
        if line is None:
            yield row_index, None, ("undecodable_utf8", raw)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            yield row_index, None, ("bad_json", line)
            continue
        yield _named(layout, record, row_index, line)


def _csv_records(handle, layout: InputLayout) -> Iterator[Record]:
    """A header row, then records by its names (quoted fields may hold commas and line breaks)."""
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
            yield _named(layout, dict(zip(header, cells)), row_index, raw)
        row_index += 1


def _parquet_records(path: str, layout: InputLayout) -> Iterator[Record]:
    """A GLUE task's hub Parquet (its label names from the file's metadata), or a generic table by column name."""
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            table = pq.ParquetFile(handle)
            hub = hub_label_names(layout.task, table.schema_arrow) if layout.task.text_columns else None
            row_index = 0
            for batch in table.iter_batches(batch_size=4096):
                for record in batch.to_pylist():
                    if hub is not None:
                        yield _hub(layout, record, row_index, hub)
                    else:
                        yield _named(layout, record, row_index, record)
                    row_index += 1
    except (pa.ArrowInvalid, OSError) as error:
        raise InputError(f"{path}: not a readable Parquet file ({str(error).splitlines()[0]}); "
                         "check the file or --input_format") from None


def hub_label_names(task: Task, schema: pa.Schema) -> Optional[List[str]]:
    """The label names a hub Parquet file declares (its `huggingface` schema metadata), else the known GLUE ones."""
    try:
        info = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))
        names = info.get("info", {}).get("features", {}).get("label", {}).get("names")
    except (ValueError, AttributeError):
        names = None
    return list(names) if names else (list(task.hub_label_names) if task.hub_label_names else None)


def _lines(handle) -> Iterator[bytes]:
    """The file's lines (the first without its byte-order mark)."""
    for line_number, (_, raw) in enumerate(sources.iter_lines(handle)):
        yield sources.strip_bom(raw) if line_number == 0 else raw


def _decoded(lines: Iterator[bytes]) -> Iterator[Tuple[int, bytes, Optional[str]]]:
    """(row index, raw line, its text or None when it is not UTF-8)."""
    for row_index, raw in enumerate(lines):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        yield row_index, raw, text


def _named(layout: InputLayout, record: Dict[str, Any], row_index: int, raw: Any) -> Record:
    try:
        return row_index, parse_named_row(layout.task, record, row_index, label_field=layout.label_field,
                                          id_field=layout.id_field), None
    except RejectedRecord as error:
        return row_index, None, (error.reason, raw)


def _hub(layout: InputLayout, record: Dict[str, Any], row_index: int, label_names: Optional[List[str]]) -> Record:
    try:
        return row_index, parse_hub_row(layout.task, record, row_index, label_names), None
    except RejectedRecord as error:
        return row_index, None, (error.reason, record)

