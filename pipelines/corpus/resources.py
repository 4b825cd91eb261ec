"""The tokenizer a corpus run needs, loaded once in the launcher: its special token ids and "##" pieces."""

from corpus import instances as instances_lib
from corpus import tokenizer as tokenizer_lib
from contract.errors import UserError


def load_tokenizer(name_or_path: str) -> tokenizer_lib.LoadedTokenizer:
    """The fast tokenizer of --tokenizer.

    Raises:
      UserError: nothing loadable there, with what to pass instead.
    """
    try:
        return tokenizer_lib.load(name_or_path)
    except tokenizer_lib.TokenizerError as error:
        raise UserError(f"{error}; pass --tokenizer a hub name (reachable or in the local cache) or a "
                        "directory holding a fast tokenizer") from None


def special_tokens(tokenizer: tokenizer_lib.LoadedTokenizer) -> instances_lib.SpecialTokens:
    """The ids the instance cutter needs, and the vocab size (with added tokens).

    Raises:
      UserError: a tokenizer without [CLS], [SEP] or [MASK].
    """
    ids = {name: tokenizer.special_id(name) for name in ("cls_token", "sep_token", "mask_token")}
    missing = [f"{name}_id" for name, value in ids.items() if value is None]
    if missing:
        raise UserError(f"tokenizer lacks {', '.join(missing)}; a BERT-style WordPiece tokenizer is needed")
    filler = tokenizer.backend.token_to_id(".")
    return instances_lib.SpecialTokens(
        cls_id=ids["cls_token"], sep_id=ids["sep_token"], mask_id=ids["mask_token"],
        filler_id=filler if filler is not None else ids["sep_token"],
        vocab_size=tokenizer.backend.get_vocab_size(with_added_tokens=True))


def continuation_ids(tokenizer: tokenizer_lib.LoadedTokenizer) -> frozenset:
    """The ids of the vocab's "##" pieces (the word continuations whole-word masking keeps with their word)."""
    return frozenset(index for token, index in tokenizer.backend.get_vocab(with_added_tokens=True).items()
                     if token.startswith("##"))
