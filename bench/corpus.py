"""Throughput and memory of `python -m pipelines.corpus` (a benchmark that prints figures; no assertions).

Usage:
  python -m bench.corpus [--scales 1,4,16] [--repeats 3] \
      [--runner_flags="--direct_num_workers=2 --direct_running_mode=multi_processing"]
  python -m bench.corpus --startup [--repeats 5]   # fixed cost of a tiny run against `import apache_beam`

--startup times, in fresh interpreters taken in turn (so that the machine's drift hits each alike): `python -c pass`,
`python -c "import apache_beam"`, `python -c "import pipelines.corpus.pipeline"` and the whole
`python -m pipelines.corpus` process on 20 KB of text with a local tokenizer directory (as `save_pretrained` writes
it, and where the real vocabulary is at hand also a classic BERT folder: config.json + vocab.txt, no tokenizer.json);
it prints the median and range of each and the ratio of each tiny run to `import apache_beam` (the goal: at most 2x).

Input: the real shortened English Wikipedia dump in ../shared/data, turned once into the reference text format
(one sentence per line, blank line between documents) with the pipeline's own wikitext cleaner and Punkt splitter;
scale N = N copies of it under different file names. Each run happens in a fresh subprocess so that its peak RSS
(ru_maxrss of that child) is its own. Prints:
  * raw `tokenizers` encode_batch MB/s on the same sentences (the practical limit): one call over all of them, with
    Rust parallelism on (TOKENIZERS_PARALLELISM=true, all cores), best of 3, measured before and again after the
    pipeline runs; the higher of the two is the baseline (the machine may be shared), and encode_batch_fast (what
    the pipeline calls) is printed next to it;
  * end-to-end MB/s of input text into finished shards (text format) at each scale, and the ratio to raw. The time
    is `pipelines.corpus.run()` from its call to its return (tokenizer loading, pipeline construction, the run,
    the manifest); the child's whole wall time (interpreter start, imports) is printed next to it. Each scale runs
    --repeats times, like the baseline's best of 3: the best run is compared with the best baseline (the machine
    is shared and its speed drifts), and the median is printed next to it; each run is also paired with one
    baseline call made just before it, and the median of those paired ratios is printed (drift cancels in a pair);
  * peak RSS at each scale and the ratio of the largest to 1x,
  * for reference, the wikipedia-xml format end to end on the dump itself (MB/s of XML and of extracted text).
The pipeline runs on Beam's DirectRunner with its defaults unless --runner_flags says otherwise.

--reference_dir PATH (the reference TinyBERT folder, holding `pregenerate_training_data.py` and its `transformer`
package) adds, at --reference_sizes MB of text (default 25,100): the reference script against the whole
`python -m pipelines.corpus` process on the same file, both as fresh subprocesses taken in turn (reference, ours,
reference, ours ...), 1 epoch, max_seq_len 128, both with their default masked_lm_prob (0) and the reference with its
defaults otherwise (in memory, one worker). The file is the 1x text repeated, each copy's documents made distinct (a
copy number before their first sentence). Prints wall time, MB/s, peak RSS (each child's own, from wait4) of each
run, best and range, and ours/reference on the best runs and paired run by run. `boto3`, which the reference's
`transformer` package imports for S3 downloads only, is stubbed in the reference's process where not installed.
--scales "" skips the scale runs.
"""

import argparse
import bz2
import functools
import json
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("TINYBERT_SHARED_DATA") or ROOT.parent / "shared" / "data")
DUMP = SHARED / "enwiki-sample-pages-articles.xml.bz2"


def _make_tokenizer(directory: pathlib.Path) -> str:
    from transformers import BertTokenizerFast
    vocab_dir = directory / "vocab"
    vocab_dir.mkdir()
    shutil.copy(SHARED / "bert-base-uncased-vocab.txt", vocab_dir / "vocab.txt")
    out = directory / "tokenizer"
    BertTokenizerFast.from_pretrained(str(vocab_dir)).save_pretrained(str(out))
    return str(out)


def _make_classic_folder(directory: pathlib.Path) -> str:
    """A classic BERT model folder: config.json, vocab.txt, no tokenizer.json (no weights: a corpus run reads none)."""
    out = directory / "classic-bert"
    out.mkdir()
    shutil.copy(SHARED / "bert-base-uncased-vocab.txt", out / "vocab.txt")
    (out / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 30522}))
    return str(out)


