"""Runs both pipelines and a short general distillation in-process, and writes the SHA-256 of every output file.

A refactor that must not change behaviour runs this before and after and compares the two JSON files:

    python bench/compare_outputs.py /tmp/compare --json before.json
    python bench/compare_outputs.py /tmp/compare --json after.json --compare before.json

Give the same working folder both times: some outputs hold their input paths (a reject's source, the trainer's
resolved config). manifest.json and README.md are left out (they hold times); the trainer's metrics.jsonl/.csv are
hashed with their wall-clock columns removed.
"""

import argparse
import bz2
import hashlib
import json
import os
import pathlib
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "pipelines" / "samples" / "sst2" / "train.tsv"
SHARED_DATA = pathlib.Path(os.environ.get("TINYBERT_SHARED_DATA") or ROOT.parent / "shared" / "data")
SKIPPED = {"manifest.json", "README.md"}
# metrics.jsonl keys that measure the machine, not the computation.
TIMING_KEYS = ("time", "seconds", "elapsed", "throughput", "per_second", "tokens_per_s", "samples_per_s", "step_s")


def _teacher(directory: str, tokenizer) -> str:
    """A random 2-layer BertModel (seeded) and its tokenizer: the general-distillation teacher."""
    import torch
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer.get_vocab()), hidden_size=24, num_hidden_layers=2,
                        num_attention_heads=12, intermediate_size=48, max_position_embeddings=128)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _vocab(sentences) -> dict:
    """A fixed WordPiece vocab over the sample's words (the `tokenizers` trainer breaks ties differently per run)."""
    words = sorted({word for sentence in sentences for word in sentence.lower().split()})
    letters = sorted({char for word in words for char in word})
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + ["##" + c for c in letters]
    tokens += [word for word in words if word not in set(tokens)]
    return {token: index for index, token in enumerate(tokens)}


def _wiki_cut(source: pathlib.Path, target: pathlib.Path, articles_wanted: int = 8) -> pathlib.Path:
    """The real dump up to its N-th article, closed after a page (as tests/test_corpus.py cuts it)."""
    data = bz2.open(source).read()
    cut = articles = 0
    while articles < articles_wanted:
        end = data.index(b"</page>", cut) + len(b"</page>")
        articles += b"<ns>0</ns>" in data[cut:end] and b"<redirect" not in data[cut:end]
        cut = end
    target.write_bytes(bz2.compress(data[:cut] + b"\n</mediawiki>\n"))
    return target


def produce(out: pathlib.Path) -> None:
    """Writes every output under `out` (emptied first)."""
    from pipelines import augment as augment_pipeline
    from pipelines import corpus as corpus_pipeline
    from pipelines import demo_assets
    from distill import run as distill_run

    if out.exists():
        shutil.rmtree(out)
    assets = out / "assets"
    assets.mkdir(parents=True)
    sentences = [line.split("\t")[0] for line in SAMPLE.read_text(encoding="utf-8").splitlines()[1:] if line]
    tokenizer = demo_assets.wordpiece_tokenizer(vocab=_vocab(sentences))
    mlm = demo_assets.build_masked_lm(str(assets / "mlm"), tokenizer, layers=1, hidden=32, heads=2, seed=3)
    glove = demo_assets.write_glove(str(assets / "glove.txt"), *demo_assets.cooccurrence_vectors(
        [s.split() for s in sentences], dim=8))

    results = out / "results"
    augment_pipeline.run(["--runner=DirectRunner", "--task=SST-2", f"--input={SAMPLE}", f"--output={results / 'aug'}",
                          f"--model={mlm}", f"--glove={glove}", "--num_shards=2", "--num_aug=3", "--seed=11",
                          "--quiet", "--candidate_store=none"])

    text = "\n\n".join("\n".join(sentences[i:i + 4]) for i in range(0, len(sentences), 4)) + "\n"
    (assets / "corpus.txt").write_text(text, encoding="utf-8")
    teacher_tokenizer = tokenizer
    if (SHARED_DATA / "bert-base-uncased-vocab.txt").is_file():
        teacher_tokenizer = demo_assets.wordpiece_tokenizer(
            vocab=demo_assets.read_vocab(str(SHARED_DATA / "bert-base-uncased-vocab.txt")))
    teacher = _teacher(str(assets / "teacher"), teacher_tokenizer)
    corpus_pipeline.run([f"--input={assets / 'corpus.txt'}", "--input_format=text",
                         f"--output={results / 'corpus-text'}", f"--tokenizer={teacher}", "--num_shards=2",
                         "--epochs=2", "--max_seq_len=32", "--docs_per_bucket=4", "--seed=7", "--quiet"])
    dump = SHARED_DATA / "enwiki-sample-pages-articles.xml.bz2"
    if dump.is_file():
        wiki = _wiki_cut(dump, assets / "enwiki-cut.xml.bz2")
        corpus_pipeline.run([f"--input={wiki}", "--input_format=wikipedia-xml",
                             f"--output={results / 'corpus-wiki'}", f"--tokenizer={teacher}", "--num_shards=2",
                             "--epochs=1", "--max_seq_len=64", "--docs_per_bucket=3", "--seed=7",
                             "--max_reject_fraction=0.9", "--quiet"])

    student = assets / "student.json"
    student.write_text(json.dumps({"num_hidden_layers": 1, "hidden_size": 24, "num_attention_heads": 12,
                                   "intermediate_size": 48}), encoding="utf-8")
    distill_run.main(["general", "--data", str(results / "corpus-text"), "--teacher", teacher, "--student",
                      str(student), "--output", str(results / "general"), "--max_steps", "4", "--batch_size", "4",
                      "--num_workers", "0", "--log_interval", "1", "--seed", "5"])


def _metrics_digest(path: pathlib.Path) -> str:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        lines.append(json.dumps({k: v for k, v in record.items() if not any(t in k for t in TIMING_KEYS)},
                                sort_keys=True))
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _csv_digest(path: pathlib.Path) -> str:
    import csv
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [{k: v for k, v in row.items() if not any(t in k for t in TIMING_KEYS)} for row in csv.DictReader(handle)]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode("utf-8")).hexdigest()


def digests(results: pathlib.Path) -> dict:
    found = {}
    for path in sorted(results.rglob("*")):
        if not path.is_file() or path.name in SKIPPED:
            continue
        name = path.relative_to(results).as_posix()
        if path.name == "metrics.jsonl":
            found[name] = _metrics_digest(path)
        elif path.name == "metrics.csv":
            found[name] = _csv_digest(path)
        else:
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def compare(before: dict, after: dict) -> list:
    problems = [f"missing after: {k}" for k in sorted(set(before) - set(after))]
    problems += [f"new after: {k}" for k in sorted(set(after) - set(before))]
    problems += [f"differs: {k}" for k in sorted(set(before) & set(after)) if before[k] != after[k]]
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="working folder (emptied)")
    parser.add_argument("--json", required=True, help="where to write {file: sha256}")
    parser.add_argument("--compare", default=None, help="a previous JSON to compare with")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = pathlib.Path(args.output).resolve()
    produce(out)
    found = digests(out / "results")
    pathlib.Path(args.json).write_text(json.dumps(found, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(found)} files hashed -> {args.json}")
    if args.compare:
        problems = compare(json.loads(pathlib.Path(args.compare).read_text(encoding="utf-8")), found)
        print("identical" if not problems else "\n".join(problems))
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
