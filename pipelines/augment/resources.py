"""What the augmentation loads: the masked LM and its tokenizer, GloVe files, stop words, and each worker's device.

The launcher checks and resolves the run's resources once (`resolve`), as data, before any work: the GloVe file is
read through the damage-checking reader and parsed (every line the first line's dimension, every value finite),
the masked LM is loaded and must hold every weight it needs (never a head initialised at random), and its tokenizer
must fit its embeddings. A problem is one line naming the file. Workers load the model and the GloVe index again in
their DoFns' setup (transforms).
"""

import dataclasses
import hashlib
import io
import json
import logging
import os
import sys
import tempfile
import zipfile
import zlib
from typing import Any, Iterable, Optional, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from augment import mlm as mlm_lib
from augment.glove import GloveIndex
from contract.errors import InputError, UserError
from corpus import tokenizer as tokenizer_lib
from pipelines import sources
from pipelines.augment import candidate_store
from pipelines.augment.config import DEFAULT_GLOVE, AugmentConfig, StoreSettings

WEIGHT_FILES = {"model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json"}


@dataclasses.dataclass(frozen=True)
class RunResources:
    """The run's resources, resolved once by the launcher.

    Attributes:
      glove: the GloVe file, or None when GloVe is off.
      stop_words: the words of --stop_words, or None for the word rule's own list.
      stop_words_sha256: the SHA-256 of the --stop_words file (for the manifest), or None.
      tokenizer: the model's fast tokenizer (its fingerprint goes into the manifest).
      store: the candidate store of the run's masked-LM answers, or None (off, or no answer is needed).
    """
    glove: Optional[str]
    stop_words: Optional[Tuple[str, ...]]
    stop_words_sha256: Optional[str]
    tokenizer: Any
    store: Optional[StoreSettings] = None


def resolve(config: AugmentConfig) -> RunResources:
    """The run's GloVe file, stop words and tokenizer, each checked.

    Raises:
      UserError: a GloVe file, stop-word file or model directory that is missing or unusable; a tokenizer that
        does not load.
    """
    glove = resolve_glove(config)
    if glove is not None and not glove_exists(glove):
        raise UserError(f"GloVe file {glove} not found; pass --glove PATH to a GloVe text file "
                        "(e.g. glove.6B.300d.txt from the Stanford GloVe site), or --glove none")
    stop_words, stop_words_sha256 = (read_stop_words(config.stop_words) if config.stop_words is not None
                                     else (None, None))
    needs_answers = config.num_aug != 0 or config.score_only
    _check_model_dir(config.model, weights=False)
    try:
        tokenizer = load_tokenizer(config.model)
    except Exception as error:  # the hub's and the loader's errors differ; the fix is the same
        raise UserError(f"cannot load the tokenizer of --model {config.model} ({type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else ''}); pass a hub name or a local "
                        "directory holding a BERT masked LM and its tokenizer") from None
    store, fingerprint = candidate_store.resolve_store(config) if needs_answers else (None, None)
    if store is not None and (fingerprint is None or candidate_store.is_recorded(store.root, fingerprint)):
        # answers from the store alone, or these very files were checked by the run that recorded them
        _check_vocab_size(config.model, tokenizer)
    elif needs_answers:
        _check_model_dir(config.model, weights=True, store_hint=config.store_root() is not None)
        _check_masked_lm(config.model, tokenizer)
        if store is not None:
            candidate_store.record_model(store.root, fingerprint, config.model)
    if needs_answers and glove is not None:
        load_glove(glove, config.glove_vocab)
    return RunResources(glove, stop_words, stop_words_sha256, tokenizer, store)


def _check_vocab_size(model: str, tokenizer) -> None:
    """The tokenizer's ids fit the model's embeddings (config.json vocab_size), without loading the weights."""
    with open(candidate_store.model_file(model, "config.json"), encoding="utf-8") as handle:
        vocab_size = json.load(handle).get("vocab_size", 0)
    if len(tokenizer) > vocab_size:
        raise UserError(f"--model {model}: its tokenizer has {len(tokenizer):,} tokens but the model has "
                        f"{vocab_size:,} embeddings (config.json vocab_size); they do not belong together")


