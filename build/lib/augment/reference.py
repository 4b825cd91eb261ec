"""The reference's per-word candidate procedure, unbatched, as a baseline for tests and benchmarks.

This follows `data_augmentation.py` step by step (our code, not theirs): for every candidate word of a sentence it
tokenizes the sentence again, finds the word's pieces by counting pieces that do not start with `##`, and either
runs one full masked-LM forward (logits at every position, as `BertForMaskedLM` returns them) and sorts the whole
vocabulary at the mask, or takes the word's GloVe neighbours with one dot product against the whole matrix and a
full sort. `augment.pipeline`'s batched path must give the same candidates.
"""

from typing import Dict, List

import numpy as np
import torch

from augment.glove import GloveIndex
from augment.mlm import MAX_POSITIONS
from augment.words import WordSplitter, is_candidate_word


def _glove_neighbours(index: GloveIndex, word: str, top_k: int) -> List[str]:
    if word not in index.word_to_index:
        return []
    unit = index.unit_vectors.numpy()
    row = index.word_to_index[word]
    with np.errstate(invalid="ignore"):
        similarity = unit @ unit[row]
    similarity[np.linalg.norm(unit, axis=1) == 0] = np.nan  # the reference's 0/0 rows
    similarity[row] = -np.inf
    order = np.argsort(-similarity, kind="stable")[:top_k]
    found = [index.words[i] for i in order]
    return [w.title() for w in found] if word.istitle() else found


@torch.inference_mode()
def _masked_lm(model, tokenizer, sentence: str, pieces_with_mask: List[str], mask_index: int,
               top_k: int) -> List[str]:
    if mask_index >= MAX_POSITIONS:
        return []
    pieces = tokenizer.tokenize(sentence)
    tokens = pieces_with_mask + [tokenizer.sep_token] + pieces + [tokenizer.sep_token]
    segments = [0] * (len(pieces) + 2) + [1] * (len(pieces) + 1)
    tokens, segments = tokens[:MAX_POSITIONS], segments[:MAX_POSITIONS]
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(tokens)])
    logits = model(input_ids=ids, token_type_ids=torch.tensor([segments])).logits  # (1, seq, vocab)
    best = torch.argsort(logits[0, mask_index], descending=True)[:top_k].tolist()
    return [piece for piece in tokenizer.convert_ids_to_tokens(best) if not piece.startswith("##")]


def sentence_candidates(model, tokenizer, glove: GloveIndex, sentence: str, *, top_k: int = 15
                        ) -> Dict[int, List[str]]:
    """{word index: candidates} for every candidate word of `sentence`, one word at a time as the reference does."""
    words = WordSplitter(tokenizer.backend_tokenizer).split(sentence)
    result: Dict[int, List[str]] = {}
    for word_index, word in enumerate(words):
        if not is_candidate_word(word):
            continue
        pieces = [tokenizer.cls_token] + tokenizer.tokenize(sentence)
        seen, word_pieces = -1, []
        for position in range(1, len(pieces)):
            if not pieces[position].startswith("##"):
                seen += 1
                if seen == word_index:
                    word_pieces = [position]
                elif seen > word_index:
                    break
            elif seen == word_index:
                word_pieces.append(position)
        if len(word_pieces) == 1:
            pieces[word_pieces[0]] = tokenizer.mask_token
            candidates = _masked_lm(model, tokenizer, sentence, pieces, word_pieces[0], top_k)
        else:
            candidates = _glove_neighbours(glove, word, top_k)
        result[word_index] = candidates or [word]
    return result
