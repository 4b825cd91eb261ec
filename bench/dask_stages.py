"""Where a Dask run's time goes, stage by stage: the task stream of one corpus (or augment) run, summed per Beam step.

Usage:
  python -m bench.dask_stages --address tcp://127.0.0.1:8786 -- --input big.txt --input_format text \
      --tokenizer TOKENIZER_DIR --output /tmp/out --max_seq_len 128 --epochs 1
  python -m bench.dask_stages --workers 2 --pipeline augment -- --input ... (a LocalCluster of 2 single-threaded
      worker processes, started and stopped here)

Prints, per step (the Beam label of the dask task, with a shuffle's cut and pieces under the step's name): tasks,
compute seconds and transfer seconds; then the totals, the run's wall time, the workers' CPU seconds and the
bytes the workers sent each other. The run goes through the pipeline's own `run()`, on the cluster given.
"""

import argparse
import collections
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _stage(key) -> str:
    """The Beam label of a task key: (f"{label}-{run id}", index...) -> label, without a shuffle's /cut or /piece."""
    name = key[0] if isinstance(key, tuple) else str(key)
    label = name.rsplit("-", 1)[0] if "-" in name else name
    for suffix in ("/cut", "/piece", "/whole"):
        label = label.replace(suffix, "")
    return label


def profile(client, pipeline: str, argv):
    import dask.distributed as ddist
    from pipelines import augment, corpus
    run = {"corpus": corpus.run, "augment": augment.run}[pipeline]
    cpu_before = client.run(_cpu_seconds)
    sent_before = client.run(_bytes_sent)
    started = time.perf_counter()
    with ddist.get_task_stream(client) as stream:
        run(list(argv) + ["--runner=DaskRunner", f"--dask_client_address={client.scheduler.address}"])
    wall = time.perf_counter() - started
    cpu_after = client.run(_cpu_seconds)
    sent = sum(client.run(_bytes_sent).values()) - sum(sent_before.values())
    per = collections.defaultdict(lambda: collections.Counter())
    for record in stream.data:
        stage = _stage(record["key"])
        per[stage]["tasks"] += 1
        for step in record["startstops"]:
            per[stage][step["action"]] += step["stop"] - step["start"]
    print(f"{'step':60s} {'tasks':>5s} {'compute s':>9s} {'transfer s':>10s}")
    totals = collections.Counter()
    for stage, numbers in sorted(per.items(), key=lambda kv: -kv[1]["compute"] - kv[1]["transfer"]):
        totals.update(numbers)
        print(f"{stage[:60]:60s} {numbers['tasks']:5d} {numbers['compute']:9.2f} {numbers['transfer']:10.2f}")
    print(f"{'total':60s} {totals['tasks']:5d} {totals['compute']:9.2f} {totals['transfer']:10.2f}")
    cpu = {worker: cpu_after[worker] - cpu_before.get(worker, 0.0) for worker in cpu_after}
    print(f"wall {wall:.1f} s; worker CPU s: " + ", ".join(f"{seconds:.1f}" for seconds in cpu.values())
          + f"; bytes sent between workers: {sent / 1e6:.1f} MB")
    return per


def _bytes_sent(dask_worker) -> int:
    return dask_worker.transfer_outgoing_bytes_total


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="a running scheduler (else a LocalCluster of --workers)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pipeline", choices=("corpus", "augment"), default="corpus")
    args = parser.parse_args(argv)
    import dask.distributed as ddist
    if args.address:
        with ddist.Client(args.address) as client:
            profile(client, args.pipeline, rest)
        return
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    with ddist.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                            dashboard_address=None) as cluster, ddist.Client(cluster) as client:
        profile(client, args.pipeline, rest)


if __name__ == "__main__":
    main()
