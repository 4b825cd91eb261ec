"""Augmentation speed and fidelity: our pipeline against the reference's unbatched per-word procedure.

Usage:
  python bench/augment.py                      # BERT-base-shaped model, polarity-200 sentences, GloVe 6B 50d
  python bench/augment.py --limit 40 --layers 2 --hidden 128   # a quick run
  python bench/augment.py --device cuda --skip_memory --json out.json     # on a GPU: both sides on the same GPU
  python bench/augment.py --smoke                              # seconds: a tiny model, to check the script runs

Both sides use the same randomly initialised (seeded) BERT-base-shaped masked LM with the real bert-base-uncased
vocabulary, the same GloVe file and the same sentences, in this process. Prints sentences/s of each, the ratio, how
many candidate lists are identical, the split of the fp32 run's wall time (model loading, GloVe loading, GloVe
neighbours, masked-LM scoring and the encoder's forwards within it, everything else: `_Split`), the top-k overlap
of --precision bf16 and int8 against fp32, a roofline per precision on a CPU (the machine's measured GEMM rate: a
`linear` of the encoder's largest shape at the run's batch size; the rate the encoder achieved in the run: its GEMM
work over its time; and the share of the run's wall time outside the encoder's GEMMs, had they run at the machine's
rate), and peak RSS of a pipeline run at 1x and 4x the examples (each in a
fresh subprocess). With --device cuda the reference procedure runs its
forwards on the same GPU, and the pipeline runs get --device (the GPU default of 65536 tokens per forward applies).
"""

import argparse
import csv
import gzip
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# CPU seconds of this process (all its threads) for each timed side, in order: on a shared machine the ratio of
# CPU times (with OMP_NUM_THREADS=1 on both sides) is steadier than that of wall times.
_CPU_SECONDS = []
SHARED = pathlib.Path(os.environ.get("TINYBERT_SHARED_DATA") or ROOT.parent / "shared" / "data")


