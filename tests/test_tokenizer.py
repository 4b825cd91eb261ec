"""The transformers-free tokenizer rebuild equals what transformers.AutoTokenizer builds, or is not used."""

import json
import os
import pathlib

import pytest

from contract import fingerprint
from corpus import tokenizer as tokenizer_lib

ADVERSARIAL = [
    "Héllo, WORLD! It's a naïve co-op about 東京 and Ñandú ÅÄÖ.",
    "[MASK] and [CLS]x [sep] [UNK] [PAD][SEP]",
    "\x00control\tcharacters\u200b and  spaces\u3000here",
    "unbelievably overwrought melodrama " + "a" * 150,
    "Straße İstanbul ǅ ﬁ ½ Ⅻ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 😀",
    "",
]


def _vocab_dir(tmp_path: pathlib.Path, shared_data_optional) -> pathlib.Path:
    directory = tmp_path / "vocab"
    directory.mkdir()
    if shared_data_optional is not None:
        (directory / "vocab.txt").write_bytes((shared_data_optional / "bert-base-uncased-vocab.txt").read_bytes())
    else:
        tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "a", "the", "##s", "hello", "world", "東"]
        (directory / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return directory


def _saved(tmp_path, vocab_dir, name, **kwargs) -> str:
    from transformers import BertTokenizerFast
    out = tmp_path / name
    BertTokenizerFast.from_pretrained(str(vocab_dir), **kwargs).save_pretrained(str(out))
    return str(out)


def _assert_same(fast: tokenizer_lib.LoadedTokenizer, reference: tokenizer_lib.LoadedTokenizer):
    ours = [e.ids for e in fast.backend.encode_batch(ADVERSARIAL, add_special_tokens=False)]
    theirs = [e.ids for e in reference.backend.encode_batch(ADVERSARIAL, add_special_tokens=False)]
    assert ours == theirs
    assert fast.backend.get_vocab(with_added_tokens=True) == reference.backend.get_vocab(with_added_tokens=True)
    assert fast.special_tokens == reference.special_tokens
    for name in tokenizer_lib.SPECIAL_NAMES:
        assert fast.special_id(name) == reference.special_id(name)
    assert fingerprint.tokenizer_fingerprint(fast, "x") == fingerprint.tokenizer_fingerprint(reference, "x")
    # Everything that turns text into ids is the same serialization (post-processor and decoder are not used).
    ours_json, theirs_json = json.loads(fast.to_json()), json.loads(reference.to_json())
    for key in ("post_processor", "decoder"):
        ours_json.pop(key, None)
        theirs_json.pop(key, None)
    assert ours_json == theirs_json


@pytest.mark.parametrize("settings", [
    {},
    {"do_lower_case": False},
    {"strip_accents": False},
    {"strip_accents": True, "do_lower_case": False},
    {"tokenize_chinese_chars": False},
])
def test_rebuild_equals_transformers_for_saved_bert_tokenizers(tmp_path, shared_data_optional, settings):
    path = _saved(tmp_path, _vocab_dir(tmp_path, shared_data_optional), "tok", **settings)
    fast = tokenizer_lib.load(path)
    assert fast.via == "tokenizers"
    _assert_same(fast, tokenizer_lib.load_with_transformers(path))


def test_config_wins_over_the_normalizer_in_tokenizer_json(tmp_path, shared_data_optional):
    """transformers rebuilds the BERT normalizer from tokenizer_config.json; so does the rebuild."""
    path = pathlib.Path(_saved(tmp_path, _vocab_dir(tmp_path, shared_data_optional), "tok"))
    config = json.loads((path / "tokenizer_config.json").read_text())
    config["do_lower_case"] = False
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    fast = tokenizer_lib.load(str(path))
    assert fast.via == "tokenizers"
    assert json.loads(fast.to_json())["normalizer"]["lowercase"] is False
    _assert_same(fast, tokenizer_lib.load_with_transformers(str(path)))


def test_hub_layout_without_tokenizer_class_follows_the_model_type(tmp_path, shared_data_optional):
    """bert-base-uncased on the hub: tokenizer.json, a config with only do_lower_case, config.json model_type bert."""
    path = pathlib.Path(_saved(tmp_path, _vocab_dir(tmp_path, shared_data_optional), "tok"))
    (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    (path / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 30522}))
    fast = tokenizer_lib.load(str(path))
    assert fast.via == "tokenizers"
    _assert_same(fast, tokenizer_lib.load_with_transformers(str(path)))


