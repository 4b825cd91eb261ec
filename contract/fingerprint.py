"""The tokenizer fingerprint a manifest records and the trainer's reader compares with its model's."""

import hashlib
import json
from typing import Any, Dict


def tokenizer_fingerprint(tokenizer: Any, name_or_path: str) -> Dict[str, Any]:
    """What a manifest records about a fast tokenizer, and what readers compare against their model's.

    Args:
      tokenizer: a transformers fast tokenizer, a `corpus.tokenizer.LoadedTokenizer` or a `tokenizers.Tokenizer`.
      name_or_path: what the user named it by (recorded, not compared).

    The vocab SHA-256 is over the tokens (added tokens included) in id order joined by newlines, so the same vocab
    hashes the same whether it was loaded from the hub, a directory, a tokenizer.json or without transformers.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "backend", None) or tokenizer
    vocab = backend.get_vocab(with_added_tokens=True)
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    digest = hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()
    normalizer = json.loads(backend.to_str()).get("normalizer") or {}
    return {"name_or_path": str(name_or_path), "vocab_sha256": digest, "vocab_size": len(tokens),
            "do_lower_case": bool(normalizer.get("lowercase", False))}
