#!/usr/bin/env bash
# The run behind docs/results/cifar10_agreement/: every protocol on experiment=cifar10_cpu's base model (the
# shared CIFAR-10 JPEGs), then `roar-report --agreement` over their runs: ROAR with the mean fill (the
# multi-seed run of docs/results/cifar10_cpu/seeds.sh, given as SEEDS_RUN) and with ROAD's imputation, KAR,
# mask leakage, pixel perturbation (LeRF and MoRF deletion, MoRF insertion, SRG), cascading model
# randomisation and F-Fidelity. One stage cache (CACHE_DIR, the seeds run's): one base model, one set of maps.
# The retraining protocols (ROAD's fill, KAR, leakage) at the seeds run's 10, 50 and 90 %, one seed, so that
# the whole run fits a morning on 2 CPU cores; the protocols that do not retrain come first.
# Usage: docs/results/cifar10_agreement/run.sh IMAGES_DIR OUT_DIR CACHE_DIR SEEDS_RUN
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
images=${1:?IMAGES_DIR} out=${2:?OUT_DIR} cache=${3:?CACHE_DIR} seeds_run=${4:?SEEDS_RUN}
roar=${ROAR:-.venv/bin/roar} report=${ROAR_REPORT:-.venv/bin/roar-report}
common=(experiment=cifar10_cpu dataset=imagefolder "dataset.root=$images" dataset.num_classes=10
        dataset.image_size=32 "paths.cache_dir=$cache" "roar.fractions=[0.1,0.5,0.9]" logger=csv)
mkdir -p "$out"
runs=("$seeds_run")
protocol() {  # protocol <name> <overrides...>
    local name=$1
    shift
    timed "$out" "$name" "$roar" "${common[@]}" "$@" "hydra.run.dir=$out/$name"
    runs+=("$out/$name")
}
protocol perturbation_lerf task=perturbation
protocol perturbation_morf task=perturbation task.order=morf
protocol insertion_morf task=perturbation task.order=morf task.mode=insertion task.metric=probability
protocol srg task=perturbation "task.order=[lerf,morf]"
protocol randomization task=randomization
protocol fidelity task=fidelity
protocol leakage task=leakage
protocol roar_road roar.fill=road
protocol kar_mean roar.mode=kar
"$report" --agreement "${runs[@]}" --out "$out/report" > "$out/report.log" 2>&1
