"""Tiny, self-made fixtures for tests and benchmarks: tokenizer, BERT teachers, corpus and augmented directories.

They follow the data contracts the pipelines write (manifest.json + Parquet + `_SUCCESS`), so the reader is tested
against the contract, not against one pipeline's implementation.
"""

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from contract.fingerprint import tokenizer_fingerprint
from contract.layout import AUGMENTED_KIND, CORPUS_KIND, FORMAT_VERSION, MANIFEST_NAME, SUCCESS_MARKER
from contract.manifest import encode_manifest
from contract.schemas import augmented_schema, instance_schema

SHARED_VOCAB = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "bert-base-uncased-vocab.txt"

SMALL_VOCAB_SIZE = 2048  # the fallback vocab's size: room for corpus_row's tag ids (1000 + up to 999)

WORDS = ("the a film movie story actor plot scene good bad great boring funny sad long short music love hate "
         "fine dull bright dark slow fast clever silly warm cold old new strong weak best worst").split()


# A subprocess's page faults while it allocates and frees buffers (tests of `pipelines.freed_memory`): the probe
# defines `faults()`, the test's own lines follow and print the counts.
FAULT_PROBE = """
import resource

def faults(rounds=40, size=4 << 20):  # page faults of allocating and freeing a 4 MiB buffer, 40 times
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        buffer = bytearray(size)
        del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
"""
FAULT_PROBE_PAGES = 40 * (4 << 20) // 4096  # the pages of 40 fresh 4 MiB buffers


def make_tokenizer(directory: str):
    """A BertTokenizerFast: the shared bert-base-uncased vocab where present, else a small WordPiece vocab."""
    from transformers import BertTokenizerFast
    os.makedirs(directory, exist_ok=True)
    vocab_path = os.path.join(directory, "vocab.txt")
    if SHARED_VOCAB.is_file():
        vocab = SHARED_VOCAB.read_text(encoding="utf-8")
    else:
        specials = ["[PAD]"] + [f"[unused{i}]" for i in range(10)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
        tokens = specials + sorted(set(WORDS)) + letters + ["##" + c for c in letters] + list(".,!?'")
        # `corpus_row` writes ids 1000.. as its serial tag: the vocab holds them, as bert-base-uncased's does.
        tokens += [f"[unused{i}]" for i in range(10, 10 + SMALL_VOCAB_SIZE - len(tokens))]
        vocab = "\n".join(tokens) + "\n"
    with open(vocab_path, "w", encoding="utf-8") as handle:
        handle.write(vocab)
    tokenizer = BertTokenizerFast(vocab=vocab_path, do_lower_case=True)
    tokenizer.save_pretrained(directory)
    return tokenizer


def make_teacher(directory: str, tokenizer, *, layers: int = 4, hidden: int = 48, heads: int = 12,
                 intermediate: int = 96, num_labels: Optional[int] = None, seed: int = 0) -> str:
    """Saves a random tiny BERT (BertModel, or BertForSequenceClassification with num_labels) and its tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=128)
    if num_labels is not None:
        config.num_labels = num_labels
        model = BertForSequenceClassification(config)
    else:
        model = BertModel(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_student_config(path: str, *, layers: int = 2, hidden: int = 24, heads: int = 12,
                         intermediate: int = 48) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": heads,
                   "intermediate_size": intermediate}, handle)
    return path


def corpus_row(tokenizer, rng: np.random.Generator, serial: int, max_seq_len: int) -> Dict:
    """One instance [CLS] A [SEP] B [SEP]; A starts with two tokens that encode `serial` so tests can find it."""
    vocab_words = [tokenizer.convert_tokens_to_ids(w) for w in WORDS]
    length_a = int(rng.integers(3, max_seq_len // 2 - 2))
    length_b = int(rng.integers(1, max_seq_len - length_a - 4))
    tag = [1000 + serial // 1000, 1000 + serial % 1000]
    body_a = list(rng.choice(vocab_words, size=length_a))
    body_b = list(rng.choice(vocab_words, size=length_b))
    ids = [tokenizer.cls_token_id] + tag + body_a + [tokenizer.sep_token_id] + body_b + [tokenizer.sep_token_id]
    return {"input_ids": ids, "segment_a_len": 4 + length_a, "is_random_next": bool(rng.integers(2)),
            "masked_lm_positions": [], "masked_lm_labels": [], "instance_id": f"doc-{serial}"}


def serial_of(input_ids: Sequence[int]) -> int:
    """The `serial` that `corpus_row` wrote into an instance."""
    return (int(input_ids[1]) - 1000) * 1000 + int(input_ids[2]) - 1000


def _write_manifest(directory: str, manifest: Dict, *, success: bool = True) -> None:
    with open(os.path.join(directory, MANIFEST_NAME), "w", encoding="utf-8") as handle:
        handle.write(encode_manifest(manifest))
    if success:
        open(os.path.join(directory, SUCCESS_MARKER), "w").close()


def write_corpus(directory: str, tokenizer, *, tokenizer_name: str = "test-tokenizer", files: int = 4,
                 rows_per_file: int = 50, epochs: int = 2, max_seq_len: int = 32, seed: int = 0,
                 row_group_size: int = 16, success: bool = True) -> str:
    """A general-distillation directory following the pipelines' contract; serials are unique across it."""
    rng = np.random.default_rng(seed)
    schema = instance_schema(len(tokenizer))
    outputs = {}
    serial = 0
    for epoch in range(epochs):
        entries = []
        for index in range(files):
            rows = []
            for _ in range(rows_per_file):
                rows.append(corpus_row(tokenizer, rng, serial, max_seq_len))
                serial += 1
            relative = f"epoch-{epoch}/part-{index:05d}-of-{files:05d}.parquet"
            os.makedirs(os.path.join(directory, f"epoch-{epoch}"), exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), os.path.join(directory, relative),
                           row_group_size=row_group_size)
            entries.append({"path": relative, "rows": len(rows), "tokens": sum(len(r["input_ids"]) for r in rows)})
        outputs[f"epoch-{epoch}"] = {"subdir": f"epoch-{epoch}", "num_shards": files, "files": entries,
                                     "totals": {"rows": files * rows_per_file}}
    manifest = {"format_version": FORMAT_VERSION, "kind": CORPUS_KIND, "max_seq_len": max_seq_len,
                "tokenizer": tokenizer_fingerprint(tokenizer, tokenizer_name), "outputs": outputs, "counts": {}}
    _write_manifest(directory, manifest, success=success)
    return directory


