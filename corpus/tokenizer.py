"""The fast (Rust) tokenizer of a hub name or local directory, as the pipelines need it. No Beam here.

`load(name_or_path)` returns a `LoadedTokenizer`: the `tokenizers.Tokenizer` that `transformers.AutoTokenizer`
would build (truncation and padding off) and the names of its special tokens. Two ways lead there:

* for a BERT WordPiece tokenizer saved as `tokenizer.json` + `tokenizer_config.json` (a local directory, or a hub
  name already in the local Hugging Face cache), the tokenizer is rebuilt here with `tokenizers` alone, the way
  transformers' `BertTokenizer` rebuilds it: the WordPiece vocab of tokenizer.json, a `BertNormalizer` from the
  config's `do_lower_case` / `strip_accents` / `tokenize_chinese_chars` (the config wins over tokenizer.json's own
  normalizer, as in transformers), the BERT pre-tokenizer, and the special tokens as added tokens. Importing
  transformers imports torch (about 3 s per process); a corpus job needs neither.
* anything else (another model family, a config key this rebuild does not model, extra added tokens, a hub name
  not in the cache) goes through `transformers.AutoTokenizer` itself.

tests/test_tokenizer.py holds the two ways equal (same ids on adversarial text, same vocab, same special ids) on
every configuration the first way accepts, and checks which way each one takes.
"""

import dataclasses
import json
import os
import threading
from typing import Any, Dict, Optional

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
MODEL_CONFIG_FILE = "config.json"

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

# transformers' loading is not thread-safe (AutoTokenizer, and models materialised from the meta device); runners may
# call DoFn.setup from several threads of one process. Every transformers load of the project takes this one lock.
TRANSFORMERS_LOCK = threading.RLock()


class TokenizerError(ValueError):
    """No usable fast tokenizer: the message says what was tried and what to pass instead."""


@dataclasses.dataclass(frozen=True)
class LoadedTokenizer:
    """A fast tokenizer reduced to what the pipelines use.

    Attributes:
      name_or_path: what the user passed.
      backend: the Rust tokenizer, truncation and padding off.
      special_tokens: {"cls_token": "[CLS]", ...}: the tokenizer's special token strings (None where it has none).
      via: "tokenizers" (rebuilt here) or "transformers" (AutoTokenizer).
    """
    name_or_path: str
    backend: Any
    special_tokens: Dict[str, Optional[str]]
    via: str

    def special_id(self, name: str) -> Optional[int]:
        """The id of a special token by its attribute name ("cls_token"), or None."""
        token = self.special_tokens.get(name)
        return None if token is None else self.backend.token_to_id(token)

    def to_json(self) -> str:
        return self.backend.to_str()


