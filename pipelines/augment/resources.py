"""What the augmentation loads: the masked LM and its tokenizer, GloVe files, stop words, and each worker's device.

The launcher checks and resolves the run's resources once (`resolve`): a missing GloVe file, stop-word file or model
folder is one line before any work. Workers load the model and the GloVe index in their DoFns' setup (transforms).
"""

import dataclasses
import hashlib
import io
import logging
import os
import tempfile
import zipfile
from typing import Any, Iterable, Optional, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from augment.mlm import describe_precisions
from contract.errors import UserError
from corpus import tokenizer as tokenizer_lib
from pipelines.augment.config import DEFAULT_GLOVE, AugmentConfig

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
    """
    glove: Optional[str]
    stop_words: Optional[Tuple[str, ...]]
    stop_words_sha256: Optional[str]
    tokenizer: Any


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
    _check_model_dir(config.model)
    try:
        tokenizer = load_tokenizer(config.model)
    except Exception as error:  # the hub's and the loader's errors differ; the fix is the same
        raise UserError(f"cannot load the tokenizer of --model {config.model} ({type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else ''}); pass a hub name or a local "
                        "directory holding a BERT masked LM and its tokenizer") from None
    return RunResources(glove, stop_words, stop_words_sha256, tokenizer)


def _check_model_dir(model: str) -> None:
    if os.path.isdir(model):
        names = set(os.listdir(model))
        if "config.json" not in names:
            raise UserError(f"--model {model} has no config.json; pass a directory written by save_pretrained (or "
                            "a hub name)")
        if not names & WEIGHT_FILES:
            raise UserError(f"--model {model} holds no weights (model.safetensors or pytorch_model.bin); save the "
                            "model with save_pretrained into it")


def resolve_glove(config: AugmentConfig) -> Optional[str]:
    """The GloVe file to use, or None when GloVe is off (--glove none, or omitted with --word_rule unicode)."""
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
    """Lines of a published GloVe file: `.txt`, `.txt.gz`, or a `.zip` member as `archive.zip:member.txt`.

    A `.zip` without a member name reads its only (or first `.txt`) member.
    """
    archive, _, member = spec.partition(".zip:")
    if spec.endswith(".zip") or member:
        archive = archive if spec.endswith(".zip") and not member else archive + ".zip"
        with FileSystems.open(archive, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            with zipfile.ZipFile(io.BytesIO(raw.read())) as bundle:
                names = [n for n in bundle.namelist() if n.endswith(".txt")] or bundle.namelist()
                with bundle.open(member or names[0]) as handle:
                    for line in io.TextIOWrapper(handle, encoding="utf-8"):
                        yield line
        return
    with FileSystems.open(spec, compression_type=CompressionTypes.AUTO) as handle:
        while True:  # Beam's decompressing file object has readline() but is not an io.IOBase
            line = handle.readline()
            if not line:
                return
            yield line.decode("utf-8")


def glove_exists(spec: str) -> bool:
    archive, _, member = spec.partition(".zip:")
    return FileSystems.exists(archive + ".zip" if member else spec)


# ------------------------------------------------------------------------------------------- model, tokenizer
def load_masked_lm(name_or_path: str):
    """The masked LM, loaded under the project's one transformers lock (`corpus.tokenizer.TRANSFORMERS_LOCK`)."""
    from transformers import AutoModelForMaskedLM
    with tokenizer_lib.TRANSFORMERS_LOCK:
        return AutoModelForMaskedLM.from_pretrained(name_or_path).eval()


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
    paths = describe_precisions()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    logging.info("augment: precision %s on device %s (%d GPU(s) visible); this CPU: %s", config.precision,
                 config.device, gpus, ", ".join(f"{name} {how}" for name, how in paths.items()))
    if config.precision == "bf16" and paths["bf16"] == "emulated" and not gpus:
        logging.warning("augment: this CPU has no bf16 instructions (avx512_bf16/amx_bf16): --precision bf16 will "
                        "be slower than fp32 here; --precision int8 is the fast path on such a CPU")