def test_hub_name_in_the_local_cache_is_rebuilt(tmp_path, shared_data_optional, monkeypatch):
    """A hub name resolves through the Hugging Face cache layout (models--org--name/snapshots/REV/...)."""
    source = pathlib.Path(_saved(tmp_path, _vocab_dir(tmp_path, shared_data_optional), "tok"))
    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-bert"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (snapshot / name).write_bytes((source / name).read_bytes())
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    fast = tokenizer_lib.load("acme/tiny-bert")
    assert fast.via == "tokenizers"
    _assert_same(fast, tokenizer_lib.load_with_transformers(str(snapshot)))


@pytest.mark.parametrize("change", ["extra_added_token", "unknown_setting", "other_class"])
def test_anything_the_rebuild_does_not_model_goes_to_transformers(tmp_path, shared_data_optional, change):
    vocab_dir = _vocab_dir(tmp_path, shared_data_optional)
    path = pathlib.Path(_saved(tmp_path, vocab_dir, "tok"))
    config = json.loads((path / "tokenizer_config.json").read_text())
    if change == "extra_added_token":
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        tokenizer.add_tokens(["<newword>"])
        tokenizer.save_pretrained(str(path))
    elif change == "unknown_setting":
        config["some_future_option"] = True
        (path / "tokenizer_config.json").write_text(json.dumps(config))
    else:
        config["tokenizer_class"] = "DistilBertTokenizer"
        (path / "tokenizer_config.json").write_text(json.dumps(config))
    loaded = tokenizer_lib.load(str(path))
    assert loaded.via == "transformers"
    if change == "extra_added_token":
        assert loaded.backend.token_to_id("<newword>") is not None


def test_saved_folder_without_tokenizer_json_is_built_from_vocab_txt(tmp_path, shared_data_optional):
    """What save_pretrained wrote, less tokenizer.json: the vocab.txt rebuild, equal to transformers."""
    vocab_dir = _vocab_dir(tmp_path, shared_data_optional)
    path = pathlib.Path(_saved(tmp_path, vocab_dir, "tok", do_lower_case=False))
    os.remove(path / "tokenizer.json")
    (path / "vocab.txt").write_bytes((vocab_dir / "vocab.txt").read_bytes())
    fast = tokenizer_lib.load(str(path))
    assert fast.via == "tokenizers"
    _assert_same(fast, tokenizer_lib.load_with_transformers(str(path)))


def test_errors_are_one_clear_line(tmp_path):
    with pytest.raises(tokenizer_lib.TokenizerError, match="cannot load a tokenizer from"):
        tokenizer_lib.load(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(tokenizer_lib.TokenizerError) as error:
        tokenizer_lib.load(str(empty))
    assert "\n" not in str(error.value)


def test_transformers_vocab_is_the_backend_vocab_with_added_tokens(tmp_path, shared_data_optional):
    """The fingerprint reads the backend; distill computes it from a transformers tokenizer: same numbers."""
    from transformers import AutoTokenizer
    path = _saved(tmp_path, _vocab_dir(tmp_path, shared_data_optional), "tok")
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.get_vocab() == tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True)
    assert fingerprint.tokenizer_fingerprint(tokenizer, "x") == fingerprint.tokenizer_fingerprint(tokenizer_lib.load(path), "x")


# ---------------------------------------------------------------------------------------------------------------
# The classic layout: config.json + weights + vocab.txt, no tokenizer.json (Google's converted checkpoints, the
# TinyBERT releases). Built from vocab.txt with `tokenizers` alone, equal to AutoTokenizer on the same folder.


def _real_texts(shared_data) -> list:
    """Real English (wiki markup and prose) and Chinese text, in pieces of a few hundred characters."""
    import bz2
    import gzip
    with bz2.open(shared_data / "enwiki-sample-pages-articles.xml.bz2", "rt", encoding="utf-8") as handle:
        english = handle.read(400_000)
    with gzip.open(shared_data / "zh-fortunes-sample.txt.gz", "rt", encoding="utf-8") as handle:
        chinese = handle.read(100_000)
    return [text[start:start + 300] for text in (english, chinese) for start in range(0, len(text), 300)]


def _cased_vocab(lines: list) -> list:
    """The uncased vocabulary plus capitalized forms of common words, appended: a realistic cased vocabulary."""
    known = set(lines)
    extra = [word.capitalize() for word in lines[2000:8000] if word.isalpha() and word.capitalize() not in known]
    return lines + extra


