#!/usr/bin/env bash
# Runs every protocol of the agreement report on one base model (experiment=digits_agreement), then
# `roar-report --agreement` over the runs; docs/agreement_digits.png and .md are its figure and report
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
run perturbation task=perturbation "task.fractions=[0.03,0.1,0.2,0.3,0.5]"
# MoRF deletion and insertion runs (task=perturbation with task.order / task.mode) go here.
# Model-randomisation runs (task=randomization) go here.

"$repo/.venv/bin/roar-report" --agreement "${runs[@]}" --out "$work/agreement"
cp "$work/agreement/agreement.png" "$repo/docs/agreement_digits.png"
cp "$work/agreement/agreement.md" "$repo/docs/agreement_digits.md"
