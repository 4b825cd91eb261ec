"""The candidate store: a second run that computes nothing, and a run killed halfway that loses nothing.

Usage:
  python bench/store.py                      # BERT-base-shaped model, the 200 polarity-200 sentences
  python bench/store.py --dask               # also on a Dask cluster started from the shell, a worker killed
  python bench/store.py --smoke              # seconds: a tiny model on 16 sentences, to check the script runs

Every run is `python -m pipelines.augment` in a subprocess of its own (as a user runs it), on the same input and
model (a seeded random BERT-base-shaped masked LM with the real bert-base-uncased vocabulary, GloVe 6B 50d):
1. cold: an empty store; every masked-LM answer is computed (the baseline of the ratios below);
2. warm: the same store, another --seed, --num_aug and --replace_prob: no answer computed; wall time / cold;
3. killed: a new store, the run SIGKILLed once about half of the answers are in the store, then run again with
   --overwrite: the rerun's wall time / cold, its Parquet files byte for byte against the cold run's (which equal a
   run's without the store: tests/test_store.py);
4. (--dask) the cold run on a cluster of `dask scheduler` + `dask worker --nworkers 2 --nthreads 1`, a worker
   process SIGKILLed once about half of the answers are in the store: the answers written before the kill are all
   still there, the run finishes, and its Parquet files equal the DirectRunner's.
"""

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.augment import SHARED, _build_model, _write_input  # noqa: E402  (the same model and input)


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _argv(model, glove, input_path, out, store, *extra):
    return [sys.executable, "-m", "pipelines.augment", f"--model={model}", f"--glove={glove}", f"--input={input_path}",
            f"--output={out}", f"--candidate_store={store}", "--overwrite", "--quiet", *extra]


def _run(argv, log):
    start = time.perf_counter()
    with open(log, "w") as handle:
        result = subprocess.run(argv, env=_env(), stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{argv[3:]} failed:\n{pathlib.Path(log).read_text()[-3000:]}")
    out = next(arg.split("=", 1)[1] for arg in argv if arg.startswith("--output="))
    return seconds, json.loads((pathlib.Path(out) / "manifest.json").read_text())


def _answers_in(store: pathlib.Path) -> int:
    import pyarrow.parquet as pq
    total = 0
    for part in store.rglob("part-*.parquet"):
        try:
            total += pq.read_metadata(part).num_rows
        except Exception:  # noqa: BLE001 - a part being renamed right now
            pass
    return total


def _kill_halfway(argv, log, store: pathlib.Path, total: int, kill=None):
    """Starts `argv`, SIGKILLs it (or calls `kill`) once half of `total` answers are in `store`; returns the answers
    in the store at the kill and right after, and whether the run still finished (a killed Dask worker is
    replaced; a killed launcher is not)."""
    with open(log, "w") as handle:
        process = subprocess.Popen(argv, env=_env(), stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                                   start_new_session=True)
        while process.poll() is None and _answers_in(store) < total // 2:
            time.sleep(0.2)
        at_kill = _answers_in(store)
        if kill is None:
            os.killpg(process.pid, signal.SIGKILL)  # the launcher and the runner's own processes, nothing else
        else:
            kill()
        after = _answers_in(store)
        process.wait()
    return at_kill, after, process.returncode


def _parquet(out: pathlib.Path):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}


