#!/usr/bin/env bash
# The run behind docs/results/cifar10_cpu/: experiment=cifar10_cpu on the 45,000 shared CIFAR-10 JPEGs with
# ROAR's mean fill (the whole grid), then ROAD's imputation, then the leakage diagnostic of the same masks.
# The three share one stage cache, so the base model and the saliency maps are computed once and the masks
# are the same. To fit into one working session on 2 cores, the ROAD grid first ran three of the five
# fractions and the leakage diagnostic the middle one (4 trainings); the ROAD grid's 30 and 70 % cells ran
# the next day (road37) and merge_road.py joins the two into road/.
# Usage: docs/results/cifar10_cpu/run.sh IMAGES_DIR OUT_DIR   (IMAGES_DIR holds train/ and test/)
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
images=${1:?IMAGES_DIR} out=${2:?OUT_DIR}
roar=${ROAR:-.venv/bin/roar}
common=(experiment=cifar10_cpu dataset=imagefolder "dataset.root=$images" dataset.num_classes=10
        dataset.image_size=32 "paths.cache_dir=$out/cache")
mkdir -p "$out"
for step in mean road leakage road37; do
    case $step in
        mean) extra=() ;;
        road) extra=(roar.fill=road "roar.fractions=[0.1,0.5,0.9]") ;;
        leakage) extra=(task=leakage "roar.fractions=[0.5]") ;;
        road37) extra=(roar.fill=road "roar.fractions=[0.3,0.7]") ;;
    esac
    timed "$out" "$step" "$roar" "${common[@]}" "${extra[@]}" "hydra.run.dir=$out/$step"
done
"${ROAR_PYTHON:-.venv/bin/python}" "$(dirname "$0")/merge_road.py" "$out/road" "$out/road37" "$out/road_all"