def _make_text(path: pathlib.Path) -> None:
    from corpus import documents, wiki
    splitter = documents.make_sentence_splitter()
    with open(path, "w", encoding="utf-8") as out:
        for article in wiki.local_articles(str(DUMP)):
            sentences = documents.split_sentences(splitter, wiki.wikitext_to_paragraphs(article.wikitext))
            if sentences:
                out.write("\n".join(sentences) + "\n\n")


@functools.lru_cache(maxsize=None)
def _baseline_inputs(text_path: pathlib.Path, tokenizer: str):
    """(Rust tokenizer, text size in bytes, its non-empty lines): loaded once, however many baseline calls."""
    from transformers import AutoTokenizer
    data = text_path.read_bytes()
    return (AutoTokenizer.from_pretrained(tokenizer).backend_tokenizer, len(data),
            [line for line in data.decode("utf-8").split("\n") if line])


def _raw_tokenizer_mb_s(text_path: pathlib.Path, tokenizer: str, repeats: int = 3, fast: bool = True):
    """(encode_batch MB/s, encode_batch_fast MB/s or None, CPU seconds per wall second of the best encode_batch
    call)."""
    backend, size, lines = _baseline_inputs(text_path, tokenizer)
    rates, cores = {}, 0.0
    for method in ("encode_batch", "encode_batch_fast") if fast else ("encode_batch",):
        best = float("inf")
        for _ in range(repeats):
            cpu = time.process_time()
            start = time.perf_counter()
            getattr(backend, method)(lines, add_special_tokens=False)
            seconds = time.perf_counter() - start
            if seconds < best:
                best = seconds
                if method == "encode_batch":
                    cores = (time.process_time() - cpu) / seconds
        rates[method] = size / 1e6 / best
    return rates["encode_batch"], rates.get("encode_batch_fast"), cores


def _child(args) -> None:
    """One pipeline run; prints a JSON line with seconds and this process's peak RSS."""
    from pipelines import corpus
    start = time.perf_counter()
    manifest = corpus.run([f"--input={args.input}", f"--input_format={args.input_format}",
                           f"--output={args.output}", f"--tokenizer={args.tokenizer}", "--epochs=1",
                           f"--num_shards={args.num_shards}", "--overwrite", *args.runner_flags.split()])
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_rss_mib": max(peak_kib, children_kib) / 1024,
                      "instances": manifest["counts"]["corpus"]["instances"],
                      "tokens": manifest["counts"]["corpus"]["tokens"]}))


def _run_child(input_glob, input_format, output, tokenizer, runner_flags, num_shards=4):
    command = [sys.executable, "-m", "bench.corpus", "--child", f"--input={input_glob}", f"--num_shards={num_shards}",
               f"--input_format={input_format}", f"--output={output}", f"--tokenizer={tokenizer}",
               f"--runner_flags={runner_flags}"]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "true"})
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "process_seconds": time.perf_counter() - start}


def _tiny_text(path: pathlib.Path, size: int = 20_000) -> None:
    """About `size` bytes of the sample task's sentences as documents of 8 sentences (the text format)."""
    import csv
    from pipelines import demo_assets
    with open(demo_assets.SAMPLE_TRAIN, encoding="utf-8") as handle:
        sentences = [row[0] for row in list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]]
    written, index = 0, 0
    with open(path, "w", encoding="utf-8") as out:
        while written < size:
            line = sentences[index % len(sentences)] + "\n"
            out.write(line)
            written += len(line.encode("utf-8"))
            index += 1
            if index % 8 == 0:
                out.write("\n")


