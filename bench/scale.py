"""Scaling bench: each pipeline on 1 and 2 workers of every engine, as a speed-up table (figures, no assertions).

Usage:
  python -m bench.scale                                   # corpus text + corpus XML + augment, every runner
  python -m bench.scale --inputs corpus-text --runners direct-1,dask-2 --rounds 3

Inputs (built under a temporary folder from the real data in ../shared/data):
  * corpus-text: the enwiki sample as text, cut into documents of 4 sentences, repeated with a copy number in each
    document to --corpus_mb (200) MB in one file; `--max_seq_len 128 --epochs 1`, a tokenizer.json folder of the
    bert-base-uncased vocab.
  * corpus-xml: the enwiki sample dump, its pages repeated with new page ids to --xml_mb (250) MB of XML in one
    uncompressed file; `--input_format wikipedia-xml`, otherwise as above.
  * augment: --augment_rows (200) sentences of polarity-200 (made distinct per copy), --num_aug 8, a seeded random
    BERT-base-shaped masked LM (12 layers, hidden 768) with the real vocab, GloVe 6B 50d 20k, `--torch_threads 1`
    per worker.
Runners: direct-1 (DirectRunner, one worker), direct-2 (`--direct_num_workers 2 --direct_running_mode
multi_processing`), dask-2 (a cluster started from the shell, `dask scheduler --preload pipelines.dask_worker` +
`dask worker --nworkers 2 --nthreads 1 --preload pipelines.PIPELINE.worker --preload-nanny pipelines.PIPELINE.worker`
as docs/scaling.md starts one, fresh for each run and started before the clock: its workers imported the pipeline's
modules as they started), local-2 (`--local_workers 2`: the command starts and stops its own cluster, inside the
clock).

Every run is the pipeline's command as a user types it (`python -m pipelines.X ...`, whole process: start-up
included). Runs are interleaved (round 1: every runner, round 2: every runner, ...) so that load on a shared
machine hits all alike; the table shows each runner's median over --rounds. Columns: wall seconds; the run's fixed
cost (the same command on a 0.3 MB input, 8 sentences for augment, run once before the rounds) and its share of the
wall time (the issue of scale: a speed-up is only the workers' if this share is small); speed-up over
direct-1 on the same input and parallel efficiency (speed-up / workers); CPU seconds per MB of input (every process
of the run: launcher, workers, scheduler); peak RSS of each worker process (sampled every 0.1 s; direct-1: the
launcher, which runs the bundles); MB the workers sent each other per MB of input (dask-2: dask's own transfer
counters; the other runners do not expose theirs: "-"). Outputs are checked byte-identical across runners.
"""

import argparse
import hashlib
import json
import os
import pathlib
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RUNNERS = ("direct-1", "direct-2", "dask-2", "local-2")
INPUTS = ("corpus-text", "corpus-xml", "augment")
TINY_MB, TINY_ROWS = 0.3, 8  # the fixed-cost probe's inputs
BIN = pathlib.Path(sys.executable).parent


# ------------------------------------------------------------------------------------------------------- inputs
def _corpus_text(tmp: pathlib.Path, megabytes: float) -> pathlib.Path:
    from bench import corpus as corpus_bench
    base = tmp / "enwiki.txt"
    corpus_bench._make_text(base)
    documents = [doc.split("\n") for doc in base.read_text(encoding="utf-8").split("\n\n") if doc.strip()]
    short = [doc[i:i + 4] for doc in documents for i in range(0, len(doc), 4)]
    path, written, copy = tmp / "corpus-text.txt", 0, 0
    with open(path, "w", encoding="utf-8") as out:
        while written < megabytes * 1e6:
            for doc in short:
                chunk = f"Copy {copy}. " + "\n".join(doc) + "\n\n"
                out.write(chunk)
                written += len(chunk.encode("utf-8"))
                if written >= megabytes * 1e6:
                    break
            copy += 1
    return path


