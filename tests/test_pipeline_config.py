"""The pipelines' options, read once into frozen typed configs (AugmentConfig, CorpusConfig)."""

import dataclasses
import os

import pytest

from contract.errors import UserError
from pipelines import cli
from pipelines.augment.config import SAMPLE_INPUT, AugmentConfig
from pipelines.corpus.config import CorpusConfig


def _augment(argv):
    namespace, _ = cli.parse_args(argv, prog="python -m pipelines.augment", doc="", settings=[AugmentConfig])
    return AugmentConfig.from_namespace(namespace)


def _corpus(argv):
    namespace, _ = cli.parse_args(argv, prog="python -m pipelines.corpus", doc="", settings=[CorpusConfig])
    return CorpusConfig.from_namespace(namespace)


def test_augment_config_fills_defaults_and_makes_paths_absolute():
    config = _augment(["--output", "out/rel", "--glove", "none", "--stop_words", "stop.txt", "--top_k", "3"])
    assert config.input == SAMPLE_INPUT and config.input_format == "auto" and config.num_shards == 4
    assert config.output == os.path.abspath("out/rel") and config.shown_output == "out/rel"
    assert config.stop_words == os.path.abspath("stop.txt") and config.glove == "none"
    assert config.model == "bert-base-uncased"  # a hub name stays a name
    assert config.top_k == 3 and config.seed == 42 and config.num_aug is None


def test_augment_config_default_output():
    config = _augment([])
    assert config.shown_output == "out/augment" and config.output == os.path.abspath("out/augment")


def test_corpus_config_fills_defaults_and_makes_paths_absolute():
    config = _corpus(["--input", "in.txt", "--output", "out/c", "--epochs", "2"])
    assert config.input_format == "text" and config.num_shards == 8 and config.epochs == 2
    assert config.output == os.path.abspath("out/c") and config.shown_output == "out/c"
    assert config.tokenizer == "bert-base-uncased" and config.input == "in.txt"


def test_corpus_config_checks_before_paths_are_made_absolute():
    with pytest.raises(UserError, match="--input and --output are required"):
        _corpus(["--input", "in.txt", "--output", ""])
    with pytest.raises(UserError, match="--epochs must be at least 1"):
        _corpus(["--input", "in.txt", "--output", "out", "--epochs", "0"])


@pytest.mark.parametrize("make", [lambda: _augment([]), lambda: _corpus(["--input", "a", "--output", "b"])])
def test_configs_are_frozen(make):
    config = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.output = "elsewhere"
