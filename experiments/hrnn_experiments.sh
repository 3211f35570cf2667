#!/usr/bin/env bash
# Reproduces the HRNN comparison of docs/results.md: POP, GRU4Rec, HRNN-Init, HRNN-All under the
# last-session protocol on the synthetic data, retailrocket-users and taobao-head.
# Usage: experiments/hrnn_experiments.sh [DATASET ...]   (default: synth retailrocket taobao)
# Environment: EPOCHS (default 10), SEED (default 7), SHARED (default ../shared/data),
# MODELS, TRAIN_ARGS. taobao-head is the head of the file, so items are rarely repeated:
# it is prepared with --min-item-support 2 (5 leaves 559 items and 194 users).
set -euo pipefail
cd "$(dirname "$0")/.."
NC=.venv/bin/nextclick
SHARED=${SHARED:-../shared/data}
EPOCHS=${EPOCHS:-10}
SEED=${SEED:-7}
MODELS=${MODELS:-"pop gru4rec hrnn-init hrnn-all"}
TRAIN_ARGS=${TRAIN_ARGS:-}   # extra `nextclick train` flags, the same for every model
datasets=("$@")
[ ${#datasets[@]} -gt 0 ] || datasets=(synth retailrocket taobao)

prepare() {
  case "$1" in
    synth)
      [ -f data/synth.csv ] || $NC synth --out data/synth.csv --seed "$SEED"
      $NC prepare --format csv --input data/synth.csv --protocol last-session --out data/synth ;;
    retailrocket)
      $NC prepare --format retailrocket --input "$SHARED/retailrocket-users/retail_rocket_train.csv" \
        --test "$SHARED/retailrocket-users/retail_rocket_test.csv" --protocol given --out data/retailrocket ;;
    taobao)
      $NC prepare --format taobao --input "$SHARED/taobao-head/UserBehavior.csv" \
        --protocol last-session --min-item-support 2 --out data/taobao ;;
    *) echo "unknown dataset $1" >&2; exit 2 ;;
  esac
}

for ds in "${datasets[@]}"; do
  [ -f "data/$ds/stats.json" ] || prepare "$ds"
  runs=()
  for model in $MODELS; do
    run="runs/$ds/$model"
    [ -f "$run/checkpoint.pt" ] || $NC train --model "$model" --data "data/$ds" --out "$run" \
      --epochs "$EPOCHS" --seed "$SEED" --quiet $TRAIN_ARGS
    [ -f "$run/metrics.json" ] || $NC evaluate --run "$run"
    runs+=("$run")
  done
  .venv/bin/python -c "import sys; from pathlib import Path; from training.report import compare_runs; \
print(compare_runs([Path(p) for p in sys.argv[2:]], Path(sys.argv[1]), 'HRNN protocol: $ds'))" \
    "reports/hrnn-$ds" "${runs[@]}"
done
