#!/usr/bin/env bash
# Regenerates the figures under docs/ with real runs (the README's Evaluation section shows them).
# Usage: docs/figures.sh [work directory]  (default: a fresh temporary one; the runs share its cache)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
roar=("$repo/.venv/bin/roar" logger=none "paths.cache_dir=$work/cache")
cd "$work"

run() {  # run <name> <overrides...>: one run into $work/<name>, its curve and summary copied to docs/
  local name=$1; shift
  "${roar[@]}" "hydra.run.dir=$work/$name" "$@"
  cp "$work/$name"/*_curve.png "$repo/docs/$name.png"
  cp "$work/$name/summary.md" "$repo/docs/$name.summary.md"
}

run roar_digits_mean experiment=digits seeds=[0,1,2]
run roar_digits_road experiment=digits seeds=[0,1,2] roar.fill=road
run kar_digits experiment=digits roar.mode=kar
run leakage_digits experiment=digits task=leakage
run perturbation_digits experiment=digits task=perturbation "task.fractions=[0.03,0.1,0.2,0.3,0.5]"
run randomization_digits experiment=digits task=randomization \
  "method=[fullgrad,input_gradient,integrated_gradients,smoothgrad,gradcam,random,sobel]"
run roar_synthetic dataset=synthetic method=[oracle,fullgrad,random] "roar.fractions=[0.05,0.140625,0.3]" \
  trainer.max_epochs=6
