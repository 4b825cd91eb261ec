"""Builds everything the README's demo needs where no model hub is reachable: models, GloVe file, sample texts.

Usage:
  python -m pipelines.demo_assets --output demo_assets
  python -m pipelines.augment --runner=DirectRunner --model demo_assets/bert --glove demo_assets/glove.txt

Writes, under --output:
  bert/          a small BERT masked LM + tokenizer (the augmenter's model, and the general-distillation teacher)
  teacher-sst2/  a BERT classifier with 2 labels, same size and vocab (the task teacher; untrained, so its scores
                 mean nothing: it stands in for a fine-tuned BERT-base)
  student.json   a 1-layer student config for the distillation commands
  glove.txt      GloVe-format vectors
  corpus.txt     the sample sentences as documents in the corpus pipeline's text format
  train.tsv, dev.tsv  the sample SST-2 task

The BERT has seeded random weights (its candidates mean nothing, but every code path runs as with
bert-base-uncased); its WordPiece vocabulary is trained on the sample task, or is `--vocab` (e.g. the real
bert-base-uncased vocab.txt). The GloVe file holds vectors from a truncated SVD of the word co-occurrence counts of
the same text, in GloVe's published text format.
"""

import argparse
import collections
import csv
import json
import logging
import os
import pathlib
import shutil
from typing import Dict, Iterable, List, Optional

import numpy as np

SAMPLE_TRAIN = pathlib.Path(__file__).resolve().parent / "samples" / "sst2" / "train.tsv"


def read_vocab(vocab_file: str) -> Dict[str, int]:
    """A WordPiece vocab.txt (one token per line, in id order) as {token: id}."""
    with open(vocab_file, encoding="utf-8") as handle:
        return {line.rstrip("\n"): index for index, line in enumerate(handle)}


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece_tokenizer(*, vocab: Optional[Dict[str, int]] = None, texts: Iterable[str] = (), vocab_size: int = 600,
                        lowercase: bool = True, whole_word_share: float = 1.0):
    """A BERT fast tokenizer: from `vocab`, or a vocabulary made from `texts`.

    The vocabulary made from texts is deterministic (the `tokenizers` WordPiece trainer breaks ties between equally
    frequent merges differently from one process to the next, so its vocabulary, and every output made with it,
    would change between runs): the special tokens, every character alone and as a `##` continuation (so any word
    of the texts can be written), then whole words by frequency (ties by the word), up to `vocab_size` and at most
    `whole_word_share` of the texts' words of two or more characters. The rest are written in pieces: as in a real
    vocabulary, where rare words are, and those are the words the augmentation replaces by GloVe neighbours.
    """
    from transformers import BertTokenizer
    if vocab is None:
        from tokenizers.normalizers import BertNormalizer
        from tokenizers.pre_tokenizers import BertPreTokenizer
        normalizer = BertNormalizer(lowercase=lowercase)
        pre_tokenizer = BertPreTokenizer()
        counts = collections.Counter(
            word for text in texts for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
        chars = sorted({char for word in counts for char in word})
        tokens = SPECIAL_TOKENS + chars + ["##" + char for char in chars]
        words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if len(w) > 1]
        tokens += words[:max(0, min(vocab_size - len(tokens), int(len(words) * whole_word_share)))]
        vocab = {token: index for index, token in enumerate(tokens)}
    return BertTokenizer(vocab=dict(vocab), do_lower_case=lowercase)