def _check_masked_lm(model: str, tokenizer) -> None:
    """Loads the masked LM once: every weight it needs is in the checkpoint, and the tokenizer's ids fit it.

    Raises:
      UserError: a checkpoint without the masked-LM head (or any weight), or a tokenizer larger than the model.
    """
    try:
        loaded = mlm_lib.load_masked_lm(model)
    except mlm_lib.MaskedLMError as error:
        raise UserError(f"--model {error}") from None
    vocab_size = loaded.config.vocab_size
    if len(tokenizer) > vocab_size:
        raise UserError(f"--model {model}: its tokenizer has {len(tokenizer):,} tokens but the model has "
                        f"{vocab_size:,} embeddings (config.json vocab_size); they do not belong together")


def _check_model_dir(model: str, *, weights: bool, store_hint: bool = False) -> None:
    """A --model folder holds a config.json, and the weights where the masked LM will run."""
    if os.path.isdir(model):
        names = set(os.listdir(model))
        if "config.json" not in names:
            raise UserError(f"--model {model} has no config.json; pass a directory written by save_pretrained (or "
                            "a hub name)")
        if weights and not names & WEIGHT_FILES:
            raise UserError(f"--model {model} holds no weights (model.safetensors or pytorch_model.bin); save the "
                            "model with save_pretrained into it" + (
                                " (a run without weights draws from a --candidate_store that a run with them filled "
                                "for this input, e.g. with --score_only; this store has no model of this config "
                                "and vocabulary)" if store_hint else ""))


def resolve_glove(config: AugmentConfig) -> Optional[str]:
    """The GloVe file to use, or None when GloVe is off (--glove none, omitted with --word_rule unicode, or
    --num_aug 0: no candidate is drawn, so none is looked up)."""
    if config.num_aug == 0 or config.score_only:
        return None
    if config.glove is None:
        return DEFAULT_GLOVE if config.word_rule == "reference" else None
    return None if config.glove.strip().lower() in ("", "none") else config.glove


def read_stop_words(path: str) -> Tuple[Tuple[str, ...], str]:
    """(the stop words of a UTF-8 file, one per line, blank lines skipped; the SHA-256 of the file).

    Raises:
      UserError: the file is missing or not UTF-8.
    """
    if not FileSystems.exists(path):
        raise UserError(f"--stop_words file {path} not found")
    with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
        data = handle.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(f"--stop_words file {path} is not UTF-8 ({error.reason} at byte {error.start})") from None
    words = tuple(line.strip() for line in text.splitlines() if line.strip())
    return words, hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------------------- GloVe