def _build_model(out: pathlib.Path, layers: int, hidden: int) -> str:
    from pipelines import demo_assets
    tokenizer = demo_assets.wordpiece_tokenizer(vocab=demo_assets.read_vocab(str(SHARED / "bert-base-uncased-vocab.txt")))
    return demo_assets.build_masked_lm(str(out), tokenizer, layers=layers, hidden=hidden, heads=max(1, hidden // 64),
                                       intermediate=4 * hidden, seed=0)


def _write_input(path: pathlib.Path, limit: int, repeat: int = 1) -> list:
    rows = list(csv.reader(open(SHARED / "polarity-200.tsv", encoding="utf-8"), delimiter="\t",
                           quoting=csv.QUOTE_NONE))[1:]
    # Alternate the classes (the file holds one class, then the other), then take the first `limit`.
    rows = [r for pair in zip(rows[:100], rows[100:]) for r in pair][:limit]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("sentence\tlabel\n")
        for copy in range(repeat):
            for sentence, label in rows:
                # Repeats are made distinct so no query is answered from another copy.
                handle.write(f"{sentence if copy == 0 else sentence + ' ' + str(copy)}\t{label}\n")
    return rows


class _OnDevice:
    """The reference's model with its forwards on `device`: inputs moved there, logits left there."""

    def __init__(self, model, device: str):
        self._model = model.to(device)
        self._device = device

    def __call__(self, *, input_ids, token_type_ids):
        return self._model(input_ids=input_ids.to(self._device), token_type_ids=token_type_ids.to(self._device))


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


def _baseline(model_dir: str, glove_path: str, rows: list, *, num_aug: int, top_k: int, device: str = "cpu"):
    """The reference procedure: load, then one sentence, one word, one forward at a time (on `device`)."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from augment import reference
    from augment.algorithm import augment_sentence
    from contract.seeds import example_rng
    from augment.glove import GloveIndex
    from augment.words import WordSplitter
    start, cpu_start = time.perf_counter(), time.process_time()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    if device != "cpu":
        model = _OnDevice(model, device)
    with gzip.open(glove_path, "rt", encoding="utf-8") as lines:
        glove = GloveIndex.from_lines(lines)
    splitter = WordSplitter(tokenizer.backend_tokenizer)
    candidates = {}
    produced = 0
    for row_index, (sentence, _) in enumerate(rows):
        found = reference.sentence_candidates(model, tokenizer, glove, sentence, top_k=top_k)
        candidates.update({(str(row_index), w): c for w, c in found.items()})
        produced += len(augment_sentence(sentence, splitter.split(sentence), found, num_aug=num_aug,
                                         replace_prob=0.4, rng=example_rng(42, str(row_index))))
    del torch
    _synchronize(device)
    _CPU_SECONDS.append(time.process_time() - cpu_start)
    return time.perf_counter() - start, candidates, produced


ENCODER = "  of which the encoder"
FUSED = "  of which the fused encoder"


class _Split:
    """Wall seconds spent inside chosen functions while a run goes on in this process (the DirectRunner runs its
    one worker here): each function is wrapped at its owner for the duration, nested calls counted once."""

    def __init__(self):
        import transformers.models.bert.modeling_bert as bert
        from augment.glove import GloveIndex
        from augment.fused_encoder import FusedMaskedEncoder
        from augment.mlm import MaskedLMScorer
        from pipelines.augment import resources
        self._targets = {  # name: (owner, attribute)
            "model loading": (resources, "load_masked_lm"),
            "GloVe loading": (GloveIndex, "from_lines"),
            "GloVe neighbours": (GloveIndex, "neighbours"),
            "masked-LM scoring": (MaskedLMScorer, "candidates"),
            ENCODER: (bert.BertModel, "forward"),
            FUSED: (FusedMaskedEncoder, "__call__"),  # bf16 on a CPU: the encoder, last layer on masked rows only
        }
        self.seconds = {name: 0.0 for name in self._targets}
        self.encoder_shapes = []  # (rows, length, fused) of every encoder forward: its GEMM work, for the roofline

    def _wrap(self, name, function, is_classmethod):
        depth = [0]

        def timed(*args, **kwargs):
            if name == ENCODER and depth[0] == 0 and kwargs.get("input_ids") is not None:
                self.encoder_shapes.append((*kwargs["input_ids"].shape, False))
            elif name == FUSED and depth[0] == 0:
                self.encoder_shapes.append((*args[1].shape, True))
            depth[0] += 1
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    self.seconds[name] += time.perf_counter() - start
        return classmethod(lambda cls, *a, **k: timed(*a, **k)) if is_classmethod else timed

    def __enter__(self):
        self._saved = []
        for name, (owner, attribute) in self._targets.items():
            raw = owner.__dict__[attribute]
            self._saved.append((owner, attribute, raw))
            is_classmethod = isinstance(raw, classmethod)
            function = getattr(owner, attribute) if is_classmethod else raw
            setattr(owner, attribute, self._wrap(name, function, is_classmethod))
        return self

    def __exit__(self, *exc):
        for owner, attribute, raw in self._saved:
            setattr(owner, attribute, raw)

    def describe(self, total: float) -> str:
        parts = [f"{name.strip()} {seconds:.1f} s" if not name.startswith(" ")
                 else f"({name.strip().replace('of which the ', '')} {seconds:.1f} s)"
                 for name, seconds in self.seconds.items() if seconds or not name.startswith(" ")]
        own = sum(seconds for name, seconds in self.seconds.items() if not name.startswith(" "))
        return (f"  split of the wall time: {', '.join(parts)}; everything else (Beam, reading, planning, "
                f"augmenting, writing, report) {total - own:.1f} s of {total:.1f} s")


def _gemm_rate(precision: str, *, tokens: int, hidden: int, intermediate: int) -> float:
    """The machine's GEMM rate (GFLOP/s) for a precision: a (tokens x hidden) by (intermediate x hidden) `linear`,
    the encoder's largest product, in this process's torch threads; best of 3 after a warm-up. In bf16 the better of
    `linear` and oneDNN's prepacked kernel (what the fused encoder runs)."""
    import torch
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(tokens, hidden, generator=generator)
    layer = torch.nn.Linear(hidden, intermediate).eval()
    if precision == "bf16":
        inputs, layer = inputs.to(torch.bfloat16), layer.to(torch.bfloat16)
    elif precision == "int8":
        from torch.ao.quantization import quantize_dynamic
        layer = quantize_dynamic(torch.nn.Sequential(layer), {torch.nn.Linear}, dtype=torch.qint8)
    calls = [layer]
    if precision == "bf16":
        from augment import fused_encoder
        if fused_encoder.available():
            packed = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), tokens)
            bias = layer.bias.detach()
            calls.append(lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], ""))
    best = float("inf")
    with torch.inference_mode():
        for repeat in range(4):
            for call in calls:
                start = time.perf_counter()
                call(inputs)
                if repeat:
                    best = min(best, time.perf_counter() - start)
    return 2.0 * tokens * hidden * intermediate / best / 1e9


