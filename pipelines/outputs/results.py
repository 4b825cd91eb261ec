"""How a run's results read: whether it failed (`QualityRule`, applied by `FinalizeOutput`, and the one line a
failed run ends with), the end-of-run summary a person reads, and the dataset card."""

import dataclasses
import json
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import pyarrow as pa

from contract.errors import UserError
from contract.layout import REJECTS_SUBDIR, SUCCESS_MARKER
from contract.schemas import augmented_schema
from pipelines.outputs.shards import join_path
from pipelines.progress import human_bytes


@dataclasses.dataclass(frozen=True)
class QualityRule:
    """When a run's counts mean failure: no accepted record, or more than `max_reject_fraction` rejected.

    Attributes:
      accepted: (count table, key) of the records that were used, e.g. ("stats", "examples").
      rejects: the count table of rejects by reason.
      ignore: reject reasons that are skips by design, not bad input (a dump's redirects), left out of the fraction.
      max_reject_fraction: the most of the records (accepted + counted rejects) that may be rejected.
    """
    accepted: Tuple[str, str]
    rejects: str
    max_reject_fraction: float
    ignore: Tuple[str, ...] = ()

    def failure(self, counts: Mapping[str, Mapping[str, int]]) -> Optional[Dict[str, Any]]:
        accepted = int(counts.get(self.accepted[0], {}).get(self.accepted[1], 0))
        reasons = {k: int(v) for k, v in counts.get(self.rejects, {}).items() if k not in self.ignore}
        rejected = sum(reasons.values())
        total = accepted + rejected
        fraction = rejected / total if total else 0.0
        if accepted > 0 and fraction <= self.max_reject_fraction:
            return None
        top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        return {"accepted": accepted, "rejected": rejected, "reject_fraction": round(fraction, 4),
                "max_reject_fraction": self.max_reject_fraction, "top_reasons": dict(top)}


def raise_if_failed(manifest: Mapping[str, Any], output_dir: str, *,
                    hint: Optional[Callable[[], str]] = None) -> None:
    """The one line a failed run ends with: what was rejected, why, the likely cause, where the rejects are.

    Args:
      hint: gives the likely cause as a clause, or ""; called only for a failed run (it may read the input).

    Raises:
      UserError: the manifest says the run failed its QualityRule.
    """
    if manifest.get("status") != "failed":
        return
    hint = hint() if hint is not None else ""
    failure = manifest["failure"]
    reasons = ", ".join(f"{k} {v}" for k, v in failure["top_reasons"].items())
    skipped = {reason: n for reason, n in (manifest.get("counts", {}).get("rejects") or {}).items() if n}
    if failure["accepted"] == 0 and failure["rejected"] == 0 and skipped:
        found = ", ".join(f"{reason} {n:,}" for reason, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))
        what = (f"the input holds {sum(skipped.values()):,} records and none is usable ({found}; those are skipped, "
                "not errors)")
    elif failure["accepted"] == 0 and failure["rejected"] == 0:
        what = "the input holds no record"
    elif failure["accepted"] == 0:
        what = f"all {failure['rejected']} input records were rejected ({reasons})"
    else:
        what = (f"{failure['rejected']} of {failure['accepted'] + failure['rejected']} input records were rejected "
                f"({100 * failure['reject_fraction']:.0f}% > --max_reject_fraction "
                f"{failure['max_reject_fraction']}; {reasons})")
    where = f"; see {join_path(output_dir, REJECTS_SUBDIR)}/" if failure["rejected"] else ""
    raise UserError(f"{what}{'; ' + hint if hint else ''}{where}; no {SUCCESS_MARKER} written")


def summary(pipeline: str, manifest: Mapping[str, Any], output_dir: str, seconds: float, *,
            rows_output: str, extra: Sequence[str] = ()) -> str:
    """The end-of-run summary a person reads: inputs, rows out, rejects by reason, output path, wall time."""
    inputs = manifest.get("inputs", [])
    rejects = manifest.get("counts", {}).get("rejects", {})
    lines = [f"{pipeline} finished in {seconds:.1f} s -> {output_dir}",
             f"  inputs   {len(inputs)} file{'s' * (len(inputs) != 1)}, "
             f"{human_bytes(sum(i.get('bytes', 0) for i in inputs))}"]
    for name, out in sorted(manifest["outputs"].items()):
        if name == "rejects":
            continue
        rows = out["totals"].get("rows", 0)
        label = "rows" if name == rows_output else f"{name}"
        lines.append(f"  {label:<8} {rows:,} rows in {out['subdir']}/ ({out['num_shards']} files)")
    lines.extend(f"  {line}" for line in extra)
    total = sum(rejects.values())
    lines.append(f"  rejects  {total:,}" + (" (" + ", ".join(f"{k} {v:,}" for k, v in sorted(
        rejects.items(), key=lambda kv: -kv[1])) + f") in {REJECTS_SUBDIR}/" if total else ""))
    return "\n".join(lines)


def dataset_card(*, data_glob: str, label_names: Optional[Sequence[str]] = None,
                 text_fields: Sequence[str] = (), with_rejects: bool = True) -> str:
    """A dataset card whose YAML tells `datasets.load_dataset(OUTPUT_DIR)` the `train` split and label names.

    Without it the loader names the split after the shard files' prefix (`part`) and would also try the rejects.
    Labels are stored as strings (the reference's own labels); with `label_names`, the card declares a
    `ClassLabel`, which the loader casts the strings to, so `features["label"].int2str` works. A `rejects` config
    is declared where there are rejects (the loader fails on a Parquet file of zero rows).
    """
    lines = ["---", "configs:", "- config_name: default", "  data_files:", "  - split: train",
             f"    path: {data_glob}"]
    if with_rejects:
        lines += ["- config_name: rejects", "  data_files:", "  - split: train", f"    path: {REJECTS_SUBDIR}/*.parquet"]
    if label_names:
        # The card's features must list every column, in order: the augmented schema's.
        lines += ["dataset_info:", "  config_name: default", "  features:"]
        # Plain columns are named as JSON strings (text fields are the user's names); label and the list column
        # by their fixed names.
        for field in augmented_schema(text_fields):
            if field.name == "label":
                lines += ["  - name: label", "    dtype:", "      class_label:", "        names:"]
                lines += [f"          '{i}': {json.dumps(n)}" for i, n in enumerate(label_names)]
            elif pa.types.is_list(field.type):
                lines += [f"  - name: {field.name}", f"    sequence: {field.type.value_type}"]
            else:
                lines += [f"  - name: {json.dumps(field.name)}", f"    dtype: {field.type}"]
    lines += ["---", "", "Written by tinybert-data. `datasets.load_dataset(THIS_FOLDER)` gives the rows as the `train` "
              "split; `manifest.json` describes them (inputs, tokenizer, options, counts).", ""]
    return "\n".join(lines)
