"""Seconds to plan and augment one long sentence, and the ratio per doubling of its length (linear: ~2x).

Usage:
  python bench/long_sentence.py                    # 50, 100, 200, 400 KB
  python bench/long_sentence.py --sizes 100 200 --num_aug 20

One sentence built by repeating the polarity-200 sentences (../shared/data; a generated vocabulary where absent),
through the library steps the pipeline runs for it: plan_fields (basic tokenization + WordPieces), the masked-LM
queries inside the 512-token window and their candidates (a tiny 2-layer BERT with the real bert-base-uncased vocab
where present: the model's cost is bounded by the window, the length-dependent work is what is measured), and
Algorithm 1 with --num_aug draws.
"""

import argparse
import csv
import pathlib
import random
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _shared_file(name: str):
    for folder in [ROOT, *ROOT.parents]:
        path = folder / "shared" / "data" / name
        if path.exists():
            return path
    return None


def _sentences():
    path = _shared_file("polarity-200.tsv")
    if path is not None:
        with open(path, encoding="utf-8") as handle:
            return [row[0] for row in list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]]
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocabulary = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 10))) for _ in range(3000)]
    return [" ".join(rng.choice(vocabulary) for _ in range(20)) + " ." for _ in range(200)]


def _model(out: str) -> str:
    from pipelines import demo_assets
    vocab = _shared_file("bert-base-uncased-vocab.txt")
    if vocab is not None:
        tokenizer = demo_assets.wordpiece_tokenizer(vocab=demo_assets.read_vocab(str(vocab)))
    else:
        tokenizer = demo_assets.wordpiece_tokenizer(texts=_sentences(), vocab_size=3000)
    return demo_assets.build_masked_lm(out, tokenizer, layers=2, hidden=64, heads=2, intermediate=128, seed=0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 400], help="sentence sizes in KB")
    parser.add_argument("--num_aug", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs per size (shared cores are noisy)")
    args = parser.parse_args(argv)

    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from augment.augmenter import augment_example, field_candidates, plan_fields
    from augment.mlm import MaskedLMScorer
    from augment.tasks import Example
    from augment.words import WordSplitter

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = _model(tmp)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    splitter = WordSplitter(tokenizer.backend_tokenizer)
    scorer = MaskedLMScorer(model, tokenizer)
    sentences = _sentences()

    def build(size: int) -> str:
        parts, total, index = [], 0, 0
        while total < size:
            parts.append(sentences[index % len(sentences)])
            total += len(parts[-1]) + 1
            index += 1
        return " ".join(parts)[:size].strip()

    def measure(text: str):
        start = time.perf_counter()
        plans = plan_fields([text], splitter=splitter, tokenizer=tokenizer)
        planned = time.perf_counter()
        queries = plans[0].mlm_queries()
        answers = {query.position: found for query, found in scorer.candidates(queries).items()}
        scored = time.perf_counter()
        candidates = [field_candidates(plans[0], answers, {})]
        rows = augment_example(Example("0", 0, (text,), None), plans, candidates, num_aug=args.num_aug,
                               replace_prob=0.4, seed=0)
        done = time.perf_counter()
        return len(plans[0].words), len(queries), planned - start, scored - planned, done - scored, len(rows)

    measure(build(args.sizes[0] * 1000))  # warm up the tokenizer and the model's 512-token forwards
    previous = None
    print(f"{'KB':>5} {'words':>7} {'queries':>7} {'plan s':>7} {'mlm s':>6} {'aug s':>6} {'total s':>7} "
          f"{'x prev':>6} {'plan+aug x prev':>15}")
    for size_kb in args.sizes:
        text = build(size_kb * 1000)
        runs = [measure(text) for _ in range(args.repeats)]
        words, queries, _, _, _, rows = runs[0]
        plan_s, mlm_s, aug_s = (min(run[column] for run in runs) for column in (2, 3, 4))
        total, linear = plan_s + mlm_s + aug_s, plan_s + aug_s
        ratios = (f"{total / previous[0]:6.2f} {linear / previous[1]:15.2f}" if previous else f"{'':>6} {'':>15}")
        print(f"{size_kb:>5} {words:>7} {queries:>7} {plan_s:7.2f} {mlm_s:6.2f} {aug_s:6.2f} {total:7.2f} {ratios}"
              f"  ({rows} rows)")
        previous = (total, linear)
    print("mlm s is bounded by the 512-token window (at most 511 queries whatever the length); plan+aug is the part "
          "that grows with the sentence: ~2x per doubling is linear")


if __name__ == "__main__":
    main()
