"""What a training run records in its --output as it goes, and the summaries written at its end.

  metrics.jsonl       one JSON object per logged step (losses, lr, epoch, elapsed_s, samples_per_s)
  eval_results.jsonl  one JSON object per dev evaluation
  metrics.csv         metrics.jsonl as a table, written at the end
  loss.svg            the loss terms by step on a log scale (`contract.charts`), written at the end
  runs/               TensorBoard event files of the same records (--report_to tensorboard)

A line cut short by a kill is skipped on reading; a resumed run first drops the records its checkpoint does not
cover, so every step is recorded once.
"""

import csv
import json
import logging
import os
from typing import Any, Dict, List, Mapping

from contract import charts

logger = logging.getLogger(__name__)

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
LOSS_SVG = "loss.svg"
EVAL_JSONL = "eval_results.jsonl"
TENSORBOARD_DIR = "runs"
LOSS_TERMS = ("loss", "att_loss", "rep_loss", "cls_loss")


class RunLog:
    """Records a run's steps and dev evaluations as they come (the main process's only).

    Args:
      output: the run's --output.
      tensorboard: also write them as TensorBoard scalars (needs the tensorboard package).
    """

    def __init__(self, output: str, *, tensorboard: bool = False):
        self.output = output
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(log_dir=os.path.join(output, TENSORBOARD_DIR))

    def step(self, record: Mapping[str, Any]) -> None:
        """Appends a step's record (it has "step") to metrics.jsonl, and its numbers as train/ scalars."""
        append_record(os.path.join(self.output, METRICS_JSONL), record)
        if self.writer is not None:
            for name, value in record.items():
                if name != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{name}", value, record["step"])
            self.writer.flush()

    def evaluation(self, step: int, results: Mapping[str, Mapping[str, Any]]) -> None:
        """Appends {"step", split: {metric: value}} to eval_results.jsonl, and the values as eval/ scalars."""
        append_record(os.path.join(self.output, EVAL_JSONL), {"step": step, **results})
        if self.writer is not None:
            for split, values in results.items():
                for name, value in values.items():
                    if isinstance(value, float):
                        self.writer.add_scalar(f"eval/{split}/{name}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def append_record(path: str, record: Mapping[str, Any]) -> None:
    """Appends one record as a JSON line."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def read_records(path: str) -> List[Dict[str, Any]]:
    """The JSON lines of a metrics file that carry a step; a line cut short by a kill is skipped."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                logger.warning("skipping a damaged line of %s: %r", path, line[:80])
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
    return records


def truncate_records(path: str, step: int) -> None:
    """Keeps only the records of steps <= `step` (those the checkpoint covers), rewritten atomically."""
    if not os.path.exists(path):
        return
    kept = [record for record in read_records(path) if record["step"] <= step]
    tmp_path = path + ".tmp"
    with open(tmp_path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in kept)
    os.replace(tmp_path, path)


def read_metrics(output: str) -> List[Dict[str, Any]]:
    """The step records of the run in `output`."""
    return read_records(os.path.join(output, METRICS_JSONL))


def write_metrics_csv(records: List[Dict[str, Any]], path: str) -> None:
    """The records as CSV, one column per key in the order keys first appear."""
    names: List[str] = []
    for record in records:
        names.extend(k for k in record if k not in names)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        writer.writerows(records)


def loss_curve(records: List[Dict[str, Any]]) -> bytes:
    """SVG bytes of the loss terms the records carry (those of the first record), by step, on a log scale."""
    names = [name for name in LOSS_TERMS if records and name in records[0]]
    return charts.line_chart([record["step"] for record in records],
                             [(name, [record.get(name) for record in records]) for name in names],
                             title="training loss", height=400, x_label="step", y_label="loss", log_scale=True)


def write_summaries(output: str) -> None:
    """metrics.csv and loss.svg from the run's metrics.jsonl."""
    records = read_metrics(output)
    write_metrics_csv(records, os.path.join(output, METRICS_CSV))
    with open(os.path.join(output, LOSS_SVG), "wb") as handle:
        handle.write(loss_curve(records))