def _startup(repeats: int) -> None:
    """Median and range of fresh-process times: interpreter, import apache_beam, import pipelines.corpus.pipeline,
    tiny run."""
    from pipelines import demo_assets
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        if (SHARED / "bert-base-uncased-vocab.txt").exists():
            tokenizer = _make_tokenizer(tmp)
        else:  # a user's machine without the real data: a small trained vocab does the same work
            tokenizer = str(tmp / "tokenizer")
            demo_assets.wordpiece_tokenizer(texts=[SHARED.name] * 4, vocab_size=200).save_pretrained(tokenizer)
        text = tmp / "tiny.txt"
        _tiny_text(text)
        folders = {"tiny corpus run": tokenizer}
        if (SHARED / "bert-base-uncased-vocab.txt").exists():
            folders["tiny run, classic folder"] = _make_classic_folder(tmp)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "import apache_beam": [sys.executable, "-c", "import apache_beam"],
            "import pipelines.corpus.pipeline": [sys.executable, "-c", "import pipelines.corpus.pipeline"],
            **{name: [sys.executable, "-m", "pipelines.corpus", f"--input={text}", "--input_format=text",
                      f"--output={tmp / 'out'}", f"--tokenizer={folder}", "--overwrite", "--quiet"]
               for name, folder in folders.items()},
        }
        times = {name: [] for name in commands}
        for _ in range(repeats):
            for name, command in commands.items():  # in turn, so drift hits every command alike
                start = time.perf_counter()
                subprocess.run(command, cwd=tmp, env=env, check=True, capture_output=True)
                times[name].append(time.perf_counter() - start)
        print(f"machine: {os.cpu_count()} cores; {text.stat().st_size / 1000:.0f} KB of text; {repeats} runs each")
        for name, values in times.items():
            print(f"{name:24s} median {statistics.median(values):5.2f} s  range {min(values):5.2f}-{max(values):5.2f} s")
        for name in folders:
            ratios = [run / beam for run, beam in zip(times[name], times["import apache_beam"])]
            print(f"{name} / import apache_beam: median {statistics.median(ratios):.2f}x "
                  f"(range {min(ratios):.2f}-{max(ratios):.2f}x, each run over the import just before it); goal <= 2x")
        beam = statistics.median(times["import apache_beam"])
        ours = statistics.median(times["import pipelines.corpus.pipeline"])
        print(f"  beyond import apache_beam: our imports {ours - beam:+.2f} s, the run itself "
              f"{statistics.median(times['tiny corpus run']) - ours:+.2f} s")


# Runs the reference script in a fresh interpreter: its `transformer` package imports boto3/botocore (S3 downloads,
# unused here) at import time; empty stand-ins let it load where they are not installed.
_REFERENCE_LAUNCHER = """
import os, runpy, sys, types
try:
    import boto3, botocore.exceptions
except ImportError:
    for name in ("boto3", "botocore", "botocore.exceptions"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["botocore.exceptions"].ClientError = Exception
script = sys.argv[1]
sys.path.insert(0, os.path.dirname(script))
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


# Times one command from a small process of its own: a child's ru_maxrss starts from its parent's peak (Linux keeps
# the peak of the address space that exec replaces), so the benchmark, holding the text and a tokenizer, would mask
# the peak of anything smaller that it started directly.
_MEASURER = """
import os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
seconds = time.perf_counter() - start
with open(sys.argv[1], "w") as out:
    out.write(f"{os.waitstatus_to_exitcode(status)} {seconds} {usage.ru_maxrss}")