def open_glove_lines(spec: str) -> Iterable[str]:
    """Lines of a published GloVe file: text (plain, gzip, bz2 or xz, told by its first bytes, checked for
    truncation), or a `.zip` member as `archive.zip:member.txt` (a `.zip` alone: its only or first `.txt` member).

    Raises:
      InputError: a damaged or truncated file or zip member, or a line that is not UTF-8 (naming the line).
    """
    archive, _, member = spec.partition(".zip:")
    if spec.endswith(".zip") or member:
        archive = archive if spec.endswith(".zip") and not member else archive + ".zip"
        try:
            with FileSystems.open(archive, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
                with zipfile.ZipFile(io.BytesIO(raw.read())) as bundle:
                    names = [n for n in bundle.namelist() if n.endswith(".txt")] or bundle.namelist()
                    with bundle.open(member or names[0]) as handle:
                        yield from _decoded_lines(spec, ((None, line.rstrip(b"\r\n")) for line in handle))
        except (zipfile.BadZipFile, EOFError, zlib.error, KeyError) as error:
            raise InputError(f"{spec}: damaged or incomplete zip archive ({error}); download the file again") from None
        return
    with sources.open_input(spec) as handle:
        yield from _decoded_lines(spec, sources.iter_lines(handle))


def _decoded_lines(spec: str, lines) -> Iterable[str]:
    for line_number, (_, raw) in enumerate(lines, start=1):
        try:
            yield raw.decode("utf-8") + "\n"
        except UnicodeDecodeError as error:
            raise InputError(f"{spec} line {line_number} is not UTF-8 text ({error.reason} at byte {error.start}); "
                             "is this a GloVe text file?") from None


# The last GloVe index this process parsed, by (spec, vocab_limit, size and mtime of the file): the launcher's check
# parses the file before any work, and a worker in the same process (the DirectRunner's default) then reuses it
# instead of parsing 100k x 300 numbers again. One slot; `forget_glove` empties it when a run ends.
_GLOVE_CACHE: dict = {}


def load_glove(spec: str, vocab_limit: int) -> GloveIndex:
    """The GloVe index of `spec` (`open_glove_lines`, `GloveIndex.from_lines`), parsed once per process and file.

    Raises:
      InputError: a damaged file or a line that is not `word v1 ... vD` of finite numbers (GloveFormatError).
    """
    key = (spec, vocab_limit, _file_identity(spec))
    if key[2] is None or key not in _GLOVE_CACHE:
        index = GloveIndex.from_lines(open_glove_lines(spec), vocab_limit=vocab_limit, source=spec)
        _GLOVE_CACHE.clear()
        if key[2] is not None:
            _GLOVE_CACHE[key] = index
        return index
    return _GLOVE_CACHE[key]


def forget_glove() -> None:
    _GLOVE_CACHE.clear()


def _file_identity(spec: str) -> Optional[Tuple[int, int]]:
    """(size, mtime in ns) of a local GloVe file or zip archive; None elsewhere (no reuse)."""
    archive, _, member = spec.partition(".zip:")
    path = archive + ".zip" if member else spec
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns


def glove_exists(spec: str) -> bool:
    archive, _, member = spec.partition(".zip:")
    return FileSystems.exists(archive + ".zip" if member else spec)


# ------------------------------------------------------------------------------------------- model, tokenizer
def load_masked_lm(name_or_path: str):
    """The masked LM, complete (`augment.mlm.load_masked_lm`: no weight initialised at random).

    Raises:
      InputError: the checkpoint lacks weights the masked LM needs.
    """
    try:
        return mlm_lib.load_masked_lm(name_or_path)
    except mlm_lib.MaskedLMError as error:
        raise InputError(f"--model {error}") from None


def load_tokenizer(name_or_path: str):
    """The transformers fast tokenizer (the scorer needs its methods), under the same lock as the model."""
    return tokenizer_lib.load_transformers_tokenizer(name_or_path)


# ------------------------------------------------------------------------------------------------------ device
def choose_device(device: str, *, claim_dir: Optional[str] = None) -> Tuple[str, Any]:
    """The torch device of this worker process, and the claim that holds it (keep it as long as the model).

    `cpu` and `cuda:N` are taken as given. `auto` (a GPU when torch sees one, else the CPU) and `cuda` spread the
    worker processes of a machine over its GPUs: each process claims the first GPU index whose lock file
    (`<claim_dir>/<i>.lock`, default `/tmp/tinybert-gpu-<uid>/`, under `tempfile.gettempdir()`) it can `flock`, and
    holds the lock while its model is loaded; a process that finds every GPU claimed (more workers than GPUs) takes
    `cuda:<pid % count>`. The kernel drops a lock when its process ends, so a crashed worker frees its GPU. Threads
    of one process share the process's one model, hence its one device.
    """
    import torch
    if device == "cpu" or device.startswith("cuda:"):
        return device, None
    if not torch.cuda.is_available():
        return "cpu", None  # `--device cuda` without a GPU is refused earlier, by AugmentConfig
    count = torch.cuda.device_count()
    user = os.getuid() if hasattr(os, "getuid") else os.getlogin()
    index, claim = _claim_gpu(count, claim_dir or os.path.join(tempfile.gettempdir(), f"tinybert-gpu-{user}"))
    return f"cuda:{index}", claim


def _claim_gpu(count: int, claim_dir: str) -> Tuple[int, Any]:
    try:
        import fcntl  # POSIX only; elsewhere the pid rule below
        os.makedirs(claim_dir, exist_ok=True)
        for index in range(count):
            handle = open(os.path.join(claim_dir, f"{index}.lock"), "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # another live process holds this GPU
                handle.close()
                continue
            return index, handle
    except (OSError, ImportError) as error:  # no writable temp dir, or no flock: fall back to the pid rule
        logging.warning("cannot claim a GPU under %s (%s); choosing by process id", claim_dir, error)
    return os.getpid() % count, None


def log_precisions(config: AugmentConfig) -> None:
    """One line at start: the precision paths this machine runs natively, and the one chosen."""
    import torch
    paths = mlm_lib.describe_precisions()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    logging.info("augment: precision %s on device %s (%d GPU(s) visible); this CPU: %s", config.precision,
                 config.device, gpus, ", ".join(f"{name} {how}" for name, how in paths.items()))
    if config.precision == "bf16" and paths["bf16"] == "emulated" and not gpus:
        logging.warning("augment: this CPU has no bf16 instructions (avx512_bf16/amx_bf16): --precision bf16 will "
                        "be slower than fp32 here; --precision int8 is the fast path on such a CPU")
