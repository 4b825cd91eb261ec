"""GloVe nearest neighbours, the candidate source for words of several WordPieces.

The reference keeps the first 100,000 words of the published GloVe text file, normalises every vector, and for a
word returns the `M` words of highest cosine similarity, itself excluded, title-cased when the word is. Here the
neighbours of many words are computed at once with a matrix product and `torch.topk` (no full sort), in float64
as the reference's numpy code does, so the lists match it.
"""

import math
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import torch

from contract.errors import InputError


class GloveFormatError(InputError):
    """A line of the GloVe file is not `word v1 ... vD` of finite numbers with the dimension of the first line."""


_BLOCK_LINES = 8192  # lines parsed together by the fast path


def _parse_block(block: List[Tuple[int, str]], dim: int, words: List[str], source: str) -> np.ndarray:
    """The vectors of a block of lines (appending their words to `words`): the fast path where every line is a
    one-word `word v1 ... vD` of finite numbers (Arrow's C++ number parser over the whole block, about 4x faster
    than a Python loop on 100k x 300 values), else line by line (`_parse_line`), which finds and names the bad
    line. Both parse a number to the same float64: correctly rounded."""
    if all(text.count(" ") == dim for _, text in block):
        parts = [text.partition(" ") for _, text in block]  # (word, " ", numbers)
        numbers = "\n".join(part[2] for part in parts).encode("utf-8")
        try:
            table = pcsv.read_csv(pa.py_buffer(numbers), read_options=pcsv.ReadOptions(
                column_names=[str(i) for i in range(dim)], use_threads=False, block_size=max(1 << 20, len(numbers) + 1)),
                parse_options=_CSV_PARSE, convert_options=pcsv.ConvertOptions(
                    column_types={str(i): pa.float64() for i in range(dim)}, null_values=[],
                    strings_can_be_null=False))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            table = None
        if table is not None and table.num_rows == len(block):
            vectors = np.empty((len(block), dim), dtype=np.float64, order="F")  # column writes are contiguous
            for column in range(dim):
                vectors[:, column] = table.column(column).to_numpy()
            if np.isfinite(vectors).all():
                for row, (word, _, _) in enumerate(parts):
                    words.append(word)
                    if word == "<unk>":
                        vectors[row] = 0.0  # the reference leaves the vector of '<unk>' at zero
                return vectors
    rows = []
    for line_number, text in block:
        word, vector = _parse_line(text, line_number, dim, source)
        words.append(word)
        rows.append(np.zeros(dim) if word == "<unk>" else vector)  # the reference leaves '<unk>' at zero
    return np.stack(rows)


def _parse_line(text: str, line_number: int, dim: int, source: str) -> Tuple[str, np.ndarray]:
    """One `word v1 ... vD` line (the word may hold spaces), or GloveFormatError naming the line."""
    items = text.split(" ")
    # Some published files (840B) hold words with spaces: the vector is always the last `dim` items, and
    # a line whose item before them is a number has a value too many, not a longer word.
    if len(items) < dim + 1 or (len(items) > dim + 1 and _is_number(items[-dim - 1])):
        raise GloveFormatError(
            f"{source} line {line_number} has {len(items) - 1} values, expected {dim} (the first line's); "
            "is this a GloVe text file, and complete?")
    word = " ".join(items[:-dim])
    try:
        vector = np.asarray(items[-dim:], dtype=np.float64)
    except ValueError as error:
        raise GloveFormatError(f"{source} line {line_number}: {error}") from None
    if not np.isfinite(vector).all():
        raise GloveFormatError(f"{source} line {line_number}: the vector of {word!r} holds a value that is "
                               "not a finite number (inf or nan)")
    return word, vector


_CSV_PARSE = pcsv.ParseOptions(delimiter=" ", quote_char=False, escape_char=False, double_quote=False,
                               newlines_in_values=False, ignore_empty_lines=False)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


class GloveIndex:
    """The first `vocab_limit` GloVe vectors, normalised, with their words.

    Build it with `from_lines` on the lines of a GloVe text file (the caller opens the file).
    """

    def __init__(self, words: Sequence[str], vectors: np.ndarray):
        self.words: List[str] = list(words)
        # Like the reference, a repeated word maps to its last row.
        self.word_to_index: Dict[str, int] = {word: index for index, word in enumerate(self.words)}
        vectors = np.ascontiguousarray(vectors, dtype=np.float64)  # row sums below in the order the reference sums
        norms = np.sqrt((vectors ** 2).sum(axis=1))  # as before and as the reference: the same float64 rounding
        self._has_norm = torch.from_numpy(norms > 0)
        safe = np.where(norms > 0, norms, 1.0)
        self._unit = torch.from_numpy(vectors / safe[:, None])  # (vocab, dim)

    @classmethod
    def from_lines(cls, lines: Iterable[str], vocab_limit: int = 100_000, *,
                   source: str = "the GloVe file") -> "GloveIndex":
        """Parses GloVe's text format: one `word v1 ... vD` per line, most frequent first.

        Args:
          source: the file's name, for the error messages.

        Raises:
          GloveFormatError: a line with more or fewer values than the first, a value that is not a finite number,
            or no vectors at all; the message names `source` and the line number.
        """
        words: List[str] = []
        blocks: List[np.ndarray] = []
        dim = None
        block: List[Tuple[int, str]] = []  # (line number, line without its line end) of lines with a vector
        for line_number, line in enumerate(lines, start=1):
            if len(words) + len(block) >= vocab_limit:
                break
            stripped = line.rstrip()
            if " " not in stripped:
                continue  # fewer than two items: not a vector line (the reference skips these too)
            if dim is None:
                dim = stripped.count(" ")
            block.append((line_number, stripped))
            if len(block) == _BLOCK_LINES:
                blocks.append(_parse_block(block, dim, words, source))
                block = []
        if block:
            blocks.append(_parse_block(block, dim, words, source))
        if not words:
            raise GloveFormatError(f"{source} holds no vectors")
        return cls(words, np.concatenate(blocks))

    def __len__(self) -> int:
        return len(self.words)

    @property
    def unit_vectors(self) -> torch.Tensor:
        """(vocab, dim) float64, each row of norm 1 (zero rows stay zero)."""
        return self._unit

    def neighbours(self, words: Iterable[str], top_k: int, batch_size: int = 128) -> Dict[str, List[str]]:
        """The `top_k` nearest words by cosine of each of `words`; [] for a word not in the index.

        Every distinct word is computed once, in batches of `batch_size` rows of one matrix product (a batch holds
        batch_size x vocab float64 similarities: 100 MB for 128 x 100,000).
        """
        unique = sorted(set(words))
        known = [word for word in unique if word in self.word_to_index]
        result: Dict[str, List[str]] = {word: [] for word in unique}
        k = min(top_k, len(self.words) - 1)
        for start in range(0, len(known), batch_size):
            batch = known[start:start + batch_size]
            rows = torch.tensor([self.word_to_index[word] for word in batch])
            similarity = self._unit[rows] @ self._unit.T  # (batch, vocab)
            # A zero vector has no direction: the reference's NaN similarities sort last.
            similarity[:, ~self._has_norm] = -math.inf
            similarity[~self._has_norm[rows]] = -math.inf
            similarity[torch.arange(len(batch)), rows] = -math.inf  # never the word itself
            top = torch.topk(similarity, k, dim=1).indices.tolist()
            for word, indices in zip(batch, top):
                found = [self.words[i] for i in indices]
                result[word] = [w.title() for w in found] if word.istitle() else found
        return result
