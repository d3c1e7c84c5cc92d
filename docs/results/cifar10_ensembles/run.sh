#!/usr/bin/env bash
# The run behind docs/results/cifar10_ensembles/: Hooker et al.'s comparison (NeurIPS 2019) on the shared
# CIFAR-10 JPEGs with experiment=cifar10_cpu's base model: the three base methods (input gradient,
# integrated gradients, guided backpropagation) against their SmoothGrad, SmoothGrad^2 and VarGrad ensembles
# and random (method=hooker), under ROAR's mean fill and ROAD's imputation, at 10, 50 and 90 %, one seed.
# On 2 CPU cores every ensemble takes 8 noisy samples (Hooker et al.'s code: 25) and integrated gradients 16
# steps, alone and in its ensembles (roar's default: 50), so that the grid fits a working day.
# Usage: docs/results/cifar10_ensembles/run.sh IMAGES_DIR OUT_DIR [CACHE_DIR]   (IMAGES_DIR: train/, test/)
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
images=${1:?IMAGES_DIR} out=${2:?OUT_DIR} cache=${3:-$2/cache}
roar=${ROAR:-.venv/bin/roar}
samples=()
for method in smoothgrad smoothgrad_sq vargrad; do samples+=("method.$method.n_samples=8"); done
for method in integrated_gradients_sg integrated_gradients_sg_sq integrated_gradients_var \
              guided_backprop_sg guided_backprop_sg_sq guided_backprop_var; do
    samples+=("method.$method.noise.n_samples=8")
done
for method in integrated_gradients integrated_gradients_sg integrated_gradients_sg_sq integrated_gradients_var; do
    samples+=("method.$method.n_steps=16")
done
common=(experiment=cifar10_cpu dataset=imagefolder "dataset.root=$images" dataset.num_classes=10
        dataset.image_size=32 "paths.cache_dir=$cache" method=hooker "roar.fractions=[0.1,0.5,0.9]"
        logger=csv "${samples[@]}")
mkdir -p "$out"
for step in mean road; do
    timed "$out" "$step" "$roar" "${common[@]}" "roar.fill=$step" "hydra.run.dir=$out/$step"
done
