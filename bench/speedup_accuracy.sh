#!/usr/bin/env bash
# Issue 12's accuracy runs for one trained checkpoint (see bench/speedup_accuracy.py):
# per seed, the 2x rows on ONNX Runtime, then the MACs-budgeted rows at the MACs the
# per-group 2x network kept (F, read from the first run). Resumable: bench/peers.py skips
# finished methods.
#
# Usage: bench/speedup_accuracy.sh CHECKPOINT OUT_PREFIX "SEEDS" [peers.py options...]
#   e.g. bench/speedup_accuracy.sh runs/baselines/resnet56-cifar10 runs/peers/r56-2x-ort "0 1" \
#        --train-subset 10000 --finetune-epochs 1 --trials 40
set -euo pipefail
checkpoint=$1 prefix=$2 seeds=$3
shift 3
py=${PYTHON:-.venv/bin/python}
common=(--checkpoint "$checkpoint" --data-dir ../shared/data/cifar10-jpg.tar.gz --threads 1
        --latency-runtime onnxruntime "$@")
for s in $seeds; do
  "$py" bench/peers.py "${common[@]}" --seed "$s" --budget 1 \
      --methods nas:bayes@2x,nas:bayes@2x@blocks --out "$prefix-s$s" --quiet
  f=$("$py" -c 'import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
print("%.4f" % next(r["macs_fraction"] for r in rows
                   if r["method"] == "nas:bayes@2x" and r["status"] == "ok"))' \
      "$prefix-s$s/peers.json")
  "$py" bench/peers.py "${common[@]}" --seed "$s" --budget "$f" \
      --methods nas:bayes,tp-global --out "$prefix-s$s-macs" --quiet
done
"$py" bench/speedup_accuracy.py $(for s in $seeds; do echo "$prefix-s$s"; done)