def _sentence(rng: np.random.Generator, low: int = 3, high: int = 12) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(low, high))))


def write_augmented(directory: str, tokenizer, *, task: str = "SST-2", text_fields: Sequence[str] = ("sentence",),
                    label_list: Optional[List[str]] = ("0", "1"), examples: int = 40, augmentations: int = 3,
                    files: int = 2, seed: int = 0, missing_labels: int = 0) -> str:
    """An augmented-task directory following `pipelines.augment`'s contract (originals have aug_index 0).

    Regression data (`label_list=None`) gets scores "0.00".."5.00" as strings, as the pipeline writes them; the first
    `missing_labels` examples get a null label (which the pipeline itself never writes for STS-B)."""
    rng = np.random.default_rng(seed)
    schema = augmented_schema(text_fields)
    shards: List[List[Dict]] = [[] for _ in range(files)]
    for index in range(examples):
        label = (str(rng.choice(label_list)) if label_list else f"{rng.uniform(0, 5):.2f}")
        if index < missing_labels:
            label = None
        for aug in range(augmentations + 1):
            row = {"example_id": f"train-{index}", "row_index": index, "aug_index": aug,
                   "augmented_field": None if aug == 0 else text_fields[0], "label": label,
                   "replaced_word_indices": [] if aug == 0 else [0]}
            for name in text_fields:
                row[name] = _sentence(rng)
            shards[index % files].append(row)
    os.makedirs(os.path.join(directory, "data"), exist_ok=True)
    entries = []
    for index, rows in enumerate(shards):
        relative = f"data/part-{index:05d}-of-{files:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), os.path.join(directory, relative))
        entries.append({"path": relative, "rows": len(rows)})
    manifest = {"format_version": FORMAT_VERSION, "kind": AUGMENTED_KIND, "task": task, "text_fields": list(text_fields),
                "label_field": "label", "label_list": list(label_list) if label_list else None,
                "tokenizer": tokenizer_fingerprint(tokenizer, "test-tokenizer"),
                "outputs": {"data": {"subdir": "data", "num_shards": files, "files": entries,
                                     "totals": {"rows": sum(len(r) for r in shards)}}}, "counts": {}}
    _write_manifest(directory, manifest)
    return directory


def write_sst2_dev(path: str, *, rows: int = 20, malformed: int = 1, seed: int = 1) -> str:
    """An SST-2 dev.tsv (header, sentence, label) with `malformed` broken rows at the end."""
    rng = np.random.default_rng(seed)
    lines = ["sentence\tlabel"] + [f"{_sentence(rng)}\t{rng.integers(2)}" for _ in range(rows)]
    lines += ["a row without its label"] * malformed
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def shell_dask_cluster(folder: pathlib.Path, env: Mapping[str, str], warm: Sequence[str] = ()) -> Iterator[str]:
    """`dask scheduler --preload pipelines.dask_worker` and `dask worker --nworkers 2 --nthreads 1 --preload
    pipelines.dask_worker --preload-nanny pipelines.dask_worker` (and `--preload pipelines.NAME.worker` for each NAME
    of `warm`) on 127.0.0.1, started as docs/scaling.md tells users to (in `folder`, with `env`); yields the
    scheduler's address once both workers are up, and stops them after.

    Raises:
      FileNotFoundError: the `dask` command is not installed.
    """
    dask = shutil.which("dask", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("dask")
    if dask is None:
        raise FileNotFoundError("the dask command is not installed")
    scheduler_file = folder / "scheduler.json"
    logs = [open(folder / name, "w") for name in ("scheduler.log", "workers.log")]
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
                                  ":0", "--scheduler-file", str(scheduler_file), "--preload", "pipelines.dask_worker"],
                                 cwd=folder, env=dict(env),
                                 stdout=logs[0], stderr=subprocess.STDOUT)
    workers = None
    try:
        deadline = time.time() + 60
        while not scheduler_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert scheduler_file.exists(), (folder / "scheduler.log").read_text()
        workers = subprocess.Popen([dask, "worker", "--scheduler-file", str(scheduler_file), "--nworkers", "2",
                                    "--nthreads", "1", "--host", "127.0.0.1", "--dashboard-address", ":0",
                                    "--local-directory", str(folder / "workers"), "--preload", "pipelines.dask_worker",
                                    "--preload-nanny", "pipelines.dask_worker",
                                    *[arg for name in warm for arg in ("--preload", f"pipelines.{name}.worker")]],
                                   cwd=folder, env=dict(env),
                                   stdout=logs[1], stderr=subprocess.STDOUT)
        address = json.loads(scheduler_file.read_text())["address"]
        import dask.distributed
        with dask.distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for process in (workers, scheduler):
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
        for log in logs:
            log.close()
