#!/usr/bin/env bash
# The multi-seed run behind docs/results/cifar10_cpu/seeds/: experiment=cifar10_cpu on the 45,000 shared
# CIFAR-10 JPEGs, ROAR's mean fill, one base model (seed 0) and every cell retrained with seeds 0, 1 and 2
# at 10, 50 and 90 %, then at 30 and 70 % in the same cache (the second step reuses every cell of the first).
# Usage: docs/results/cifar10_cpu/seeds.sh IMAGES_DIR OUT_DIR   (IMAGES_DIR holds train/ and test/)
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
images=${1:?IMAGES_DIR} out=${2:?OUT_DIR}
roar=${ROAR:-.venv/bin/roar}
common=(experiment=cifar10_cpu dataset=imagefolder "dataset.root=$images" dataset.num_classes=10
        dataset.image_size=32 "paths.cache_dir=$out/cache" "seeds=[0,1,2]" logger=csv)
mkdir -p "$out"
for step in seeds3 seeds5; do
    case $step in
        seeds3) extra=("roar.fractions=[0.1,0.5,0.9]") ;;
        seeds5) extra=("roar.fractions=[0.1,0.3,0.5,0.7,0.9]") ;;
    esac
    timed "$out" "$step" "$roar" "${common[@]}" "${extra[@]}" "hydra.run.dir=$out/$step"
done
