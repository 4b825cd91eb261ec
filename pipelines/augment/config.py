"""The augmentation's options, declared once (contract.options), and the small settings each transform takes."""

import argparse
import dataclasses
import os
import pathlib
import re
from typing import Optional, Tuple

from augment import store as store_lib
from augment.mlm import MAX_POSITIONS, PRECISIONS
from contract.tasks import GLUE_TASKS, Task
from augment.words import WORD_RULES
from contract import options as options_lib
from contract.options import option, require
from pipelines import report, sources
from pipelines.options import IOConfig

DEFAULT_GLOVE = "glove.6B.300d.txt"  # the default of --word_rule reference; unicode defaults to no GloVe
SAMPLE_INPUT = str(pathlib.Path(__file__).resolve().parents[1] / "samples" / "sst2" / "train.tsv")
INPUT_FORMATS = ("auto", "tsv", "csv", "jsonl", "parquet")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


@dataclasses.dataclass(frozen=True)
class AugmentConfig(IOConfig):
    """The augmentation's options, read once in run(), with local paths (output, model, glove, stop_words) made
    absolute for workers in other folders or on other machines (`from_namespace`). Never mutated; `shown_output`
    keeps --output as given, for the summary."""
    input: str = option(SAMPLE_INPUT, help="input file(s): a glob on any Beam filesystem")
    input_format: str = option("auto", help="auto|tsv|csv|jsonl|parquet (default auto)")
    output: str = option("out/augment", help="output directory (any Beam filesystem)")
    num_shards: int = option(4, help="Parquet files per output (default 4)")
    task: str = option("SST-2", help="GLUE task (CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE) or 'generic' with "
                                     "--text_columns")
    text_columns: Optional[str] = option(None, help="generic: comma-separated text columns")
    label_column: Optional[str] = option(None, help="generic: label column")
    id_column: Optional[str] = option(None, help="generic: id column (default: the data row index)")
    label_list: Optional[str] = option(None, help="generic: comma-separated allowed labels")
    model: str = option("bert-base-uncased", help="BERT masked LM: hub name or local directory (with its tokenizer)")
    glove: Optional[str] = option(
        None, help="GloVe text file (.txt, .txt.gz, .zip or archive.zip:member.txt), or 'none': words of several "
                   f"WordPieces then keep themselves; default {DEFAULT_GLOVE} for --word_rule reference, none for "
                   "--word_rule unicode")
    word_rule: str = option(
        "reference", choices=WORD_RULES,
        help="candidate words: 'reference' (a-z letters, English stop words, words joined by spaces, as the "
             "reference) or 'unicode' (letters of any script, CJK characters one word each, the source's spacing "
             "kept)")
    stop_words: Optional[str] = option(
        None, help="UTF-8 file, one stop word per line, replacing the rule's list (reference: the reference's "
                   "English list; unicode: none)")
    glove_vocab: int = option(100_000, help="use the first N GloVe words")
    num_aug: Optional[int] = option(
        None, help="draws per sentence (N); default per task: " + ", ".join(
            f"{name} {task.num_aug}" for name, task in GLUE_TASKS.items()) + ", generic 20")
    top_k: int = option(15, help="candidates per word (M)")
    replace_prob: float = option(0.4, help="replacement probability (p)")
    precision: str = option(
        "fp32", choices=PRECISIONS,
        help="masked-LM encoder precision: fp32 gives the reference's candidates; bf16 for GPUs and CPUs with native "
             "bf16; int8 (dynamic quantization) for other CPUs")
    device: str = option("auto", help="auto (a GPU if torch sees one, else the CPU), cpu, cuda (each worker process "
                                      "claims its own GPU) or cuda:N (pin GPU N)")
    emit_candidates: bool = option(False, help="also write every word's candidates under OUTPUT/candidates/")
    max_batch_tokens: Optional[int] = option(
        None, help="tokens per masked-LM forward (default 8192 on a CPU, 65536 on a GPU)")
    torch_threads: int = option(0, help="intra-op threads per worker process (0 = torch's default: all cores); set "
                                        "cores / workers when running several worker processes on one machine")
    mlm_partitions: int = option(4, help="hash partitions per input length for masked-LM batching (parallelism at "
                                         "scale)")
    candidate_store: Optional[str] = option(
        None, help="where masked-LM answers are kept across runs (any Beam filesystem path; default "
                   "$XDG_CACHE_HOME/tinybert/candidates, else ~/.cache/tinybert/candidates); 'none' turns it off")
    score_only: bool = option(False, help="only fill --candidate_store with the input's masked-LM answers: OUTPUT "
                                          "gets its manifest and rejects, no rows (a later run draws from the store, "
                                          "without the model's weights if need be)")
    prune_store: bool = option(False, help="delete --model's answers (every precision and top_k) from "
                                           "--candidate_store, print what was freed, and exit")
    shown_output: Optional[str] = option(None, help="--output as given, for the summary", cli=False)

    def __post_init__(self):
        """One line for the first option value that cannot work."""
        require(self.input_format in INPUT_FORMATS, f"--input_format must be one of {', '.join(INPUT_FORMATS)}")
        require(self.top_k >= 1, f"--top_k must be at least 1 (got {self.top_k})")
        require(0.0 <= self.replace_prob <= 1.0, f"--replace_prob must be within [0, 1] (got {self.replace_prob})")
        require(self.num_aug is None or self.num_aug >= 0, f"--num_aug must be >= 0 (got {self.num_aug})")
        for name in ("num_shards", "mlm_partitions", "glove_vocab", "max_batch_tokens"):
            value = getattr(self, name)
            require(value is None or value >= 1, f"--{name} must be >= 1 (got {value})")
        require(self.max_batch_tokens is None or self.max_batch_tokens >= MAX_POSITIONS,
                f"--max_batch_tokens must hold one full-length query ({MAX_POSITIONS} tokens); got "
                f"{self.max_batch_tokens}")
        require(self.torch_threads >= 0, f"--torch_threads must be >= 0 (got {self.torch_threads})")
        for flag in ("score_only", "prune_store"):
            require(not (getattr(self, flag) and self.store_root() is None),
                    f"--{flag} needs a candidate store: pass --candidate_store PATH (not none)")
        super().__post_init__()  # --max_reject_fraction
        require(DEVICE_PATTERN.fullmatch(self.device) is not None,
                f"--device must be auto, cpu, cuda or cuda:N (got {self.device!r})")
        if self.device.startswith("cuda"):
            import torch
            require(torch.cuda.is_available(),
                    f"--device {self.device}: no CUDA GPU is visible to torch here; use --device cpu or auto")
            index = self.device.partition(":")[2]
            count = torch.cuda.device_count()
            require(not index or int(index) < count,
                    f"--device {self.device}: torch sees {count} GPU(s) here (cuda:0 to cuda:{count - 1})")

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace) -> "AugmentConfig":
        """The config of parsed options, local paths made absolute (a hub name for --model stays a name)."""
        return options_lib.from_namespace(
            namespace, cls, shown_output=namespace.output, output=sources.absolute(namespace.output),
            model=sources.absolute(namespace.model, may_be_hub_name=True), glove=sources.absolute(namespace.glove),
            stop_words=sources.absolute(namespace.stop_words),
            candidate_store=_store_location(namespace.candidate_store))

    def store_root(self) -> Optional[str]:
        """The candidate store's root, or None when --candidate_store none turned it off."""
        value = self.candidate_store
        return None if value is None or value.strip().lower() in ("", "none") else value

    def resolved_num_aug(self, task: Task) -> int:
        """--num_aug, or the task's default N."""
        return self.num_aug if self.num_aug is not None else task.num_aug


