"""The BERT WordPiece tokenizer that transformers' `BertTokenizer` builds, rebuilt with `tokenizers` alone.

Importing transformers imports torch (about 3 s per process); a corpus job needs neither. Two folder layouts are
rebuilt here, exactly as transformers builds them:

* `tokenizer.json` + `tokenizer_config.json` (what `save_pretrained` writes): the WordPiece vocab of tokenizer.json;
* `vocab.txt` without `tokenizer.json` (the classic layout: Google's converted checkpoints, the TinyBERT releases,
  `config.json` + `pytorch_model.bin` + `vocab.txt`), with or without a `tokenizer_config.json`: the vocabulary read
  by the same Rust reader transformers hands the file to (`WordPiece.read_file`).

Either way the normalizer is a `BertNormalizer` from the tokenizer config's `do_lower_case` / `strip_accents` /
`tokenize_chinese_chars` (transformers' `BertTokenizer` defaults where absent; the config wins over tokenizer.json's
own normalizer, as in transformers), then the BERT pre-tokenizer, and the special tokens as added tokens. Anything
this rebuild does not model (another model family, an unknown config key, extra added tokens, special tokens missing
from the vocabulary) returns None, and the caller goes through `transformers.AutoTokenizer`.
tests/test_tokenizer.py holds the rebuild equal to AutoTokenizer on every configuration it accepts.
"""

import json
from typing import Any, Dict, Optional, Tuple

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
MODEL_CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.txt"
ADDED_TOKENS_FILE = "added_tokens.json"
# Every file the rebuild reads or must know about, in a local folder or the hub cache.
FILES = (TOKENIZER_FILE, CONFIG_FILE, SPECIAL_TOKENS_FILE, MODEL_CONFIG_FILE, VOCAB_FILE, ADDED_TOKENS_FILE)

BERT_CLASSES = frozenset({"BertTokenizer", "BertTokenizerFast"})
SPECIAL_NAMES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
BERT_DEFAULTS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                 "mask_token": "[MASK]", "do_lower_case": True, "strip_accents": None, "tokenize_chinese_chars": True}
# Config keys that do not change how text becomes ids (bookkeeping, decoding, padding side, length limits).
_PASSIVE_KEYS = frozenset({
    "tokenizer_class", "backend", "is_local", "local_files_only", "model_max_length", "name_or_path",
    "clean_up_tokenization_spaces", "padding_side", "truncation_side", "model_input_names", "special_tokens_map_file",
    "added_tokens_decoder", "extra_special_tokens", "additional_special_tokens", "do_basic_tokenize", "never_split",
    "max_len", "init_inputs", "full_tokenizer_file", "auto_map", "processor_class", "split_special_tokens",
})


