"""The corpus pipeline's options, declared once (contract.options) and checked in `__post_init__`."""

import argparse
import dataclasses
from typing import Optional

from contract import options as options_lib
from contract.errors import UserError
from contract.options import option, require
from corpus import instances as instances_lib
from corpus import wiki
from pipelines import sources
from pipelines.options import IOConfig

INPUT_FORMATS = ("wikipedia-xml", "wikipedia-parquet", "text")
WIKI_MARKUPS = tuple(wiki.MARKUP_STRIPPERS)  # --wiki_markup: how wikitext becomes paragraphs
INSTANCE_MODES = ("pairs", "single")
MIN_SEQ_LEN = 8  # [CLS] A [SEP] B [SEP] with a few tokens on each side
MAX_SEQ_LEN = 32767  # positions are stored as int16


@dataclasses.dataclass(frozen=True)
class CorpusConfig(IOConfig):
    """Every corpus option, read once in run() and never mutated: the local output and tokenizer paths are made
    absolute (`from_namespace`) for workers in other folders or on other machines; `shown_output` keeps --output
    as given, for the summary."""
    input_format: str = option("text", help="text, wikipedia-xml or wikipedia-parquet (default text)")
    num_shards: int = option(8, help="Parquet files per output (default 8 per epoch)")
    tokenizer: str = option("bert-base-uncased", help="Hugging Face hub name or local directory of a fast tokenizer")
    max_seq_len: int = option(128, help="tokens per instance, [CLS] and [SEP] included")
    short_seq_prob: float = option(0.1, help="probability of a shorter target length for an instance")
    masked_lm_prob: float = option(0.0, help="0 (TinyBERT's default) stores no masked-LM predictions")
    max_predictions_per_seq: int = option(20, help="masked-LM predictions per instance at most")
    whole_word_mask: bool = option(False, help="mask all pieces of a word together (with --masked_lm_prob > 0)")
    epochs: int = option(3, help="differently sampled epochs of instances")
    instance_mode: str = option("pairs", choices=INSTANCE_MODES,
                                help="pairs: [CLS] A [SEP] B [SEP] with 50%% random-next B; single: [CLS] text [SEP]")
    docs_per_bucket: int = option(1000, help="documents per random-next bucket (see docs/corpus.md)")
    dedup: bool = option(False, help="drop documents identical to another one")
    split_bytes: int = option(2 << 20,
                              help="work range size: uncompressed text and splittable dumps (uncompressed or "
                                   "multistream .bz2 XML) are read in ranges of this many bytes, spread over the "
                                   "workers (default 2 MiB: small enough that no worker waits long on "
                                   "another's last range)")
    wiki_markup: str = option("fast", choices=WIKI_MARKUPS,
                              help="wikipedia-xml: fast (corpus/wikimarkup.py, linear-time stripper) or "
                                   "mwparserfromhell (a full parser, about 7x slower)")
    shown_output: Optional[str] = option(None, cli=False, help="--output as given, for the summary")

    def __post_init__(self):
        """One line for the first option value that cannot work: the option and what it accepts."""
        require(bool(self.input) and bool(self.output),
                "--input and --output are required (e.g. --input 'wiki/*.xml.bz2' --output out/general)")
        require(self.input_format in INPUT_FORMATS,
                f"--input_format must be one of {', '.join(INPUT_FORMATS)} (got {self.input_format})")
        for name in ("epochs", "num_shards", "docs_per_bucket", "split_bytes", "max_predictions_per_seq"):
            require(getattr(self, name) >= 1, f"--{name} must be at least 1 (got {getattr(self, name)})")
        require(MIN_SEQ_LEN <= self.max_seq_len <= MAX_SEQ_LEN,
                f"--max_seq_len must be within [{MIN_SEQ_LEN}, {MAX_SEQ_LEN}] (got {self.max_seq_len}): an "
                "instance holds [CLS], [SEP]s and tokens of its segments, and positions are int16")
        for name in ("short_seq_prob", "masked_lm_prob"):
            require(0.0 <= getattr(self, name) <= 1.0, f"--{name} must be within [0, 1] (got {getattr(self, name)})")
        super().__post_init__()  # --max_reject_fraction

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace) -> "CorpusConfig":
        """The config of parsed options, checked before the paths are made absolute.

        Raises:
          UserError: the first option value that cannot work.
        """
        given = options_lib.from_namespace(namespace, cls, shown_output=namespace.output)
        return dataclasses.replace(given, output=sources.absolute(given.output),
                                   tokenizer=sources.absolute(given.tokenizer, may_be_hub_name=True))

    def instance_config(self) -> instances_lib.InstanceConfig:
        """The instance cutter's settings.

        Raises:
          UserError: a value the cutter refuses.
        """
        try:
            return instances_lib.InstanceConfig(
                max_seq_len=self.max_seq_len, short_seq_prob=self.short_seq_prob, masked_lm_prob=self.masked_lm_prob,
                max_predictions_per_seq=self.max_predictions_per_seq, whole_word_mask=self.whole_word_mask)
        except ValueError as error:
            raise UserError(str(error)) from None
