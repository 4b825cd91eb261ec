"""The fast (Rust) tokenizer of a hub name or local directory, as the pipelines need it. No Beam here.

`load(name_or_path)` returns a `LoadedTokenizer`: the `tokenizers.Tokenizer` that `transformers.AutoTokenizer`
would build (truncation and padding off) and the names of its special tokens. Two ways lead there:

* a BERT WordPiece tokenizer (a local directory, or a hub name already in the local Hugging Face cache) saved as
  `tokenizer.json` + `tokenizer_config.json`, or in the classic layout (`vocab.txt`, with or without a
  `tokenizer_config.json`, beside a `config.json` of model_type bert), is rebuilt with `tokenizers` alone
  (`corpus.bert_rebuild`), the way transformers' `BertTokenizer` builds it. Importing transformers imports torch
  (about 3 s per process); a corpus job needs neither.
* anything else (another model family, a config key the rebuild does not model, extra added tokens, a hub name
  not in the cache) goes through `transformers.AutoTokenizer` itself.

tests/test_tokenizer.py holds the two ways equal (same ids on adversarial and real text, same vocab, same special
ids) on every configuration the first way accepts, and checks which way each one takes.
"""

import dataclasses
import os
import threading
from typing import Any, Dict, Optional

from corpus import bert_rebuild
from corpus.bert_rebuild import MODEL_CONFIG_FILE, SPECIAL_NAMES, TOKENIZER_FILE, VOCAB_FILE

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
VOCABULARY_FILES = (TOKENIZER_FILE, VOCAB_FILE, "vocab.json", "spiece.model", "sentencepiece.bpe.model",
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
        size = bert_rebuild.read_json(path).get("vocab_size")
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
    special = {name: bert_rebuild.token_text(getattr(tokenizer, name, None)) for name in SPECIAL_NAMES}
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


def _tokenizer_files(name_or_path: str) -> Optional[Dict[str, str]]:
    """{file name: local path} of the tokenizer files, from a directory or the local hub cache; None if absent."""
    if os.path.isdir(name_or_path):
        found = {name: os.path.join(name_or_path, name) for name in bert_rebuild.FILES}
        return {name: path for name, path in found.items() if os.path.isfile(path)}
    if os.path.exists(name_or_path) or name_or_path.count("/") > 1:
        return None  # a file, or a path that is not a repo id: transformers gives the clear error
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = {}
    for name in bert_rebuild.FILES:
        try:
            path = try_to_load_from_cache(name_or_path, name)
        except Exception:  # an invalid repo id: let transformers report it
            return None
        if isinstance(path, str) and os.path.isfile(path):
            found[name] = path
    return found


def _rebuild_bert(name_or_path: str, files: Dict[str, str]) -> Optional[LoadedTokenizer]:
    """The BERT tokenizer transformers would build from these files, or None where the rebuild does not apply."""
    rebuilt = bert_rebuild.rebuild(files)
    if rebuilt is None:
        return None
    backend, special = rebuilt
    return LoadedTokenizer(name_or_path, backend, special, "tokenizers")


def _without_truncation(backend):
    from tokenizers import Tokenizer
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy
