#!/bin/bash
# The corpus on 1 and 2 workers of every engine, whole commands taken in turn without bench.scale's samplers.
#
# usage: bash bench/scale_pair.sh INPUT FORMAT TOKENIZER_DIR [ROUNDS] [extra pipelines.corpus flags]
#   e.g. bash bench/scale_pair.sh /data/short-50mb.txt text /data/tokenizer 4
# Each round: direct-1 (DirectRunner), direct-2 (--direct_num_workers=2 --direct_running_mode=multi_processing),
# a Dask cluster started from the shell as docs/scaling.md starts one (dask scheduler + dask worker --nworkers 2
# --nthreads 1, with the preloads; fresh each round, started before the clock) for its first and its second run, and
# --local_workers 2 (its cluster inside the clock).
# Prints wall seconds and speed-ups over direct-1 per round, then whether every engine wrote direct-1's Parquet bytes.
# Run from the repository root, with the project importable by $PYTHON (default: python).
set -euo pipefail
IN=$1; FMT=$2; TOK=$3; ROUNDS=${4:-2}; shift $(( $# < 4 ? $# : 4 ))
PY=${PYTHON:-python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export HF_HUB_OFFLINE=1
common=(--input "$IN" --input_format "$FMT" --tokenizer "$TOK" --max_seq_len 128 --epochs 1 --quiet --overwrite "$@")
timed() { local s; s=$(date +%s.%N); "$@" >"$WORK/last.log" 2>&1 || { echo "failed: $*" >&2; tail -3 "$WORK/last.log" >&2; exit 1; }
          echo "$(date +%s.%N) - $s" | bc; }
ratio() { echo "$1 / $2" | bc -l | cut -c1-4; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), flags: $(grep -o -m2 -w -E 'avx512_bf16|amx_bf16' /proc/cpuinfo | sort -u | xargs); load before: $(cut -d' ' -f1 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
  d1=$(timed "$PY" -m pipelines.corpus "${common[@]}" --output "$WORK/direct-1")
  d2=$(timed "$PY" -m pipelines.corpus "${common[@]}" --output "$WORK/direct-2" --direct_num_workers=2 \
       --direct_running_mode=multi_processing)
  "$PY" -m distributed.cli.dask_scheduler --host 127.0.0.1 --port 0 --no-dashboard \
      --scheduler-file "$WORK/scheduler.json" --preload pipelines.dask_worker >"$WORK/scheduler.log" 2>&1 & scheduler=$!
  for _ in $(seq 120); do [ -s "$WORK/scheduler.json" ] && break; sleep 0.5; done
  address=$("$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))['address'])" "$WORK/scheduler.json")
  "$PY" -m distributed.cli.dask_worker "$address" --nworkers 2 --nthreads 1 --no-dashboard \
      --preload pipelines.corpus.worker --preload-nanny pipelines.corpus.worker >"$WORK/workers.log" 2>&1 &
  workers=$!
  "$PY" -c "import dask.distributed as d, sys; d.Client(sys.argv[1], timeout=60).wait_for_workers(2, timeout=120)" "$address"
  k1=$(timed "$PY" -m pipelines.corpus "${common[@]}" --output "$WORK/dask" --runner=DaskRunner --dask_client_address="$address")
  k2=$(timed "$PY" -m pipelines.corpus "${common[@]}" --output "$WORK/dask" --runner=DaskRunner --dask_client_address="$address")
  kill "$workers"; sleep 1; kill "$scheduler"; wait "$workers" "$scheduler" 2>/dev/null || true
  rm -f "$WORK/scheduler.json"
  l2=$(timed "$PY" -m pipelines.corpus "${common[@]}" --output "$WORK/local-2" --local_workers 2)
  echo "round $round: direct-1 ${d1} s | direct-2 ${d2} s = $(ratio "$d1" "$d2")x | dask first run ${k1} s = $(ratio "$d1" "$k1")x | dask second run ${k2} s = $(ratio "$d1" "$k2")x | local-2 ${l2} s = $(ratio "$d1" "$l2")x"
done
digest() { (cd "$1" && find . -name '*.parquet' | sort | xargs cat | sha256sum); }
for out in direct-2 dask local-2; do
  [ "$(digest "$WORK/direct-1")" = "$(digest "$WORK/$out")" ] && echo "$out: Parquet identical to direct-1" || echo "$out: Parquet DIFFERS"
done