def _corpus_xml(tmp: pathlib.Path, megabytes: float) -> pathlib.Path:
    """The sample dump's pages repeated with new page ids (copy * 10^9 + id) to `megabytes` MB, in one file."""
    import bz2
    text = bz2.decompress((SHARED / "enwiki-sample-pages-articles.xml.bz2").read_bytes()).decode("utf-8")
    head_end, tail_start = text.index("  <page>"), text.rindex("</mediawiki>")
    head, pages = text[:head_end], text[head_end:tail_start]
    if megabytes * 1e6 < len(pages):  # less than one copy: its first pages (a fixed-cost probe)
        pages = pages[:pages.rindex("</page>", 0, max(int(megabytes * 1e6), pages.index("</page>") + 1)) + 7] + "\n"
    page_id = re.compile(r"(<page>\s*<title>[^<]*</title>\s*<ns>[^<]*</ns>\s*<id>)(\d+)(</id>)")
    path, written, copy = tmp / "corpus-xml.xml", 0, 0
    with open(path, "w", encoding="utf-8") as out:
        out.write(head)
        while written < megabytes * 1e6:
            chunk = page_id.sub(lambda m, c=copy: f"{m.group(1)}{c * 10**9 + int(m.group(2))}{m.group(3)}", pages)
            out.write(chunk)
            written += len(chunk.encode("utf-8"))
            copy += 1
        out.write("</mediawiki>\n")
    return path


def _inputs(tmp: pathlib.Path, names, args, *, tiny: bool = False):
    """{input name: (argv of the pipeline without runner and output, MB of input)}; `tiny`: the same commands on
    inputs of a few hundred KB (8 sentences for augment), whose wall time is the run's fixed cost."""
    tmp.mkdir(parents=True, exist_ok=True)
    if tiny:
        args = argparse.Namespace(corpus_mb=TINY_MB, xml_mb=TINY_MB, augment_rows=TINY_ROWS)
    found = {}
    if {"corpus-text", "corpus-xml"} & set(names):
        from bench import corpus as corpus_bench
        tokenizer = corpus_bench._make_tokenizer(tmp)
        common = [f"--tokenizer={tokenizer}", "--max_seq_len=128", "--epochs=1", "--quiet"]
        if "corpus-text" in names:
            path = _corpus_text(tmp, args.corpus_mb)
            found["corpus-text"] = (["pipelines.corpus", f"--input={path}", "--input_format=text"] + common,
                                    path.stat().st_size / 1e6)
        if "corpus-xml" in names:
            path = _corpus_xml(tmp, args.xml_mb)
            found["corpus-xml"] = (["pipelines.corpus", f"--input={path}", "--input_format=wikipedia-xml"] + common,
                                   path.stat().st_size / 1e6)
    if "augment" in names:
        from bench import augment as augment_bench
        model = augment_bench._build_model(tmp / "bert-base", layers=12, hidden=768)
        path = tmp / "augment.tsv"
        rows = augment_bench._write_input(path, min(args.augment_rows, 200),
                                          repeat=max(1, args.augment_rows // 200))
        found["augment"] = (["pipelines.augment", f"--model={model}", f"--input={path}", "--num_aug=8",
                             f"--glove={SHARED / 'glove.6B.50d.20k.txt.gz'}", "--torch_threads=1", "--quiet",
                             "--candidate_store=none"],  # every run computes its answers
                            path.stat().st_size / 1e6)
        del rows
    return found


# ------------------------------------------------------------------------------------------------------ sampling
class _Sampler(threading.Thread):
    """Every 0.1 s: the peak RSS of each worker process, and the last CPU seconds of every process watched."""

    def __init__(self, find_workers, find_watched):
        super().__init__(daemon=True)
        self._find_workers, self._find_watched = find_workers, find_watched
        self._done = threading.Event()
        self.peaks, self.cpu = {}, {}

    def run(self):
        import psutil
        while not self._done.is_set():
            workers = set(self._find_workers())
            for pid in self._find_watched():
                try:
                    process = psutil.Process(pid)
                    times = process.cpu_times()
                    self.cpu[pid] = times.user + times.system
                    if pid in workers:
                        self.peaks[pid] = max(self.peaks.get(pid, 0), process.memory_info().rss)
                except psutil.Error:  # exited between listing and sampling
                    continue
            self._done.wait(0.1)

    def stop(self):
        self._done.set()
        self.join()


def _descendants(pid: int):
    import psutil
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _is_local_worker(process) -> bool:
    """A `--local_workers` worker: forked by the fork server (a process under one whose command line is the fork
    server's), or spawned."""
    import psutil
    try:
        if "spawn_main" in _cmdline(process):
            return True
        parent = process.parent()
        return parent is not None and "forkserver" in _cmdline(parent) and "forkserver" in _cmdline(process)
    except psutil.Error:
        return False


def _cmdline(process) -> str:
    import psutil
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


class _ShellCluster:
    """`dask scheduler --preload pipelines.dask_worker` + `dask worker --nworkers 2 --nthreads 1 --preload
    pipelines.PIPELINE.worker --preload-nanny pipelines.PIPELINE.worker` on 127.0.0.1, as docs/scaling.md starts them
    for a pipeline."""

    def __init__(self, folder: pathlib.Path, pipeline: str):
        dask = shutil.which("dask", path=str(BIN)) or "dask"
        scheduler_file = folder / "scheduler.json"
        scheduler_file.unlink(missing_ok=True)
        log = open(folder / "cluster.log", "w")
        self.scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                           "--no-dashboard", "--scheduler-file", str(scheduler_file),
                                           "--preload", "pipelines.dask_worker"],
                                          env=_env(), stdout=log, stderr=subprocess.STDOUT, cwd=folder)
        while not scheduler_file.exists() or not scheduler_file.stat().st_size:
            time.sleep(0.1)
        self.address = json.loads(scheduler_file.read_text())["address"]
        self.workers = subprocess.Popen([dask, "worker", self.address, "--nworkers", "2", "--nthreads", "1",
                                         "--no-dashboard", "--preload", f"{pipeline}.worker",
                                         "--preload-nanny", f"{pipeline}.worker"], env=_env(),
                                        stdout=log, stderr=subprocess.STDOUT, cwd=folder)
        import dask.distributed
        with dask.distributed.Client(self.address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)

    def worker_pids(self):
        return [p.pid for p in _descendants(self.workers.pid) if "spawn_main" in _cmdline(p)]

    def bytes_sent(self) -> int:
        import dask.distributed
        with dask.distributed.Client(self.address, timeout=60) as client:
            return sum(client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total).values())

    def close(self):
        """Stops the cluster and waits until every one of its processes is gone: a worker still exiting would take
        CPU from the next run."""
        import psutil
        processes = [psutil.Process(process.pid) for process in (self.workers, self.scheduler)
                     if process.poll() is None]
        processes += [child for process in processes for child in process.children(recursive=True)]
        for process in (self.workers, self.scheduler):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        _, alive = psutil.wait_procs(processes, timeout=30)
        for process in alive:
            process.kill()
        psutil.wait_procs(alive, timeout=10)


