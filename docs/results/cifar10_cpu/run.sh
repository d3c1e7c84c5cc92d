#!/usr/bin/env bash
# The run behind docs/results/cifar10_cpu/: experiment=cifar10_cpu on the 45,000 shared CIFAR-10 JPEGs, with
# ROAR's mean fill, then ROAD's imputation, then the leakage diagnostic of the same masks. The three share one
# stage cache, so the base model and the saliency maps are computed once. The leakage diagnostic trains on
# the masks of the middle fraction only (4 trainings instead of 20), to fit the run into one session.
# Usage: docs/results/cifar10_cpu/run.sh IMAGES_DIR OUT_DIR   (IMAGES_DIR holds train/ and test/)
set -euo pipefail
images=${1:?IMAGES_DIR} out=${2:?OUT_DIR}
roar=${ROAR:-.venv/bin/roar}
common=(experiment=cifar10_cpu dataset=imagefolder "dataset.root=$images" dataset.num_classes=10
        dataset.image_size=32 "paths.cache_dir=$out/cache")
mkdir -p "$out"
for step in mean road leakage; do
    case $step in
        mean) extra=() ;;
        road) extra=(roar.fill=road) ;;
        leakage) extra=(task=leakage "roar.fractions=[0.5]") ;;
    esac
    echo "== $step: start $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/timing.txt"
    start=$(date +%s)
    "$roar" "${common[@]}" "${extra[@]}" "hydra.run.dir=$out/$step" > "$out/$step.log" 2>&1
    echo "== $step: $(( $(date +%s) - start )) s, end load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/timing.txt"
done
