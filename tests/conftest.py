import os
import pathlib

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# ../shared/data next to the checkout; TINYBERT_SHARED_DATA points elsewhere (a git worktree lives deeper).
SHARED_DATA = pathlib.Path(os.environ.get("TINYBERT_SHARED_DATA")
                           or pathlib.Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture(autouse=True)
def _own_cache_home(tmp_path_factory, monkeypatch):
    """Every test has its own XDG_CACHE_HOME (subprocesses inherit it): a run's default candidate store never lands
    in the real ~/.cache, and no test sees another's answers."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache-home")))


@pytest.fixture(scope="session")
def shared_data():
    """../shared/data, or a skip with the reason where a machine does not have it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not present at {SHARED_DATA}")
    return SHARED_DATA


SAMPLE_TEXTS = [
    "a warm , funny and thoughtful film that earns every one of its tears .",
    "the cinematography is murky and the pacing is sluggish .",
    "Héllo, WORLD! It's a naïve co-op movie about 東京 and unbelievably overwrought melodrama.",
    "an incoherent story told with no sense of rhythm .",
]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, shared_data_optional):
    """A 2-layer BERT masked LM saved with save_pretrained: the real bert-base-uncased vocab where present."""
    from pipelines import demo_assets
    out = tmp_path_factory.mktemp("tiny-bert")
    if shared_data_optional is not None:
        tokenizer = demo_assets.wordpiece_tokenizer(
            vocab=demo_assets.read_vocab(str(shared_data_optional / "bert-base-uncased-vocab.txt")))
    else:
        tokenizer = demo_assets.wordpiece_tokenizer(texts=SAMPLE_TEXTS * 4, vocab_size=300)
    return demo_assets.build_masked_lm(str(out), tokenizer, layers=2, hidden=32, heads=2, intermediate=64, seed=3)


@pytest.fixture(scope="session")
def shared_data_optional():
    return SHARED_DATA if SHARED_DATA.is_dir() else None


@pytest.fixture(scope="session")
def tiny_glove(tmp_path_factory, tiny_bert):
    """A GloVe-format text file of co-occurrence vectors over the sample task's words."""
    import csv
    from pipelines import demo_assets
    from augment.words import WordSplitter
    from transformers import AutoTokenizer
    splitter = WordSplitter(AutoTokenizer.from_pretrained(tiny_bert).backend_tokenizer)
    with open(demo_assets.SAMPLE_TRAIN, encoding="utf-8") as handle:
        texts = [row[0] for row in list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]]
    words, vectors = demo_assets.cooccurrence_vectors([splitter.split(t) for t in texts + SAMPLE_TEXTS], dim=8)
    return demo_assets.write_glove(str(tmp_path_factory.mktemp("glove") / "glove.txt"), words, vectors)


# The `slow` tier: whole pipeline runs (in-process or as subprocesses), clusters, multi-process training, the real
# dump. `pytest -m "not slow"` runs the library tests alone. Modules that are slow through and through mark
# themselves (`pytestmark`); here, the pipeline runs that live among the unit tests of other modules.
SLOW_TESTS = (
    "test_augment_i18n.py::test_accented_latin_words_are_candidates",
    "test_augment_i18n.py::test_chinese_characters_are_replaced",
    "test_augment_i18n.py::test_glove_none_with_reference_rule",
    "test_augment_i18n.py::test_bad_stop_words_file",
    "test_augment_pipeline.py::",
    "test_cli.py::test_a_header_that_is_not",
    "test_cli.py::test_an_input_directory",
    "test_cli.py::test_corpus_parquet_without_text",
    "test_cli.py::test_csv_with_a_byte_order_mark",
    "test_cli.py::test_empty_or_header_only",
    "test_cli.py::test_hub_parquet_of_a_glue_task",
    "test_cli.py::test_load_dataset",
    "test_cli.py::test_more_than_the_reject_fraction",
    "test_cli.py::test_wrong_text_columns",
    "test_corpus.py::test_end_to_end",
    "test_corpus.py::test_real_wikipedia_dump",
    "test_corpus.py::test_same_shards_whatever_the_runner_mode",
    "test_corpus.py::test_documents_tokenized_as_one_text",
    "test_distill_train.py::",
    "test_distill_reliability.py::",
    "test_distill_recipe.py::",
    "test_reliability.py::",
    "test_report.py::test_augment_report",
    "test_report.py::test_corpus_report",
    "test_report.py::test_no_report",
    "test_wikimarkup.py::test_real_dump_has_no_markup_left",
    "test_wikimarkup.py::test_wiki_markup_option_reaches",
    "test_wikimarkup.py::test_linear_on_pathological_pages",
    "test_wikimarkup.py::test_cjk_sentence_ends",
    "test_output_claim.py::test_two_runs",
    "test_output_claim.py::test_overwrite_on_a_foreign_folder",
    "test_outputs.py::test_keyed_shards_manifest_and_marker",
    "test_long_sentence.py::test_long_sentence_rows_equal",
    "test_long_sentence.py::test_pipeline_scorer",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(part in item.nodeid for part in SLOW_TESTS):
            item.add_marker(pytest.mark.slow)