# Files a tokenizer is saved as (fast, WordPiece, BPE, SentencePiece): a folder with none of them holds no tokenizer,
# whatever transformers would make of its config.json (a 5-token vocabulary, every word [UNK]).
VOCABULARY_FILES = (TOKENIZER_FILE, "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                    "tokenizer.model")


def check_folder(name_or_path: str) -> None:
    """Refuses a local folder that holds no tokenizer files.

    Raises:
      TokenizerError: the folder has none of VOCABULARY_FILES.
    """
    if os.path.isdir(name_or_path) and not any(os.path.isfile(os.path.join(name_or_path, name))
                                               for name in VOCABULARY_FILES):
        raise TokenizerError(f"{name_or_path} holds no tokenizer files ({' or '.join(VOCABULARY_FILES[:2])}); "
                             "save the tokenizer beside the model (tokenizer.save_pretrained) or pass the folder "
                             "or hub name of the model's own tokenizer")


def _model_vocab_size(name_or_path: str) -> Optional[int]:
    path = os.path.join(name_or_path, MODEL_CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    try:
        size = _read_json(path).get("vocab_size")
    except (OSError, ValueError, AttributeError):
        return None
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def check_fits_model(loaded: "LoadedTokenizer", vocab_size: Optional[int], *, model: str) -> None:
    """Refuses a tokenizer with ids the model has no embedding for (more tokens than its `vocab_size`).

    Raises:
      TokenizerError: the tokenizer's vocabulary does not fit the model's.
    """
    size = loaded.backend.get_vocab_size(with_added_tokens=True)
    if vocab_size is not None and size > vocab_size:
        raise TokenizerError(f"the tokenizer of {loaded.name_or_path} has {size:,} tokens but the model {model} has "
                             f"{vocab_size:,} embeddings (config.json vocab_size): they do not belong together; pass "
                             "the model's own tokenizer")


def load(name_or_path: str) -> LoadedTokenizer:
    """The fast tokenizer of `name_or_path` (hub name or local directory); see the module docstring. A folder that
    also holds a model's config.json must hold a tokenizer that fits it.

    Raises:
      TokenizerError: nothing loadable, no fast implementation, a folder without tokenizer files, or a vocabulary
        larger than the folder's model's.
    """
    check_folder(name_or_path)
    files = _tokenizer_files(name_or_path)
    loaded = _rebuild_bert(name_or_path, files) if files is not None else None
    if loaded is None:
        loaded = load_with_transformers(name_or_path)
    if os.path.isdir(name_or_path):
        check_fits_model(loaded, _model_vocab_size(name_or_path), model=name_or_path)
    return loaded


def load_with_transformers(name_or_path: str) -> LoadedTokenizer:
    """`load` through `transformers.AutoTokenizer` (any model family the installed transformers knows).

    Raises:
      TokenizerError: nothing loadable, or no fast implementation.
    """
    tokenizer = load_transformers_tokenizer(name_or_path)
    special = {name: _token_text(getattr(tokenizer, name, None)) for name in SPECIAL_NAMES}
    return LoadedTokenizer(name_or_path, _without_truncation(tokenizer.backend_tokenizer), special, "transformers")


def load_transformers_tokenizer(name_or_path: str):
    """The transformers fast tokenizer itself, for callers that need its methods (the augmentation's MLM).

    Raises:
      TokenizerError: nothing loadable, or no fast implementation.
    """
    from transformers import AutoTokenizer
    check_folder(name_or_path)
    try:
        with TRANSFORMERS_LOCK:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, use_fast=True)
    except Exception as error:  # OSError, ValueError, hub errors: all mean "cannot use this name"
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
        raise TokenizerError(f"cannot load a tokenizer from {name_or_path!r}: {first_line}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise TokenizerError(f"tokenizer {name_or_path!r} has no fast (Rust) implementation")
    return tokenizer


# ---------------------------------------------------------------------------------------------------------------
# The transformers-free rebuild


def _tokenizer_files(name_or_path: str) -> Optional[Dict[str, str]]:
    """{file name: local path} of the tokenizer files, from a directory or the local hub cache; None if absent."""
    names = (TOKENIZER_FILE, CONFIG_FILE, SPECIAL_TOKENS_FILE, MODEL_CONFIG_FILE)
    if os.path.isdir(name_or_path):
        found = {name: os.path.join(name_or_path, name) for name in names}
        return {name: path for name, path in found.items() if os.path.isfile(path)}
    if os.path.exists(name_or_path) or name_or_path.count("/") > 1:
        return None  # a file, or a path that is not a repo id: transformers gives the clear error
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = {}
    for name in names:
        try:
            path = try_to_load_from_cache(name_or_path, name)
        except Exception:  # an invalid repo id: let transformers report it
            return None
        if isinstance(path, str) and os.path.isfile(path):
            found[name] = path
    return found


def _rebuild_bert(name_or_path: str, files: Dict[str, str]) -> Optional[LoadedTokenizer]:
    """The BERT tokenizer transformers would build from these files, or None where this rebuild does not apply."""
    if TOKENIZER_FILE not in files or CONFIG_FILE not in files:
        return None
    try:
        config = _read_json(files[CONFIG_FILE])
        tokenizer_json = _read_json(files[TOKENIZER_FILE])
        special_map = _read_json(files[SPECIAL_TOKENS_FILE]) if SPECIAL_TOKENS_FILE in files else {}
        model_config = _read_json(files[MODEL_CONFIG_FILE]) if MODEL_CONFIG_FILE in files else {}
    except (OSError, ValueError):
        return None  # unreadable: transformers reports it in its own words
    if not all(isinstance(item, dict) for item in (config, tokenizer_json, special_map, model_config)):
        return None
    tokenizer_class = config.get("tokenizer_class")
    if tokenizer_class is None:
        # Without a class in the tokenizer config, AutoTokenizer follows the model config's model_type.
        if model_config.get("model_type") != "bert":
            return None
    elif tokenizer_class not in BERT_CLASSES:
        return None
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
        return None
    settings = {**BERT_DEFAULTS}
    for key, value in config.items():
        if key in BERT_DEFAULTS:
            settings[key] = value
        elif key not in _PASSIVE_KEYS:
            return None  # a setting this rebuild does not model: transformers knows what it means
    for name in SPECIAL_NAMES:
        if name in special_map and _token_text(special_map[name]) != _token_text(settings[name]):
            return None
    special = {name: _token_text(settings[name]) for name in SPECIAL_NAMES}
    if special_map.get("additional_special_tokens") or config.get("additional_special_tokens") \
            or config.get("extra_special_tokens"):
        return None
    if config.get("do_basic_tokenize", True) is False or config.get("never_split"):
        return None
    vocab = model["vocab"]
    if any(not isinstance(token, str) or token not in vocab for token in special.values()):
        return None
    # transformers registers exactly the special tokens as added tokens (matched before normalization, never
    # split); a tokenizer.json or config with others is left to transformers.
    expected = {token: vocab[token] for token in special.values()}
    added = tokenizer_json.get("added_tokens") or []
    if any(item.get("content") not in expected or item.get("id") != expected[item.get("content")]
           for item in added):
        return None
    for token_id, item in (config.get("added_tokens_decoder") or {}).items():
        content = item.get("content") if isinstance(item, dict) else None
        if content not in expected or int(token_id) != expected[content]:
            return None
    for flag in ("do_lower_case", "tokenize_chinese_chars"):
        if not isinstance(settings[flag], bool):
            return None
    if settings["strip_accents"] is not None and not isinstance(settings["strip_accents"], bool):
        return None

    from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece
    backend = Tokenizer(WordPiece(vocab, unk_token=special["unk_token"],
                                  continuing_subword_prefix=model.get("continuing_subword_prefix", "##"),
                                  max_input_chars_per_word=model.get("max_input_chars_per_word", 100)))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=settings["tokenize_chinese_chars"],
        strip_accents=settings["strip_accents"], lowercase=settings["do_lower_case"])
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # In id order, as transformers adds them; special tokens are not normalized (matched as written).
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False)
                                for token in sorted(set(special.values()), key=lambda t: vocab[t])])
    return LoadedTokenizer(name_or_path, backend, special, "tokenizers")


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _token_text(token: Any) -> Optional[str]:
    """A special token as text: transformers keeps them as str, AddedToken or {"content": ...}."""
    if token is None:
        return None
    if isinstance(token, dict):
        return token.get("content")
    return str(getattr(token, "content", token))


def _without_truncation(backend):
    from tokenizers import Tokenizer
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy
