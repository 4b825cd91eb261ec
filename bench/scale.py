"""Scale benchmark: both pipelines at 1x, 4x and 16x input on DirectRunner (1 and 2 workers) and on a 2-worker
local Dask cluster, with the peak RSS of every worker process (a benchmark that prints figures; no assertions).

Usage:
  python -m bench.scale                                    # everything: about 12 minutes on 2 cores
  python -m bench.scale --pipelines corpus --scales 1,4 --runners direct-1,dask-2

Inputs (real data under ../shared/data):
  * augment: the first --augment_rows sentences of polarity-200.tsv (both classes alternating) are 1x; N x = N
    distinct copies (a suffix per copy, so that no masked-LM query is answered from another copy). Model: a seeded random 2-layer hidden-128 BERT masked LM with the
    real bert-base-uncased vocab; GloVe: glove.6B.50d.20k.txt.gz; --num_aug=8.
  * corpus: the real enwiki sample turned into the text format (bench/corpus.py), cut to --corpus_mb at a document
    boundary, is 1x; N x = N copies under different file names (different document keys). One epoch.
Shards (and the augmentation's masked-LM partitions) grow with the input, 2 per 1x, as a real run's would, so that
each shard holds the same number of rows at every scale.

Each run is a fresh child process: it starts its own workers (DirectRunner's SDK worker processes, or a new
LocalCluster of 2 worker processes with 1 thread each), samples the RSS of every worker process every 0.1 s with
psutil, and times the pipeline run alone (Dask cluster start-up excluded; imports and pipeline construction
included). Torch threads per worker = cores / workers.

Printed: one row per run (input rows/s, input MB/s, output rows, peak RSS of each worker process), then per
pipeline and runner: the seconds per 1x of input from 1x to 4x and from 4x to 16x (equal when cost grows linearly;
the fixed start-up cancels out) and peak RSS at 16x over 1x (1.0 when memory is flat).
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RUNNERS = ("direct-1", "direct-2", "dask-2")
PIPELINES = ("augment", "corpus")


# ------------------------------------------------------------------------------------------------------- inputs
def _augment_inputs(tmp: pathlib.Path, scales, rows: int):
    from bench import augment as augment_bench
    model = augment_bench._build_model(tmp / "bert", layers=2, hidden=128)
    inputs = {}
    for scale in scales:
        path = tmp / f"augment-{scale}x.tsv"
        written = augment_bench._write_input(path, rows, repeat=scale)
        inputs[scale] = (str(path), len(written) * scale, path.stat().st_size)
    return {"model": model, "glove": str(SHARED / "glove.6B.50d.20k.txt.gz")}, inputs


def _corpus_inputs(tmp: pathlib.Path, scales, corpus_mb: float):
    from bench import corpus as corpus_bench
    tokenizer = corpus_bench._make_tokenizer(tmp)
    full = tmp / "enwiki.txt"
    corpus_bench._make_text(full)
    documents = full.read_text(encoding="utf-8").split("\n\n")
    kept, size = [], 0
    for document in documents:
        if not document.strip():
            continue
        if kept and size + len(document.encode("utf-8")) > corpus_mb * 1e6:
            break
        kept.append(document)
        size += len(document.encode("utf-8")) + 2
    base = "\n\n".join(kept) + "\n\n"
    inputs = {}
    for scale in scales:
        folder = tmp / f"corpus-{scale}x"
        folder.mkdir()
        for copy in range(scale):
            (folder / f"part-{copy:03d}.txt").write_text(base, encoding="utf-8")
        inputs[scale] = (str(folder / "*.txt"), len(kept) * scale, len(base.encode("utf-8")) * scale)
    return {"tokenizer": tokenizer}, inputs


def _pipeline_argv(pipeline: str, assets: dict, input_glob: str, output: str, scale: int, workers: int):
    if pipeline == "augment":
        return [f"--model={assets['model']}", f"--glove={assets['glove']}", f"--input={input_glob}",
                f"--output={output}", "--num_aug=8", f"--num_shards={2 * scale}", f"--mlm_partitions={2 * scale}",
                f"--torch_threads={max(1, (os.cpu_count() or 1) // workers)}", "--overwrite"]
    return [f"--input={input_glob}", "--input_format=text", f"--output={output}",
            f"--tokenizer={assets['tokenizer']}", "--epochs=1", f"--num_shards={2 * scale}", "--overwrite"]


# ------------------------------------------------------------------------------------------------- child run
class _RssSampler(threading.Thread):
    """Samples the RSS of worker processes every `interval` s and keeps each one's peak."""

    def __init__(self, find_pids, interval: float = 0.1):
        super().__init__(daemon=True)
        self._find_pids = find_pids
        self._interval = interval
        self._done = threading.Event()
        self.peaks = {}

    def run(self):
        import psutil
        while not self._done.is_set():
            for pid in self._find_pids():
                try:
                    rss = psutil.Process(pid).memory_info().rss
                except psutil.Error:  # exited between listing and sampling
                    continue
                self.peaks[pid] = max(self.peaks.get(pid, 0), rss)
            self._done.wait(self._interval)

    def stop(self):
        self._done.set()
        self.join()


def _cmdline(process) -> list:
    import psutil
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _is_sdk_worker(cmdline: list) -> bool:
    return bool(cmdline) and "python" in os.path.basename(cmdline[0]) and "sdk_worker_main" in " ".join(cmdline)


def _child(spec: dict) -> dict:
    """One pipeline run in this fresh process; returns seconds, output rows and peak RSS per worker (MiB)."""
    import psutil
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging
    logging.disable(logging.WARNING)
    from pipelines import augment as augment_pipeline
    from pipelines import corpus as corpus_pipeline
    run = {"augment": augment_pipeline.run, "corpus": corpus_pipeline.run}[spec["pipeline"]]
    argv = list(spec["argv"])
    me = psutil.Process()
    cluster = None
    if spec["runner"] == "dask-2":
        import dask.distributed
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        cluster = dask.distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                                host="127.0.0.1", dashboard_address=None)
        with dask.distributed.Client(cluster) as client:
            worker_pids = sorted(client.run(os.getpid).values())
        argv = ["--runner=DaskRunner", f"--dask_client_address={cluster.scheduler_address}"] + argv
        find_pids = lambda: worker_pids  # noqa: E731
    elif spec["runner"] == "direct-2":
        argv = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"] + argv
        # The SDK worker processes (not the shells that start them).
        find_pids = lambda: [child.pid for child in me.children(recursive=True)  # noqa: E731
                             if _is_sdk_worker(_cmdline(child))]
    else:
        argv = ["--runner=DirectRunner", "--direct_num_workers=1"] + argv
        find_pids = lambda: [me.pid]  # noqa: E731  the bundles run in this process
    sampler = _RssSampler(find_pids)
    sampler.start()
    start = time.perf_counter()
    manifest = run(argv)
    seconds = time.perf_counter() - start
    sampler.stop()
    if cluster is not None:
        cluster.close()
    out_rows = sum(out["totals"].get("rows", 0) for name, out in manifest["outputs"].items() if name != "rejects")
    return {"seconds": seconds, "out_rows": out_rows,
            "worker_peak_mib": sorted(peak / 2**20 for peak in sampler.peaks.values())}


def _run_child(spec: dict) -> dict:
    result = subprocess.run([sys.executable, "-m", "bench.scale", "--child", json.dumps(spec)], cwd=ROOT,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{spec['pipeline']} on {spec['runner']} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------- main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipelines", default=",".join(PIPELINES))
    parser.add_argument("--runners", default=",".join(RUNNERS))
    parser.add_argument("--scales", default="1,4,16")
    parser.add_argument("--augment_rows", type=int, default=50, help="sentences of polarity-200 at 1x")
    parser.add_argument("--corpus_mb", type=float, default=0.25, help="MB of Wikipedia text at 1x")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    if not SHARED.is_dir():
        raise SystemExit(f"this benchmark reads the real data in {SHARED}; it is not on this machine")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    scales = sorted(int(s) for s in args.scales.split(","))
    runners = args.runners.split(",")
    results = []
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    print(f"{'pipeline':8} {'runner':9} {'scale':>5} {'in rows':>8} {'in MB':>7} {'seconds':>8} {'rows/s':>8} "
              f"{'MB/s':>6} {'out rows':>9} {'peak RSS/worker MiB':>20}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for pipeline in args.pipelines.split(","):
            if pipeline == "augment":
                assets, inputs = _augment_inputs(tmp, scales, args.augment_rows)
            else:
                assets, inputs = _corpus_inputs(tmp, scales, args.corpus_mb)
            for runner in runners:
                workers = 1 if runner == "direct-1" else 2
                for scale in scales:
                    input_glob, in_rows, in_bytes = inputs[scale]
                    output = tmp / f"out-{pipeline}-{runner}-{scale}"
                    spec = {"pipeline": pipeline, "runner": runner,
                            "argv": _pipeline_argv(pipeline, assets, input_glob, str(output), scale, workers)}
                    result = _run_child(spec)
                    shutil.rmtree(output, ignore_errors=True)
                    peaks = result["worker_peak_mib"]
                    row = {"pipeline": pipeline, "runner": runner, "scale": scale, "in_rows": in_rows,
                           "in_mb": in_bytes / 1e6, **result}
                    results.append(row)
                    print(f"{pipeline:8} {runner:9} {scale:>4}x {in_rows:>8} {row['in_mb']:>7.2f} "
                          f"{result['seconds']:>8.1f} {in_rows / result['seconds']:>8.1f} "
                          f"{row['in_mb'] / result['seconds']:>6.3f} {result['out_rows']:>9} "
                          f"{' / '.join(f'{p:.0f}' for p in peaks):>20}",
                          flush=True)
    print()
    print("linearity (seconds per 1x of input between scales; equal = linear) and memory (peak RSS of the largest "
          "worker, largest scale / smallest):")
    for pipeline in args.pipelines.split(","):
        for runner in runners:
            rows = {r["scale"]: r for r in results if r["pipeline"] == pipeline and r["runner"] == runner}
            steps = [f"{a}x->{b}x {(rows[b]['seconds'] - rows[a]['seconds']) / (b - a):.2f} s"
                     for a, b in zip(scales, scales[1:])]
            low, high = max(rows[scales[0]]["worker_peak_mib"]), max(rows[scales[-1]]["worker_peak_mib"])
            print(f"  {pipeline:8} {runner:9} {'; '.join(steps)}; peak RSS {low:.0f} -> {high:.0f} MiB "
                  f"({high / low:.2f}x)")


if __name__ == "__main__":
    main()
