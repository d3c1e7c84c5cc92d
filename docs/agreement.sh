#!/usr/bin/env bash
# Runs every protocol of the agreement report on one base model (experiment=digits_agreement): ROAR and KAR,
# mean and ROAD fills, mask leakage, pixel perturbation (LeRF and MoRF deletion, MoRF insertion, SRG) and
# cascading model randomisation; then `roar-report --agreement` over the runs; docs/agreement_digits.png and .md are its figure and report
# (docs/evaluation.md, "Agreement between protocols").
# Usage: docs/agreement.sh [work directory] [override ...]  (default: a fresh temporary one; the runs share
# its cache, and the overrides, e.g. logger=none, go to every run)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
shift || true
roar=("$repo/.venv/bin/roar" experiment=digits_agreement "paths.cache_dir=$work/cache" "$@")
cd "$work"
runs=()

run() {  # run <name> <overrides...>: one protocol's run into $work/<name>
  local name=$1; shift
  "${roar[@]}" "hydra.run.dir=$work/$name" "$@"
  runs+=("$name")
}

run roar_mean
run roar_road roar.fill=road
run kar_mean roar.mode=kar
run leakage task=leakage
fractions="task.fractions=[0.03,0.1,0.2,0.3,0.5]"
run perturbation_lerf task=perturbation "$fractions"
run perturbation_morf task=perturbation "$fractions" task.order=morf
run insertion_morf task=perturbation "$fractions" task.order=morf task.mode=insertion task.metric=probability
run srg task=perturbation "$fractions" "task.order=[lerf,morf]"
run randomization task=randomization

"$repo/.venv/bin/roar-report" --agreement "${runs[@]}" --out "$work/agreement"
cp "$work/agreement/agreement.png" "$repo/docs/agreement_digits.png"
cp "$work/agreement/agreement.md" "$repo/docs/agreement_digits.md"