def _encoder_gflop(shapes, *, layers: int, hidden: int, intermediate: int) -> float:
    """The matrix-product work (GFLOP) of encoder forwards of these (rows, length, fused) shapes: per layer the Q, K,
    V, output, and two feed-forward projections, and the attention's two batched products (scores and mix). The
    fused encoder's last layer projects keys and values of every position, the rest for the masked row alone."""
    total = 0.0
    for rows, length, fused in shapes:
        tokens = rows * length
        full = 2.0 * tokens * (4 * hidden * hidden + 2 * hidden * intermediate) + 4.0 * rows * length * length * hidden
        if fused:
            last = (2.0 * tokens * 2 * hidden * hidden + 2.0 * rows * (2 * hidden * hidden + 2 * hidden * intermediate)
                    + 4.0 * rows * length * hidden)
            total += (layers - 1) * full + last
        else:
            total += layers * full
    return total / 1e9


def _roofline(precision: str, split: "_Split", wall: float, *, layers: int, hidden: int, tokens: int) -> dict:
    """How far a run is from the machine's GEMM limit, printed and returned."""
    peak = _gemm_rate(precision, tokens=tokens, hidden=hidden, intermediate=4 * hidden)
    work = _encoder_gflop(split.encoder_shapes, layers=layers, hidden=hidden, intermediate=4 * hidden)
    encoder = split.seconds[ENCODER] + split.seconds[FUSED]
    ideal = work / peak  # the encoder's GEMMs at the machine's rate
    figures = {"machine_gemm_gflops": peak, "encoder_gflop": work, "encoder_s": encoder,
               "encoder_gflops": work / encoder if encoder else 0.0, "gemm_s_at_machine_rate": ideal,
               "outside_encoder_gemms_pct": 100.0 * (wall - ideal) / wall}
    print(f"  roofline {precision}: machine GEMM rate {peak:.0f} GFLOP/s (linear {tokens}x{hidden} by "
          f"{4 * hidden}x{hidden}); encoder {figures['encoder_gflops']:.0f} GFLOP/s achieved "
          f"({100.0 * figures['encoder_gflops'] / peak:.0f}% of it; {work:.0f} GFLOP in {encoder:.1f} s)")
    print(f"    the encoder's GEMMs at the machine rate: {ideal:.1f} s of {wall:.1f} s wall; outside them "
          f"{figures['outside_encoder_gemms_pct']:.0f}% (in the encoder {max(0.0, encoder - ideal):.1f} s, "
          f"outside the encoder {wall - encoder:.1f} s)")
    return figures


