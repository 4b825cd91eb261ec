"""The masked-LM scorer alone on one device: the reference's per-word forward against our batches, fp32 and bf16.

Usage:
  python bench/gpu_check.py --device cuda --json scorer.json     # on a GPU machine (bench/gpu_check.sh runs it)
  python bench/gpu_check.py --device cpu --smoke                 # seconds: a tiny model, checks the script runs
  OMP_NUM_THREADS=1 python bench/gpu_check.py --device cpu --cpu_time --limit 20   # a CPU, one thread, CPU time

No Beam here: the same queries (every in-window position of the first --limit polarity-200 sentences) go through
  * the reference procedure: one query per forward, logits at every position, a full sort at the mask;
  * `MaskedLMScorer` at fp32 (8192 and 65536 tokens per forward), bf16 with weights cast once (on a CPU through the
    fused encoder, `augment/fused_encoder.py`, and without it: `bf16-unfused`), and bf16 under `torch.autocast`
    with fp32 weights;
on a BERT-base-shaped model with seeded random weights and the real bert-base-uncased vocabulary. Prints queries/s of
each (median and range over --repeats, CUDA synchronised), the ratio to the reference, the candidate lists identical
to fp32 and the top-15 overlap with fp32; then which GPU two worker processes claim with `--device auto`.
"""

import argparse
import csv
import functools
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = pathlib.Path(os.environ.get("TINYBERT_SHARED_DATA") or ROOT.parent / "shared" / "data")


def _queries(tokenizer, limit: int):
    from augment.mlm import window_queries
    rows = list(csv.reader(open(SHARED / "polarity-200.tsv", encoding="utf-8"), delimiter="\t",
                           quoting=csv.QUOTE_NONE))[1:]
    rows = [r for pair in zip(rows[:100], rows[100:]) for r in pair][:limit]
    queries = []
    for sentence, _ in rows:
        pieces = tokenizer(sentence, add_special_tokens=False)["input_ids"]
        queries += window_queries(pieces, range(len(pieces)))
    return queries


def _timed(function, device: str, repeats: int, clock=time.perf_counter):
    import torch
    times, result = [], None
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = clock()
        result = function()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(clock() - start)
    return times, result


def _reference(model, tokenizer, queries, device: str):
    """One query per forward as the reference does it: full logits, full sort at the mask."""
    import torch
    from augment.mlm import build_input
    answers = {}
    with torch.inference_mode():
        for query in queries:
            ids, segments, mask_index = build_input(query, cls_id=tokenizer.cls_token_id,
                                                    sep_id=tokenizer.sep_token_id, mask_id=tokenizer.mask_token_id)
            logits = model(input_ids=torch.tensor([ids], device=device),
                           token_type_ids=torch.tensor([segments], device=device)).logits  # (1, seq, vocab)
            best = torch.argsort(logits[0, mask_index], descending=True)[:15].tolist()
            answers[query] = [p for p in tokenizer.convert_ids_to_tokens(best) if not p.startswith("##")]
    return answers


