"""Does the streaming reader keep the distillation trainer fed? Prints figures; asserts nothing.

    python bench/distill.py [--files 8] [--rows_per_file 4096] [--batch_size 32] [--steps 21]

Builds, in a temporary directory, a general-distillation corpus of FILES shards (and one of 10x FILES shards), a
tiny BERT teacher (4 layers, hidden 48) and a 2-layer student, then measures on this machine:
  - the reader's samples/s (main process, and through the DataLoader with one worker);
  - the trainer's consumption samples/s (`python -m distill.run general`, same batch size);
  - time to first batch for 1x and 10x the shards, and their ratio.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write_corpus(directory, tokenizer, *, files, rows_per_file, max_seq_len=128, seed=0):
    """A corpus following the pipelines' contract; one shard is written and copied (the reader's cost is the same)."""

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from contract.fingerprint import tokenizer_fingerprint
    from contract.layout import CORPUS_KIND, FORMAT_VERSION, MANIFEST_NAME, SUCCESS_MARKER
    from contract.manifest import encode_manifest
    from contract.schemas import instance_schema
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max_seq_len // 2, max_seq_len + 1, size=rows_per_file)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = rng.integers(1000, 20000, size=int(offsets[-1])).astype(np.uint16)
    table = pa.table({
        "input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)),
        "segment_a_len": pa.array((lengths // 2).astype(np.int16)),
        "is_random_next": pa.array(rng.integers(0, 2, size=rows_per_file).astype(bool)),
        "masked_lm_positions": pa.array([[]] * rows_per_file, type=pa.list_(pa.int16())),
        "masked_lm_labels": pa.array([[]] * rows_per_file, type=pa.list_(pa.uint16())),
        "instance_id": pa.array([f"i{n}" for n in range(rows_per_file)]),
    })
    schema = instance_schema(len(tokenizer))
    table = table.select(schema.names).cast(schema)
    os.makedirs(os.path.join(directory, "epoch-0"))
    first = os.path.join(directory, "epoch-0", f"part-00000-of-{files:05d}.parquet")
    pq.write_table(table, first, compression="zstd", row_group_size=65536)
    entries = [{"path": f"epoch-0/part-00000-of-{files:05d}.parquet", "rows": rows_per_file}]
    for index in range(1, files):
        relative = f"epoch-0/part-{index:05d}-of-{files:05d}.parquet"
        shutil.copyfile(first, os.path.join(directory, relative))
        entries.append({"path": relative, "rows": rows_per_file})
    manifest = {"format_version": FORMAT_VERSION, "kind": CORPUS_KIND, "max_seq_len": max_seq_len,
                "tokenizer": tokenizer_fingerprint(tokenizer, "bench"),
                "outputs": {"epoch-0": {"subdir": "epoch-0", "num_shards": files, "files": entries,
                                        "totals": {"rows": files * rows_per_file}}}}
    with open(os.path.join(directory, MANIFEST_NAME), "w", encoding="utf-8") as handle:
        handle.write(encode_manifest(manifest))
    open(os.path.join(directory, SUCCESS_MARKER), "w").close()
    return directory


def _reader_rate(corpus, tokenizer, *, batch_size, num_workers, samples):
    from distill import data
    stream, _ = data.open_corpus(corpus, tokenizer=tokenizer, tokenizer_name="bench", batch_size=batch_size,
                                 shuffle_buffer=4096, seed=0, num_workers=num_workers)
    iterator = data.read_batches(stream)
    next(iterator)  # start-up excluded from the rate
    started, seen = time.perf_counter(), 0
    for batch in iterator:
        seen += batch["input_ids"].shape[0]
        if seen >= samples:
            break
    return seen / (time.perf_counter() - started)


def _first_batch_seconds(corpus, tokenizer, *, batch_size):
    from distill import data
    started = time.perf_counter()
    stream, _ = data.open_corpus(corpus, tokenizer=tokenizer, tokenizer_name="bench", batch_size=batch_size,
                                 shuffle_buffer=4096, seed=0, num_workers=0)
    next(data.read_batches(stream))
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rows_per_file", type=int, default=4096)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=21, help="trainer steps (timed from step 1)")
    args = parser.parse_args(argv)
    import json
    import logging

    import torch

    from distill import run
    from tests import builders
    logging.disable(logging.INFO)
    work = tempfile.mkdtemp(prefix="bench-distill-")
    try:
        tokenizer = builders.make_tokenizer(os.path.join(work, "tok"))
        teacher = builders.make_teacher(os.path.join(work, "teacher"), tokenizer, layers=4, hidden=48, heads=12)
        student = builders.write_student_config(os.path.join(work, "student.json"), layers=2, hidden=24, heads=12)
        small = _write_corpus(os.path.join(work, "x1"), tokenizer, files=args.files, rows_per_file=args.rows_per_file)
        large = _write_corpus(os.path.join(work, "x10"), tokenizer, files=10 * args.files,
                              rows_per_file=args.rows_per_file)
        print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(f"corpus: {args.files} shards x {args.rows_per_file} rows (and {10 * args.files} shards), "
              f"128-token instances, batch {args.batch_size}")

        _first_batch_seconds(small, tokenizer, batch_size=args.batch_size)  # warm imports and caches
        first_small = min(_first_batch_seconds(small, tokenizer, batch_size=args.batch_size) for _ in range(3))
        first_large = min(_first_batch_seconds(large, tokenizer, batch_size=args.batch_size) for _ in range(3))
        print(f"time to first batch: 1x shards {first_small * 1000:.1f} ms, 10x shards {first_large * 1000:.1f} ms, "
              f"ratio {first_large / first_small:.2f}")

        samples = min(args.files * args.rows_per_file, 16384)
        reader_main = _reader_rate(small, tokenizer, batch_size=args.batch_size, num_workers=0, samples=samples)
        reader_worker = _reader_rate(small, tokenizer, batch_size=args.batch_size, num_workers=1, samples=samples)
        print(f"reader: {reader_main:,.0f} samples/s in the main process, {reader_worker:,.0f} samples/s through "
              "a DataLoader worker")

        output = os.path.join(work, "run")
        run.main(["general", "--data", small, "--teacher", teacher, "--student", student, "--output", output,
                  "--max_steps", str(args.steps), "--batch_size", str(args.batch_size), "--log_interval", "5",
                  "--num_workers", "1", "--checkpoint_interval", str(10 * args.steps)])
        with open(os.path.join(output, "metrics.jsonl"), encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle]
        # Steady state: from the first logged step (start-up and worker spawn excluded) to the last.
        first, last = records[0], records[-1]
        trainer_rate = (last["step"] - first["step"]) * args.batch_size / (last["elapsed_s"] - first["elapsed_s"])
        print(f"trainer consumption (tiny teacher 4L-48H, student 2L-24H, fp32 CPU): {trainer_rate:,.0f} samples/s")
        print(f"reader / trainer: {reader_worker / trainer_rate:.0f}x through a worker "
              f"({reader_main / trainer_rate:.0f}x in the main process)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