def _dask(tmp, model, glove, input_path, plain, total, figures):
    import dask.distributed
    from tests.builders import shell_dask_cluster
    folder = tmp / "dask"
    folder.mkdir()
    with shell_dask_cluster(folder, _env()) as address:
        with dask.distributed.Client(address, timeout=60) as client:
            pids = client.run(os.getpid)  # {worker address: pid}: the worker processes this script started

        def kill_one_worker():
            os.kill(sorted(pids.values())[0], signal.SIGKILL)  # its nanny starts another
        store = tmp / "store-dask"
        argv = _argv(model, glove, input_path, tmp / "dask-out", store, "--runner=DaskRunner",
                     f"--dask_client_address={address}", "--torch_threads=1")
        at_kill, after, code = _kill_halfway(argv, tmp / "dask.log", store, total, kill=kill_one_worker)
    finished = code == 0 and (tmp / "dask-out" / "_SUCCESS").exists()
    manifest = json.loads((tmp / "dask-out" / "manifest.json").read_text()) if finished else {}
    figures["dask"] = {"answers_at_kill": at_kill, "answers_after_kill": after, "finished": finished,
                       "answers_in_store_at_end": _answers_in(store),
                       "store_counts": manifest.get("counts", {}).get("store"),
                       "parquet_equal": finished and _parquet(tmp / "dask-out") == plain}
    print(f"dask, a worker killed at {at_kill}/{total} answers: {after} still in the store after the kill, "
          f"run {'finished' if finished else 'FAILED: ' + (tmp / 'dask.log').read_text()[-2000:]}; "
          f"store counts {figures['dask']['store_counts']}; Parquet equal to the DirectRunner's: "
          f"{figures['dask']['parquet_equal']}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=200, help="sentences of polarity-200 to augment")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--dask", action="store_true", help="also the killed-worker run on a Dask cluster")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--smoke", action="store_true", help="a 2-layer hidden-128 model on 16 sentences")
    args = parser.parse_args(argv)
    if args.smoke:
        args.limit, args.layers, args.hidden = 16, 2, 128
    if not SHARED.is_dir():
        raise SystemExit(f"this benchmark reads the real data in {SHARED}; it is not on this machine")
    glove = str(SHARED / "glove.6B.50d.20k.txt.gz")
    figures = {"limit": args.limit, "layers": args.layers, "hidden": args.hidden, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        model = _build_model(tmp / "bert", args.layers, args.hidden)
        input_path = tmp / "train.tsv"
        rows = _write_input(input_path, args.limit)
        from augment.mlm import describe_precisions
        figures["cpu_precisions"] = describe_precisions()
        print(f"model: {args.layers} layers, hidden {args.hidden}; {len(rows)} sentences; {os.cpu_count()} cores; "
              f"this CPU: {figures['cpu_precisions']}; load average {os.getloadavg()[0]:.1f}")

        cold_s, cold = _run(_argv(model, glove, input_path, tmp / "cold", tmp / "store"), tmp / "cold.log")
        total = cold["counts"]["store"]["answers_computed"]
        warm_s, warm = _run(_argv(model, glove, input_path, tmp / "warm", tmp / "store", "--seed=7", "--num_aug=10",
                                  "--replace_prob=0.3"), tmp / "warm.log")
        figures.update(cold_s=cold_s, answers=total, warm_s=warm_s, warm_ratio=warm_s / cold_s,
                       warm_counts=warm["counts"]["store"], store_bytes=cold["candidate_store"]["store_bytes"])
        print(f"cold: {cold_s:.1f} s, {total} answers computed, store {cold['candidate_store']['store_bytes']:,} "
              f"bytes in {cold['candidate_store']['store_files']} files")
        print(f"warm (another --seed, --num_aug, --replace_prob): {warm_s:.1f} s = {warm_s / cold_s:.3f} of cold; "
              f"{warm['counts']['store']}")

        plain = _parquet(tmp / "cold")  # equal to a run without the store (tests/test_store.py)
        at_kill, _, _ = _kill_halfway(_argv(model, glove, input_path, tmp / "killed", tmp / "store-killed"),
                                      tmp / "killed.log", tmp / "store-killed", total)
        rerun_s, rerun = _run(_argv(model, glove, input_path, tmp / "killed", tmp / "store-killed"), tmp / "rerun.log")
        equal = _parquet(tmp / "killed") == plain
        figures.update(killed_at=at_kill, rerun_s=rerun_s, rerun_ratio=rerun_s / cold_s,
                       rerun_counts=rerun["counts"]["store"], parquet_equal=equal)
        print(f"killed at {at_kill}/{total} answers; rerun with --overwrite: {rerun_s:.1f} s = {rerun_s / cold_s:.3f} "
              f"of cold; {rerun['counts']['store']}; Parquet equal to the cold run's: "
              f"{equal}")
        if args.dask:
            _dask(tmp, model, glove, input_path, plain, total, figures)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