def _pipeline(model_dir: str, glove_path: str, input_path: pathlib.Path, out: pathlib.Path, *extra: str,
              split: "_Split" = None):
    import contextlib
    import pyarrow.parquet as pq
    from pipelines import augment as augment_pipeline
    start, cpu_start = time.perf_counter(), time.process_time()
    with split if split is not None else contextlib.nullcontext():
        manifest = augment_pipeline.run([
            "--runner=DirectRunner", f"--model={model_dir}", f"--glove={glove_path}", f"--input={input_path}",
            f"--output={out}", "--overwrite", "--emit_candidates", "--num_aug=20", "--candidate_store=none", *extra])
    elapsed = time.perf_counter() - start
    _CPU_SECONDS.append(time.process_time() - cpu_start)
    candidates = {}
    for f in manifest["outputs"]["candidates"]["files"]:
        for r in pq.read_table(out / f["path"]).to_pylist():
            if r["source"] != "none":
                candidates[(r["example_id"], r["word_index"])] = (r["source"], r["candidates"])
    return elapsed, candidates, manifest


def _peak_rss_mb(model_dir: str, glove_path: str, input_path: pathlib.Path, out: pathlib.Path) -> float:
    code = ("import sys, resource; sys.path.insert(0, %r); from pipelines import augment as a; "
            "a.run(sys.argv[1:]); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)" % str(ROOT))
    result = subprocess.run([sys.executable, "-c", code, "--runner=DirectRunner", f"--model={model_dir}",
                             f"--glove={glove_path}", f"--input={input_path}", f"--output={out}", "--overwrite",
                             "--num_aug=20", "--candidate_store=none"], capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1]) / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=60, help="sentences of polarity-200 to augment")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--precisions", default="bf16,int8", help="lower precisions to compare with fp32")
    parser.add_argument("--skip_memory", action="store_true")
    parser.add_argument("--skip_two_workers", action="store_true")
    parser.add_argument("--two_workers_precisions", default="fp32",
                        help="precisions also run as 2 worker processes of 1 thread each")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: the reference's and the pipeline's")
    parser.add_argument("--max_batch_tokens", type=int, default=None, help="passed to the pipeline runs")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--smoke", action="store_true",
                        help="a 2-layer hidden-128 model on 8 sentences, no memory run: checks the script in seconds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.limit, args.layers, args.hidden, args.skip_memory, args.skip_two_workers = 8, 2, 128, True, True
    if not SHARED.is_dir():
        raise SystemExit(f"this benchmark reads the real data in {SHARED}; it is not on this machine")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging
    logging.disable(logging.WARNING)
    import torch
    glove = str(SHARED / "glove.6B.50d.20k.txt.gz")
    device_flags = [f"--device={args.device}"] + (
        [f"--max_batch_tokens={args.max_batch_tokens}"] if args.max_batch_tokens else [])
    figures = {"device": args.device, "limit": args.limit, "layers": args.layers, "hidden": args.hidden,
               "torch_threads": torch.get_num_threads(), "cores": os.cpu_count(),
               "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        model_dir = _build_model(tmp / "bert", args.layers, args.hidden)
        rows = _write_input(tmp / "train.tsv", args.limit)
        print(f"model: {args.layers} layers, hidden {args.hidden}; {len(rows)} sentences; torch threads "
              f"{torch.get_num_threads()}; {os.cpu_count()} cores")

        base_s, base_cands, produced = _baseline(model_dir, glove, rows, num_aug=20, top_k=15, device=args.device)
        figures["reference_s"] = base_s
        base_cpu = _CPU_SECONDS[-1]
        figures["reference_cpu_s"] = base_cpu
        print(f"reference procedure (unbatched, {args.device}): {base_s:7.1f} s  {len(rows) / base_s:7.2f} sentences/s  "
              f"({produced} sentences out)")

        split = _Split()
        ours_s, ours, manifest = _pipeline(model_dir, glove, tmp / "train.tsv", tmp / "fp32", *device_flags,
                                           split=split)
        figures["fp32_split_s"] = {name.strip(): seconds for name, seconds in split.seconds.items()}
        same = sum(1 for k, c in base_cands.items() if k in ours and ours[k][1] == c)
        figures["fp32"] = {"seconds": ours_s, "ratio": base_s / ours_s, "identical_lists": same,
                           "lists": len(base_cands), "cpu_s": _CPU_SECONDS[-1], "cpu_ratio": base_cpu / _CPU_SECONDS[-1]}
        print(f"pipeline fp32, 1 worker:        {ours_s:7.1f} s  {len(rows) / ours_s:7.2f} sentences/s  "
              f"ratio {base_s / ours_s:5.2f}x  ({manifest['counts']['stats']['rows']} rows out)")
        print(f"  CPU time: reference {base_cpu:.1f} s, pipeline {_CPU_SECONDS[-1]:.1f} s, ratio "
              f"{base_cpu / _CPU_SECONDS[-1]:.2f}x")
        print(f"  candidate lists identical to the reference procedure: {same}/{len(base_cands)} "
              f"({100.0 * same / max(1, len(base_cands)):.1f}%)")
        print(split.describe(ours_s))
        tokens = args.max_batch_tokens or 8192
        shape = {"layers": args.layers, "hidden": args.hidden, "tokens": tokens}
        if args.device == "cpu":
            figures["fp32"]["roofline"] = _roofline("fp32", split, ours_s, **shape)

        for precision in [] if args.skip_two_workers else args.two_workers_precisions.split(","):
            # Two processes of one thread each: on a shared machine a stolen core stalls only its own process,
            # where one process of two threads waits at every GEMM's barrier.
            two_s, _, _ = _pipeline(model_dir, glove, tmp / "train.tsv", tmp / f"{precision}x2",
                                    "--direct_num_workers=2", "--direct_running_mode=multi_processing",
                                    "--torch_threads=1", f"--precision={precision}", *device_flags)
            figures[f"{precision}_2_workers"] = {"seconds": two_s, "ratio": base_s / two_s}
            print(f"pipeline {precision}, 2 workers x 1 thread: {two_s:7.1f} s  {len(rows) / two_s:7.2f} sentences/s  "
                  f"ratio {base_s / two_s:5.2f}x")

        for precision in [p for p in args.precisions.split(",") if p]:
            if precision == "int8" and args.device != "cpu":
                continue  # dynamic quantization runs on the CPU only
            low_split = _Split()
            low_s, low, _ = _pipeline(model_dir, glove, tmp / "train.tsv", tmp / precision, f"--precision={precision}",
                                      *device_flags, split=low_split)
            mlm_keys = [k for k, (source, _) in ours.items() if source == "mlm"]
            overlap = sum(len(set(low[k][1]) & set(ours[k][1])) / max(1, len(ours[k][1])) for k in mlm_keys)
            figures[precision] = {"seconds": low_s, "ratio": base_s / low_s, "cpu_s": _CPU_SECONDS[-1],
                                  "cpu_ratio": base_cpu / _CPU_SECONDS[-1],
                                  "top15_overlap_pct": 100.0 * overlap / max(1, len(mlm_keys))}
            print(f"pipeline {precision}, 1 worker:        {low_s:7.1f} s  {len(rows) / low_s:7.2f} sentences/s  "
                  f"ratio {base_s / low_s:5.2f}x  top-15 overlap with fp32 {100.0 * overlap / max(1, len(mlm_keys)):.1f}%")
            print(f"  CPU time: {_CPU_SECONDS[-1]:.1f} s, ratio to the reference {base_cpu / _CPU_SECONDS[-1]:.2f}x")
            print(low_split.describe(low_s))
            if args.device == "cpu":
                figures[precision]["roofline"] = _roofline(precision, low_split, low_s, **shape)

        if not args.skip_memory:
            small = max(10, args.limit // 4)
            _write_input(tmp / "mem1.tsv", small)
            _write_input(tmp / "mem4.tsv", small, repeat=4)
            rss1 = _peak_rss_mb(model_dir, glove, tmp / "mem1.tsv", tmp / "m1")
            rss4 = _peak_rss_mb(model_dir, glove, tmp / "mem4.tsv", tmp / "m4")
            figures["peak_rss_mb"] = {"1x": rss1, "4x": rss4}
            print(f"peak RSS, {small} examples: {rss1:.0f} MB; {4 * small} examples: {rss4:.0f} MB; "
                  f"ratio {rss4 / rss1:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