def rebuild(files: Dict[str, str]) -> Optional[Tuple[Any, Dict[str, str]]]:
    """The `tokenizers.Tokenizer` transformers would build from these files, and its special token strings.

    Args:
      files: {file name (one of FILES): local path} of the files that exist.

    Returns:
      (backend, {"cls_token": "[CLS]", ...}), or None where this rebuild does not apply (the caller then asks
      transformers).
    """
    if ADDED_TOKENS_FILE in files:
        return None  # legacy added tokens: transformers turns them into added tokens of its own
    if TOKENIZER_FILE in files:
        if CONFIG_FILE not in files:
            return None
        source = "json"
    elif VOCAB_FILE in files:
        source = "vocab.txt"
    else:
        return None
    try:
        config = read_json(files[CONFIG_FILE]) if CONFIG_FILE in files else {}
        special_map = read_json(files[SPECIAL_TOKENS_FILE]) if SPECIAL_TOKENS_FILE in files else {}
        model_config = read_json(files[MODEL_CONFIG_FILE]) if MODEL_CONFIG_FILE in files else {}
        tokenizer_json = read_json(files[TOKENIZER_FILE]) if source == "json" else {}
    except (OSError, ValueError):
        return None  # unreadable: transformers reports it in its own words
    if not all(isinstance(item, dict) for item in (config, tokenizer_json, special_map, model_config)):
        return None
    if not _is_bert(config, model_config):
        return None
    settings = _settings(config, special_map)
    if settings is None:
        return None
    special = {name: token_text(settings[name]) for name in SPECIAL_NAMES}
    if source == "json":
        model = tokenizer_json.get("model") or {}
        if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
            return None
        vocab = model["vocab"]
        options = {"continuing_subword_prefix": model.get("continuing_subword_prefix", "##"),
                   "max_input_chars_per_word": model.get("max_input_chars_per_word", 100)}
        added = tokenizer_json.get("added_tokens") or []
    else:
        from tokenizers.models import WordPiece
        try:
            vocab = WordPiece.read_file(files[VOCAB_FILE])
        except Exception:  # not UTF-8, unreadable: transformers reports it
            return None
        options, added = {}, []
    if any(not isinstance(token, str) or token not in vocab for token in special.values()):
        return None
    # transformers registers exactly the special tokens as added tokens (matched before normalization, never
    # split); a tokenizer.json or config with others is left to transformers.
    expected = {token: vocab[token] for token in special.values()}
    if any(not isinstance(item, dict) or item.get("content") not in expected
           or item.get("id") != expected[item.get("content")] for item in added):
        return None
    for token_id, item in (config.get("added_tokens_decoder") or {}).items():
        content = item.get("content") if isinstance(item, dict) else None
        if content not in expected or str(token_id) != str(expected[content]):
            return None
    return _build(vocab, settings, special, options), special


def _is_bert(config: Dict[str, Any], model_config: Dict[str, Any]) -> bool:
    """Whether AutoTokenizer would pick BertTokenizer: the tokenizer config's class, else the model config's class,
    else its model_type."""
    tokenizer_class = config.get("tokenizer_class", model_config.get("tokenizer_class"))
    if tokenizer_class is None:
        return model_config.get("model_type") == "bert"
    return tokenizer_class in BERT_CLASSES


def _settings(config: Dict[str, Any], special_map: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """BertTokenizer's arguments from the tokenizer config over its defaults; None for anything not modelled here."""
    settings = {**BERT_DEFAULTS}
    for key, value in config.items():
        if key in BERT_DEFAULTS:
            settings[key] = value
        elif key not in _PASSIVE_KEYS:
            return None  # a setting this rebuild does not model: transformers knows what it means
    for name in SPECIAL_NAMES:
        if name in special_map and token_text(special_map[name]) != token_text(settings[name]):
            return None
    if special_map.get("additional_special_tokens") or config.get("additional_special_tokens") \
            or config.get("extra_special_tokens"):
        return None
    if config.get("do_basic_tokenize", True) is False or config.get("never_split"):
        return None
    for flag in ("do_lower_case", "tokenize_chinese_chars"):
        if not isinstance(settings[flag], bool):
            return None
    if settings["strip_accents"] is not None and not isinstance(settings["strip_accents"], bool):
        return None
    return settings


def _build(vocab: Dict[str, int], settings: Dict[str, Any], special: Dict[str, str], options: Dict[str, Any]):
    from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece
    backend = Tokenizer(WordPiece(vocab, unk_token=special["unk_token"], **options))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=settings["tokenize_chinese_chars"],
        strip_accents=settings["strip_accents"], lowercase=settings["do_lower_case"])
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # In id order, as transformers adds them; special tokens are not normalized (matched as written).
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False)
                                for token in sorted(set(special.values()), key=lambda t: vocab[t])])
    return backend


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def token_text(token: Any) -> Optional[str]:
    """A special token as text: transformers keeps them as str, AddedToken or {"content": ...}."""
    if token is None:
        return None
    if isinstance(token, dict):
        return token.get("content")
    return str(getattr(token, "content", token))