"""


def _timed_process(command, cwd, env, log: pathlib.Path):
    """(wall seconds, peak RSS MiB) of one command in its own process; its output goes to `log`."""
    figures = log.with_suffix(".figures")
    with open(log, "w") as out:
        subprocess.run([sys.executable, "-c", _MEASURER, str(figures), *command], cwd=cwd, env=env, stdout=out,
                       stderr=subprocess.STDOUT, check=True)
    code, seconds, peak_kib = figures.read_text().split()
    if int(code):
        sys.exit(f"{command[:4]} failed ({code}); last output:\n{log.read_text()[-3000:]}")
    return float(seconds), int(peak_kib) / 1024


def _sized_text(base: pathlib.Path, path: pathlib.Path, megabytes: float) -> float:
    """The 1x text repeated up to `megabytes` MB (whole documents); every copy's documents get their copy number
    before the first sentence so that no two documents are the same. Returns the size in MB."""
    documents = [doc for doc in base.read_text(encoding="utf-8").split("\n\n") if doc.strip()]
    written, copy = 0, 0
    with open(path, "w", encoding="utf-8") as out:
        while written < megabytes * 1e6:
            for doc in documents:
                chunk = f"Copy {copy}. {doc}\n\n"
                out.write(chunk)
                written += len(chunk.encode("utf-8"))
                if written >= megabytes * 1e6:
                    break
            copy += 1
    return path.stat().st_size / 1e6


def _versus_reference(reference_dir: pathlib.Path, sizes, repeats: int, base: pathlib.Path, tmp: pathlib.Path,
                      tokenizer: str) -> None:
    script = reference_dir / "pregenerate_training_data.py"
    if not script.exists():
        sys.exit(f"not the reference TinyBERT folder (no pregenerate_training_data.py): {reference_dir}")
    vocab_dir = tmp / "vocab"  # vocab.txt, made by _make_tokenizer: what the reference's BertTokenizer reads
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    print(f"versus the reference {script} (1 epoch, max_seq_len 128, whole processes, {repeats} runs each, "
          f"taken in turn)")
    for megabytes in sizes:
        text = tmp / f"text-{megabytes}mb.txt"
        size = _sized_text(base, text, megabytes)
        raw = _raw_tokenizer_mb_s(base, tokenizer, repeats=3, fast=False)[0]
        commands = {
            "reference": [sys.executable, "-c", _REFERENCE_LAUNCHER, str(script), f"--train_corpus={text}",
                          f"--output_dir={tmp / 'ref-out'}", f"--bert_model={vocab_dir}", "--do_lower_case",
                          "--epochs_to_generate=1", "--max_seq_len=128"],
            "ours": [sys.executable, "-m", "pipelines.corpus", f"--input={text}", "--input_format=text",
                     f"--tokenizer={tokenizer}", "--epochs=1", "--max_seq_len=128", f"--output={tmp / 'our-out'}",
                     "--overwrite", "--quiet"],
        }
        runs = {name: [] for name in commands}
        for _ in range(repeats):
            for name, command in commands.items():
                shutil.rmtree(tmp / "ref-out", ignore_errors=True)
                runs[name].append(_timed_process(command, ROOT, env, tmp / f"{name}.log"))
        shutil.rmtree(tmp / "ref-out", ignore_errors=True)
        text.unlink()
        print(f"{size:.1f} MB of text (raw encode_batch on the 1x text just before: {raw:.2f} MB/s):")
        for name, results in runs.items():
            seconds = sorted(run[0] for run in results)
            print(f"  {name:9s} best {seconds[0]:6.1f} s = {size / seconds[0]:5.2f} MB/s  (range "
                  f"{size / seconds[-1]:.2f}-{size / seconds[0]:.2f} MB/s; peak RSS "
                  f"{max(run[1] for run in results):.0f} MiB)")
        best = min(run[0] for run in runs["reference"]) / min(run[0] for run in runs["ours"])
        paired = [ref[0] / our[0] for ref, our in zip(runs["reference"], runs["ours"])]
        print(f"  ours/reference: {best:.2f}x on the best runs; run by run {min(paired):.2f}-{max(paired):.2f}x "
              f"(goal >= 5x); ours/raw encode_batch {size / min(run[0] for run in runs['ours']) / raw:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,4,16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runner_flags", default="")
    parser.add_argument("--startup", action="store_true",
                        help="time a tiny run's fixed cost against `import apache_beam` instead")
    parser.add_argument("--reference_dir", type=pathlib.Path,
                        help="the reference TinyBERT folder: also time its pregenerate_training_data.py against ours")
    parser.add_argument("--reference_sizes", default="25,100", help="MB of text for the reference comparison")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input")
    parser.add_argument("--input_format")
    parser.add_argument("--output")
    parser.add_argument("--tokenizer")
    parser.add_argument("--num_shards", type=int, default=4)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    if args.startup:
        _startup(args.repeats)
        return
    if not DUMP.exists():
        sys.exit(f"benchmark data not present: {DUMP}")
    os.environ["TOKENIZERS_PARALLELISM"] = "true"  # the baseline uses every core, whatever the caller's setting
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        tokenizer = _make_tokenizer(tmp)
        text_path = tmp / "base.txt"
        _make_text(text_path)
        text_mb = text_path.stat().st_size / 1e6
        raw_before, fast_before, cores = _raw_tokenizer_mb_s(text_path, tokenizer)
        print(f"machine: {os.cpu_count()} cores; runner flags: {args.runner_flags or '(DirectRunner defaults)'}")
        print(f"text: {text_mb:.2f} MB per 1x (real enwiki sample, one sentence per line)")
        print(f"raw tokenizers (before the runs, best of 3): encode_batch {raw_before:.2f} MB/s using {cores:.1f} "
              f"cores; encode_batch_fast {fast_before:.2f} MB/s")
        if args.reference_dir:
            _versus_reference(args.reference_dir, [float(s) for s in args.reference_sizes.split(",")],
                              args.repeats, text_path, tmp, tokenizer)
            if not args.scales:
                return
        results = {}
        for scale in [int(s) for s in args.scales.split(",") if s]:
            folder = tmp / f"in-{scale}"
            folder.mkdir()
            for copy in range(scale):
                shutil.copy(text_path, folder / f"part-{copy}.txt")
            # Shards grow with the input as a real run's would (4 per 1x), so that a shard's rows stay the same size.
            runs, paired = [], []
            for _ in range(args.repeats):
                # Each run is paired with a baseline call made just before it: the machine's speed drifts by a
                # third within minutes, and a pair sees the same machine.
                pair_raw = _raw_tokenizer_mb_s(text_path, tokenizer, repeats=1, fast=False)[0]
                run = _run_child(str(folder / "*.txt"), "text", str(tmp / f"out-{scale}"), tokenizer,
                                 args.runner_flags, num_shards=4 * scale)
                runs.append(run)
                paired.append(text_mb * scale / run["seconds"] / pair_raw)
            shutil.rmtree(folder)
            best = min(runs, key=lambda run: run["seconds"])
            results[scale] = {**best, "median_seconds": statistics.median(run["seconds"] for run in runs),
                              "peak_rss_mib": max(run["peak_rss_mib"] for run in runs),
                              "paired": statistics.median(paired)}
        raw_after, fast_after, cores_after = _raw_tokenizer_mb_s(text_path, tokenizer)
        raw = max(raw_before, raw_after)
        print(f"raw tokenizers (after the runs, best of 3): encode_batch {raw_after:.2f} MB/s using "
              f"{cores_after:.1f} cores; encode_batch_fast {fast_after:.2f} MB/s")
        print(f"baseline: raw encode_batch {raw:.2f} MB/s (the higher of before and after)")
        rss = {scale: result["peak_rss_mib"] for scale, result in results.items()}
        seconds = {scale: result["seconds"] for scale, result in results.items()}
        for scale, result in sorted(results.items()):
            rate = text_mb * scale / result["seconds"]
            median_rate = text_mb * scale / result["median_seconds"]
            print(f"text x{scale}: {text_mb * scale:.2f} MB in {result['seconds']:.1f} s = {rate:.2f} MB/s "
                  f"({rate / raw:.2f}x raw tokenizer; median of {args.repeats} {median_rate:.2f} MB/s = "
                  f"{median_rate / raw:.2f}x; whole process {result['process_seconds']:.1f} s = "
                  f"{text_mb * scale / result['process_seconds'] / raw:.2f}x); {result['instances']} instances; "
                  f"peak RSS {result['peak_rss_mib']:.0f} MiB")
            print(f"  x{scale} paired with a baseline call just before each run: median ratio "
                  f"{result['paired']:.2f}x")
        scales = sorted(rss)
        if len(scales) > 1:
            for scale in scales[1:]:
                print(f"peak RSS x{scale} / x{scales[0]}: {rss[scale] / rss[scales[0]]:.2f}")
            # The difference between two sizes removes the fixed start-up (imports, pipeline construction).
            marginal = text_mb * (scales[-1] - scales[0]) / (seconds[scales[-1]] - seconds[scales[0]])
            print(f"marginal text rate x{scales[0]}->x{scales[-1]}: {marginal:.2f} MB/s "
                  f"({marginal / raw:.2f}x raw tokenizer); fixed start-up about "
                  f"{seconds[scales[0]] - text_mb * scales[0] / marginal:.1f} s")
        xml_mb = len(bz2.open(DUMP).read()) / 1e6
        result = _run_child(str(DUMP), "wikipedia-xml", str(tmp / "out-xml"), tokenizer, args.runner_flags)
        print(f"wikipedia-xml x1: {xml_mb:.2f} MB of XML ({text_mb:.2f} MB of article text) in "
              f"{result['seconds']:.1f} s = {xml_mb / result['seconds']:.2f} MB/s of XML, "
              f"{text_mb / result['seconds']:.2f} MB/s of text; peak RSS {result['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
