#!/usr/bin/env bash
# Reproduces the RUM table of docs/results.md: MP (pop), BPR-MF, FPMC, RUM(I), RUM(F) under the
# user-ratio protocol (per user: first 70% of events train, users with >= 10 events) on
# movielens-small and taobao-head, with RUM's per-user metrics (P/R/F1/HR/NDCG@5), and
# the MERGE weight sweep α = 0..1 (paper Fig. 3) on movielens-small.
# Usage: experiments/rum_experiments.sh [table|sweep|report ...]   (default: table sweep report)
# Environment: EPOCHS (default 10), SEED (default 7), SHARED (default ../shared/data),
# MODELS, DATASETS, ALPHAS, TRAIN_ARGS (the same for every neural model), RUNS (default
# runs/rum; e.g. SEED=8 RUNS=runs/rum-seed8 for a repeat with another seed).
# taobao-head is the head of the file, so items are rarely repeated: it is prepared
# with --min-item-support 2 (as in experiments/hrnn_experiments.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
NC="nice -n 10 .venv/bin/nextclick"
SHARED=${SHARED:-../shared/data}
EPOCHS=${EPOCHS:-10}
SEED=${SEED:-7}
MODELS=${MODELS:-"pop bpr fpmc rum-item rum-feature"}
DATASETS=${DATASETS:-"movielens taobao"}
ALPHAS=${ALPHAS:-"0 0.2 0.4 0.6 0.8 1"}
RUNS=${RUNS:-runs/rum}
TRAIN_ARGS=${TRAIN_ARGS:-"--set batch_size=32 --set bptt=10 --set learning_rate=0.01"}
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(table sweep report)

prepare() {
  case "$1" in
    movielens)
      $NC prepare --format movielens --input "$SHARED/movielens-small/ratings.csv" \
        --protocol user-ratio --out data/rum-movielens ;;
    taobao)
      $NC prepare --format taobao --input "$SHARED/taobao-head/UserBehavior.csv" \
        --protocol user-ratio --min-item-support 2 --out data/rum-taobao ;;
    *) echo "unknown dataset $1" >&2; exit 2 ;;
  esac
}

# train (early stopping on valid recall@5) and evaluate one run: train_eval DS MODEL RUN [ARGS]
train_eval() {
  local ds=$1 model=$2 run=$3; shift 3
  local extra=()
  [ "$model" = pop ] || extra=($TRAIN_ARGS "$@")
  [ -f "$run/checkpoint.pt" ] || $NC train --model "$model" --data "data/rum-$ds" --out "$run" \
    --epochs "$EPOCHS" --seed "$SEED" --metric recall@5 --threads 1 --quiet "${extra[@]}"
  [ -f "$run/metrics.json" ] || $NC evaluate --run "$run" --ks 5,10,20 --device cpu
}

for step in "${steps[@]}"; do
  case "$step" in
    table)
      for ds in $DATASETS; do
        [ -f "data/rum-$ds/stats.json" ] || prepare "$ds"
        for model in $MODELS; do train_eval "$ds" "$model" "$RUNS/$ds/$model"; done
      done ;;
    sweep)
      [ -f data/rum-movielens/stats.json ] || prepare movielens
      for model in rum-item rum-feature; do
        for alpha in $ALPHAS; do
          train_eval movielens "$model" "$RUNS/sweep/$model-alpha$alpha" --set "alpha=$alpha"
        done
      done ;;
    report)
      .venv/bin/python experiments/rum_report.py --runs "$RUNS" --alphas "$ALPHAS" \
        --plot docs/results/rum_alpha_sweep.png ;;
    *) echo "unknown step $step (table, sweep, report)" >&2; exit 2 ;;
  esac
done