def build_masked_lm(output_dir: str, tokenizer, *, layers: int = 2, hidden: int = 64, heads: int = 2,
                    intermediate: int = 128, seed: int = 0) -> str:
    """Saves a randomly initialised (seeded) BertForMaskedLM and its tokenizer with `save_pretrained`."""
    import torch
    from transformers import BertConfig, BertForMaskedLM
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer.get_vocab()), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=512)
    model = BertForMaskedLM(config).eval()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def build_classifier(output_dir: str, tokenizer, *, layers: int = 2, hidden: int = 64, heads: int = 2,
                     intermediate: int = 128, num_labels: int = 2, seed: int = 1) -> str:
    """Saves a randomly initialised (seeded) BertForSequenceClassification and its tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer.get_vocab()), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=512,
                        num_labels=num_labels)
    BertForSequenceClassification(config).eval().save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def cooccurrence_vectors(sentences: Iterable[List[str]], *, dim: int = 16, window: int = 2):
    """(words by frequency, vectors): a truncated SVD of the log co-occurrence counts, GloVe-like in spirit."""
    counts = collections.Counter()
    sentences = [list(s) for s in sentences]
    for words in sentences:
        counts.update(words)
    vocab = [word for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
    index = {word: i for i, word in enumerate(vocab)}
    matrix = np.zeros((len(vocab), len(vocab)))
    for words in sentences:
        for i, word in enumerate(words):
            for j in range(max(0, i - window), min(len(words), i + window + 1)):
                if i != j:
                    matrix[index[word], index[words[j]]] += 1.0
    u, s, _ = np.linalg.svd(np.log1p(matrix), full_matrices=False)
    dim = min(dim, len(s))
    return vocab, u[:, :dim] * s[:dim]


def write_glove(path: str, words: List[str], vectors: np.ndarray) -> str:
    """Writes GloVe's text format: `word v1 ... vD` per line."""
    with open(path, "w", encoding="utf-8") as handle:
        for word, vector in zip(words, vectors):
            handle.write(word + " " + " ".join(f"{value:.6f}" for value in vector) + "\n")
    return path


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        from contract.errors import UserError
        raise UserError(f"{message} (see --help)")


def main(argv=None):
    """The command line: every failure is one `error:` line and exit status 1 (pipelines.cli.run_main)."""
    from pipelines import entry
    entry.quiet_root_logger()  # before Beam's import, which would print a stray warning line
    from pipelines import cli
    cli.run_main(_build, argv)


def _build(argv) -> None:
    parser = _OneLineParser(prog="python -m pipelines.demo_assets", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="demo_assets", help="directory for bert/ and glove.txt")
    parser.add_argument("--text", default=str(SAMPLE_TRAIN), help="SST-2-layout TSV to train the vocab/vectors on")
    parser.add_argument("--vocab", default=None, help="use this WordPiece vocab.txt instead of training one")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args(argv)
    if not os.path.isfile(args.text):
        from contract.errors import UserError
        raise UserError(f"--text {args.text} does not exist; pass an SST-2-layout TSV (sentence<TAB>label, header)")
    with open(args.text, encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    texts = [row[0] for row in rows[1:] if row]
    # Half the sample's words whole: the other half are rare words in pieces, so the demo's augmentation uses both
    # of its sources (masked-LM candidates for whole words, GloVe neighbours for words in pieces).
    tokenizer = wordpiece_tokenizer(vocab=read_vocab(args.vocab) if args.vocab else None, texts=texts,
                                    whole_word_share=0.5)
    os.makedirs(args.output, exist_ok=True)
    model_dir = build_masked_lm(os.path.join(args.output, "bert"), tokenizer, layers=args.layers, hidden=args.hidden)
    from augment.words import WordSplitter
    splitter = WordSplitter(tokenizer.backend_tokenizer)
    words, vectors = cooccurrence_vectors(splitter.split(text) for text in texts)
    glove = write_glove(os.path.join(args.output, "glove.txt"), words, vectors)
    build_classifier(os.path.join(args.output, "teacher-sst2"), tokenizer, layers=args.layers, hidden=args.hidden,
                     num_labels=2)
    with open(os.path.join(args.output, "student.json"), "w", encoding="utf-8") as handle:
        # Heads as the teacher's: attention scores are matched head by head.
        json.dump({"num_hidden_layers": 1, "hidden_size": max(2, args.hidden // 2), "num_attention_heads": 2,
                   "intermediate_size": args.hidden}, handle)
    with open(os.path.join(args.output, "corpus.txt"), "w", encoding="utf-8") as handle:
        # Documents of four sentences, one sentence a line, a blank line between documents.
        handle.write("\n\n".join("\n".join(texts[i:i + 4]) for i in range(0, len(texts), 4)) + "\n")
    for name in ("train.tsv", "dev.tsv"):
        shutil.copyfile(SAMPLE_TRAIN.parent / name, os.path.join(args.output, name))
    logging.info("wrote %s (vocab %d), teacher-sst2/, student.json, %s (%d words), corpus.txt, train.tsv, dev.tsv",
                 model_dir, len(tokenizer.get_vocab()), glove, len(words))


if __name__ == "__main__":
    main()