def _classic_folder(tmp_path, shared_data, *, cased: bool, tokenizer_config, special_map=None) -> pathlib.Path:
    folder = tmp_path / "classic"
    folder.mkdir()
    lines = (shared_data / "bert-base-uncased-vocab.txt").read_text(encoding="utf-8").splitlines()
    if cased:
        lines = _cased_vocab(lines)
    (folder / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": len(lines)}))
    (folder / "pytorch_model.bin").write_bytes(b"")  # present in the layout; a tokenizer never reads it
    if tokenizer_config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    if special_map is not None:
        (folder / "special_tokens_map.json").write_text(json.dumps(special_map))
    return folder


@pytest.mark.parametrize("cased", [False, True], ids=["uncased-vocab", "cased-vocab"])
@pytest.mark.parametrize("tokenizer_config", [
    None,
    {"do_lower_case": True, "max_len": 512},
    {"do_lower_case": False},
    {"do_lower_case": False, "strip_accents": True, "tokenize_chinese_chars": False},
    {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "strip_accents": False, "model_max_length": 512},
], ids=["no-config", "lower", "cased", "cased-strip-nochinese", "class-keepaccents"])
def test_classic_bert_folder_is_built_from_vocab_txt_equal_to_transformers(tmp_path, shared_data, cased,
                                                                           tokenizer_config):
    folder = _classic_folder(tmp_path, shared_data, cased=cased, tokenizer_config=tokenizer_config)
    fast = tokenizer_lib.load(str(folder))
    assert fast.via == "tokenizers"
    reference = tokenizer_lib.load_with_transformers(str(folder))
    _assert_same(fast, reference)
    texts = _real_texts(shared_data)
    ours = [e.ids for e in fast.backend.encode_batch(texts, add_special_tokens=False)]
    assert ours == [e.ids for e in reference.backend.encode_batch(texts, add_special_tokens=False)]
    assert sum(map(len, ours)) > 50_000  # the comparison covers real volume, not a few words


def test_classic_folder_with_a_special_tokens_map_is_rebuilt(tmp_path, shared_data):
    special_map = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                   "mask_token": "[MASK]"}
    folder = _classic_folder(tmp_path, shared_data, cased=False, tokenizer_config={"do_lower_case": True},
                             special_map=special_map)
    fast = tokenizer_lib.load(str(folder))
    assert fast.via == "tokenizers"
    _assert_same(fast, tokenizer_lib.load_with_transformers(str(folder)))


@pytest.mark.parametrize("change", ["other_model_type", "added_tokens_json", "special_not_in_vocab",
                                    "unknown_setting"])
def test_classic_folders_the_rebuild_does_not_model_go_to_transformers(tmp_path, shared_data, change):
    folder = _classic_folder(tmp_path, shared_data, cased=False, tokenizer_config=None)
    if change == "other_model_type":
        (folder / "config.json").write_text(json.dumps({"model_type": "distilbert", "vocab_size": 30522}))
    elif change == "added_tokens_json":
        (folder / "added_tokens.json").write_text(json.dumps({"<newword>": 30522}))
        (folder / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 30523}))
    elif change == "special_not_in_vocab":
        (folder / "tokenizer_config.json").write_text(json.dumps({"mask_token": "<mask>"}))
        (folder / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 30523}))
    else:
        (folder / "tokenizer_config.json").write_text(json.dumps({"some_future_option": 1}))
    assert tokenizer_lib.load(str(folder)).via == "transformers"


def test_classic_folder_keeps_the_model_size_check(tmp_path, shared_data):
    folder = _classic_folder(tmp_path, shared_data, cased=False, tokenizer_config=None)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 1000}))
    with pytest.raises(tokenizer_lib.TokenizerError, match="30,522 tokens but the model"):
        tokenizer_lib.load(str(folder))


_IMPORT_PROBE = """
import atexit, runpy, sys
sys.argv = ["pipelines.corpus", *sys.argv[1:]]
# At exit (a finished command ends right after its exit handlers): what the run imported.
atexit.register(lambda: print("IMPORTED", sorted(name for name in ("transformers", "torch") if name in sys.modules),
                              flush=True))
runpy.run_module("pipelines.corpus", run_name="__main__")
"""


def test_a_text_corpus_run_with_a_classic_folder_imports_neither_transformers_nor_torch(tmp_path, shared_data):
    import subprocess
    import sys
    folder = _classic_folder(tmp_path, shared_data, cased=False, tokenizer_config=None)
    text = tmp_path / "text.txt"
    text.write_text("The first sentence of a document. It goes on here.\nAnd a second line.\n\n"
                    "Another document starts. It ends.\n", encoding="utf-8")
    root = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, f"--input={text}", "--input_format=text",
         f"--output={tmp_path / 'out'}", f"--tokenizer={folder}", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "IMPORTED []" in result.stdout, result.stdout + result.stderr
    assert (tmp_path / "out").is_dir()