def _store_location(value: Optional[str]) -> str:
    """--candidate_store made absolute; its default under the user's cache folder (XDG); "none" as given."""
    if value is not None and value.strip().lower() in ("", "none"):
        return "none"
    if value is None:
        return store_lib.default_root(os.environ, os.path.expanduser("~"))
    return sources.absolute(value)


# ---------------------------------------------------------------------------------------- transform settings
@dataclasses.dataclass(frozen=True)
class StoreSettings:
    """The candidate store a `ScoreMaskedLMFn` reads and fills.

    Attributes:
      root: the store's root folder (any Beam filesystem path).
      model_id: the model's folder in the store (`augment.store.ModelFingerprint.model_id`).
      settings_id: the precision's and top_k's folder in it (`augment.store.settings_id`).
      weightless: the model's weights are not at hand: every answer must come from the store.
    """
    root: str
    model_id: str
    settings_id: str
    weightless: bool = False


@dataclasses.dataclass(frozen=True)
class PlanSettings:
    """How `PlanExamplesFn` splits texts into words and which lookups it asks for.

    Attributes:
      model: the masked LM (its tokenizer splits and normalizes the words).
      word_rule: `reference` or `unicode` (augment.words).
      stop_words: the words that are never candidates, replacing the rule's list; None keeps the rule's.
      glove: whether multi-piece words are looked up in GloVe (else they keep themselves).
    """
    model: str
    word_rule: str
    stop_words: Optional[Tuple[str, ...]]
    glove: bool


@dataclasses.dataclass(frozen=True)
class MaskedLMSettings:
    """The masked-LM scorer of `FindMaskedLMCandidates` and its `ScoreMaskedLMFn`.

    Attributes:
      model: hub name or directory of the masked LM.
      top_k: candidates per masked word.
      precision: fp32, bf16 or int8 (augment.mlm.PRECISIONS).
      device: auto, cpu, cuda or cuda:N (resources.choose_device).
      max_batch_tokens: tokens per forward; None for the device's default.
      torch_threads: intra-op threads per worker process; 0 keeps torch's default.
      partitions: hash partitions per input length (how many groups score in parallel).
      show_progress: print the progress lines of the scored queries.
      store: the candidate store answers are looked up in and written to; None: every answer is computed.
      errors_dir: where a worker records a UserError (`cli.errors_dir`), e.g. an answer missing from the store of a
        run without weights.
    """
    model: str
    top_k: int
    precision: str
    device: str
    max_batch_tokens: Optional[int]
    torch_threads: int
    partitions: int
    show_progress: bool
    store: Optional[StoreSettings] = None
    errors_dir: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class GloveSettings:
    """The GloVe index of `FindGloveNeighbours`: its file, the words it keeps, and the neighbours per word."""
    path: str
    vocab_limit: int
    top_k: int


@dataclasses.dataclass(frozen=True)
class DrawSettings:
    """Algorithm 1's draws in `AugmentExamplesFn`, and what it emits besides the rows.

    Attributes:
      task: the task's fields (the TSV layout of train_aug.tsv).
      num_aug: draws per sentence (N).
      replace_prob: the replacement probability (p).
      seed: the base seed; each example's RNG is seeded from (seed, example id).
      emit_candidates: also emit every word's candidates.
      glove: whether GloVe is on (else multi-piece candidate words are counted as kept).
      word_rule: `unicode` filters candidates to letter words.
      show_progress: print the progress lines of the augmented examples.
      report_histograms: (rows per example, candidate list length) bins of report/, or None for no report.
    """
    task: Task
    num_aug: int
    replace_prob: float
    seed: int
    emit_candidates: bool
    glove: bool
    word_rule: str
    show_progress: bool
    report_histograms: Optional[Tuple[report.Histogram, report.Histogram]]
