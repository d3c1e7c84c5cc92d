#!/usr/bin/env bash
# Regenerates the agreement report (docs/evaluation.md, "Agreement between protocols"): every protocol on
# one base model (experiment=digits_agreement: ROAR and KAR, mean and ROAD fills, mask leakage, pixel
# perturbation LeRF and MoRF deletion, MoRF insertion, SRG, cascading model randomisation), then
# `roar-report --agreement` over the nine runs: agreement_digits.png and agreement_digits.md.
# Usage and FIGURES_WORK: scripts/figures/lib.sh.
source "$(dirname "$0")/lib.sh"
mkdir -p "$work/agreement"
cd "$work/agreement"  # the report names each run by the directory it is given: roar_mean, ...
runs=()

protocol() {  # protocol <name> <overrides...>: one protocol's run into $work/agreement/<name>
  local name=$1; shift
  "${roar[@]}" experiment=digits_agreement "hydra.run.dir=$work/agreement/$name" "$@"
  runs+=("$name")
}

protocol roar_mean
protocol roar_road roar.fill=road
protocol kar_mean roar.mode=kar
protocol leakage task=leakage
fractions="task.fractions=[0.03,0.1,0.2,0.3,0.5]"
protocol perturbation_lerf task=perturbation "$fractions"
protocol perturbation_morf task=perturbation "$fractions" task.order=morf
protocol insertion_morf task=perturbation "$fractions" task.order=morf task.mode=insertion \
  task.metric=probability
protocol srg task=perturbation "$fractions" "task.order=[lerf,morf]"
protocol randomization task=randomization

"$repo/.venv/bin/roar-report" --agreement "${runs[@]}" --out "$work/agreement/report"
cp "$work/agreement/report/agreement.png" "$out/agreement_digits.png"
cp "$work/agreement/report/agreement.md" "$out/agreement_digits.md"