def _run(argv, runner: str, output: pathlib.Path, tmp: pathlib.Path) -> dict:
    """One run of the command; its wall seconds, CPU seconds of every process, worker peaks and bytes sent."""
    extra = {"direct-1": ["--runner=DirectRunner"],
             "direct-2": ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"],
             "local-2": ["--local_workers=2"]}.get(runner, [])
    cluster = _ShellCluster(tmp, argv[0]) if runner == "dask-2" else None
    try:
        if cluster is not None:
            extra = ["--runner=DaskRunner", f"--dask_client_address={cluster.address}"]
            sent_before = cluster.bytes_sent()
        command = [sys.executable, "-m", *argv, *extra, f"--output={output}", "--overwrite"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        process = subprocess.Popen(command, env=_env(), cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        if cluster is not None:
            cluster_pids = [cluster.scheduler.pid] + cluster.worker_pids()
            sampler = _Sampler(lambda: cluster_pids[1:], lambda: cluster_pids)
        elif runner == "direct-1":
            sampler = _Sampler(lambda: [process.pid], lambda: [process.pid])
        elif runner == "direct-2":  # SDK worker processes (reaped by the command: its rusage counts them)

            def workers():  # python processes only (not the shells that start SDK workers)
                return [p.pid for p in _descendants(process.pid)
                        if "sdk_worker_main" in _cmdline(p) and "python" in _cmdline(p).split(" ", 1)[0]]
            sampler = _Sampler(workers, workers)
        else:  # local-2: worker processes forked by the cluster's fork server (or spawned where there is none)

            def workers():
                return [p.pid for p in _descendants(process.pid) if _is_local_worker(p)]

            def watched():  # the fork server and its workers are not reaped by the command: sampled, with it
                return [process.pid] + [p.pid for p in _descendants(process.pid)]
            sampler = _Sampler(workers, watched)
        cpu_before = dict(sampler.cpu)
        if cluster is not None:  # the cluster's processes were running before the clock: count what they add
            import psutil
            cpu_before = {pid: sum(psutil.Process(pid).cpu_times()[:2]) for pid in cluster_pids}
        sampler.start()
        _, stderr = process.communicate()
        seconds = time.perf_counter() - started
        sampler.stop()
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)  # the command and its children
        if runner == "local-2":  # the last samples of the command and every process under it (0.1 s apart)
            cpu = sum(sampler.cpu.values())
        if cluster is not None:
            cpu += sum(sampler.cpu.get(pid, 0.0) - cpu_before.get(pid, 0.0) for pid in cluster_pids)
        sent = cluster.bytes_sent() - sent_before if cluster is not None else None
    finally:
        if cluster is not None:
            cluster.close()
    return {"seconds": seconds, "cpu": cpu, "peaks_mib": sorted(p / 2**20 for p in sampler.peaks.values()),
            "sent": sent, "digest": _digest(output)}


def _digest(output: pathlib.Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(output.rglob("*")):
        if path.is_file() and path.suffix in (".parquet", ".tsv"):
            digest.update(str(path.relative_to(output)).encode() + path.read_bytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------- main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", default=",".join(INPUTS))
    parser.add_argument("--runners", default=",".join(RUNNERS))
    parser.add_argument("--rounds", type=int, default=2)
    # Sizes at which each run's fixed cost (the "fixed" column: the same command on a 0.3 MB input; start-up,
    # a local cluster's start and stop, the output's finalization) is about 10% of a two-worker run on 2 cores; at
    # 100 MB it was 20-25% of a --local_workers 2 run.
    parser.add_argument("--corpus_mb", type=float, default=200)
    parser.add_argument("--xml_mb", type=float, default=250)
    parser.add_argument("--augment_rows", type=int, default=200, help="sentences (200 distinct, then copies)")
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        raise SystemExit(f"this benchmark reads the real data in {SHARED}; it is not on this machine")
    runners, names = args.runners.split(","), args.inputs.split(",")
    flags = subprocess.run("grep -o -w 'avx512_bf16\\|amx_bf16' /proc/cpuinfo | sort -u", shell=True,
                           capture_output=True, text=True).stdout.split()
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 "?")
    print(f"machine: {os.cpu_count()} cores, {model}, flags: {' '.join(flags) or 'no avx512_bf16/amx_bf16'}")
    print(f"load before: {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        inputs = _inputs(tmp, names, args)
        tiny_inputs = _inputs(tmp / "tiny", names, args, tiny=True)
        fixed = {}
        for name in names:
            for runner in runners:
                fixed[(name, runner)] = _run(tiny_inputs[name][0], runner, tmp / "tiny" / f"out-{name}-{runner}",
                                             tmp)["seconds"]
                print(f"  fixed cost {name} {runner}: {fixed[(name, runner)]:.1f} s", flush=True)
        runs = {}
        for round_number in range(args.rounds):
            for name in names:
                command, _ = inputs[name]
                for runner in runners:
                    output = tmp / f"out-{name}-{runner}"
                    result = _run(command, runner, output, tmp)
                    runs.setdefault((name, runner), []).append(result)
                    print(f"  round {round_number + 1} {name} {runner}: {result['seconds']:.1f} s", flush=True)
        print(f"load after: {os.getloadavg()[0]:.2f}\n")
        _print_table(names, runners, inputs, runs, fixed)


def _print_table(names, runners, inputs, runs, fixed) -> None:
    print(f"{'input':12} {'MB':>5} {'runner':9} {'wall s':>7} {'fixed s':>7} {'fixed %':>7} {'speed-up':>8} "
          f"{'efficiency':>10} {'CPU s/MB':>8} {'peak RSS/worker MiB':>20} {'shuffle MB/MB':>13} {'outputs':>8}")
    for name in names:
        megabytes = inputs[name][1]
        base = statistics.median(r["seconds"] for r in runs[(name, runners[0])])
        digests = {r["digest"] for runner in runners for r in runs[(name, runner)]}
        for runner in runners:
            results = runs[(name, runner)]
            seconds = statistics.median(r["seconds"] for r in results)
            workers = 1 if runner.endswith("-1") else 2
            speedup = base / seconds
            cpu = statistics.median(r["cpu"] for r in results) / megabytes
            peaks = " / ".join(f"{p:.0f}" for p in max((r["peaks_mib"] for r in results), key=len))
            sent = [r["sent"] for r in results if r["sent"] is not None]
            shuffle = f"{statistics.median(sent) / 1e6 / megabytes:.2f}" if sent else "-"
            print(f"{name:12} {megabytes:5.1f} {runner:9} {seconds:7.1f} {fixed[(name, runner)]:7.1f} "
                  f"{100 * fixed[(name, runner)] / seconds:6.0f}% {speedup:7.2f}x {speedup / workers:10.2f} "
                  f"{cpu:8.2f} {peaks:>20} {shuffle:>13} {'same' if len(digests) == 1 else 'DIFFER':>8}")
    print(f"\nspeed-up: against {runners[0]} on the same input (medians of the rounds); fixed: the same command on "
          f"a {TINY_MB} MB input ({TINY_ROWS} sentences for augment), once")


if __name__ == "__main__":
    main()