def _claims(device: str) -> list:
    """The device each of two concurrent worker processes gets from the pipeline's rule (`--device auto`)."""
    code = ("import sys, time; sys.path.insert(0, %r); from pipelines.augment.resources import choose_device; "
            "device, claim = choose_device('auto'); print(device, flush=True); time.sleep(3)" % str(ROOT))
    children = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    return [child.communicate()[0].strip().splitlines()[-1] for child in children]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--limit", type=int, default=40, help="polarity-200 sentences (all their positions)")
    parser.add_argument("--reference_queries", type=int, default=300, help="queries timed for the reference")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    parser.add_argument("--cpu_time", action="store_true",
                        help="time by this process's CPU seconds (on a CPU with OMP_NUM_THREADS=1: the figure to trust "
                             "on a shared machine)")
    parser.add_argument("--smoke", action="store_true", help="2 layers, hidden 128, 4 sentences, 1 repeat")
    args = parser.parse_args(argv)
    if args.smoke:
        args.layers, args.hidden, args.limit, args.reference_queries, args.repeats = 2, 128, 4, 20, 1
    if not SHARED.is_dir():
        raise SystemExit(f"this benchmark reads the real data in {SHARED}; set TINYBERT_SHARED_DATA")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging
    logging.disable(logging.WARNING)
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from augment.mlm import MaskedLMScorer, describe_precisions
    from pipelines import demo_assets
    figures = {"device": args.device, "layers": args.layers, "hidden": args.hidden, "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else None,
               "cpu_precisions": describe_precisions(), "rates": {}}
    with tempfile.TemporaryDirectory() as tmp:
        vocab = demo_assets.read_vocab(str(SHARED / "bert-base-uncased-vocab.txt"))
        model_dir = demo_assets.build_masked_lm(
            str(pathlib.Path(tmp) / "bert"), demo_assets.wordpiece_tokenizer(vocab=vocab), layers=args.layers,
            hidden=args.hidden, heads=max(1, args.hidden // 64), intermediate=4 * args.hidden, seed=0)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    queries = _queries(tokenizer, args.limit)
    figures["queries"] = len(queries)
    # --cpu_time: CPU seconds of this process instead of wall time (one thread on a shared machine: stable to 2%)
    clock = time.process_time if args.cpu_time else time.perf_counter
    figures["clock"] = "cpu" if args.cpu_time else "wall"
    print(f"device {args.device} ({figures['gpu'] or 'CPU'}); model {args.layers} layers, hidden {args.hidden}; "
          f"{len(queries)} queries; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"this CPU: {figures['cpu_precisions']}")

    model.to(args.device)
    sample = queries[:args.reference_queries]
    _reference(model, tokenizer, sample[:5], args.device)  # warm-up (CUDA context, kernels)
    times, _ = _timed(lambda: _reference(model, tokenizer, sample, args.device), args.device, args.repeats, clock)
    reference_rate = [len(sample) / t for t in times]
    figures["rates"]["reference"] = reference_rate
    print(f"reference (1 query per forward): median {statistics.median(reference_rate):8.1f} queries/s "
          f"(range {min(reference_rate):.1f}-{max(reference_rate):.1f})")

    # (name, tokens per forward, autocast, fused): on a CPU, bf16 runs the fused encoder unless told not to
    variants = [("fp32", 8192, False, None), ("fp32", 65536, False, None), ("bf16", 8192, False, None),
                ("bf16", 65536, False, None), ("bf16-autocast", 65536, True, None)]
    if not args.device.startswith("cuda"):
        variants.insert(3, ("bf16-unfused", 8192, False, False))
    exact = None
    for name, batch_tokens, autocast, fused in variants:
        scorer = MaskedLMScorer(model, tokenizer, top_k=15, precision=name[:4], device=args.device,
                                max_batch_tokens=batch_tokens, bf16_autocast=autocast, fused=fused)
        scorer.candidates(queries[:20])  # warm-up
        times, answers = _timed(functools.partial(scorer.candidates, queries), args.device, args.repeats, clock)
        rates = [len(queries) / t for t in times]
        exact = exact or answers
        identical = sum(answers[q] == exact[q] for q in exact)
        overlap = sum(len(set(answers[q]) & set(exact[q])) / max(1, len(exact[q])) for q in exact) / len(exact)
        key = f"{name}@{batch_tokens}"
        figures["rates"][key] = rates
        figures.setdefault("agreement", {})[key] = {"identical_pct": 100.0 * identical / len(exact),
                                                     "top15_overlap_pct": 100.0 * overlap}
        print(f"{key:20s} median {statistics.median(rates):8.1f} queries/s (range {min(rates):.1f}-{max(rates):.1f})"
              f"  {statistics.median(rates) / statistics.median(reference_rate):6.1f}x reference  "
              f"identical to fp32 {100.0 * identical / len(exact):5.1f}%  top-15 overlap {100.0 * overlap:5.1f}%")
        del scorer
    figures["claims"] = _claims(args.device)
    print(f"two worker processes with --device auto got: {', '.join(figures['claims'])} "
          f"({torch.cuda.device_count() if torch.cuda.is_available() else 0} GPU(s) visible)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
