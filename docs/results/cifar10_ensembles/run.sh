#!/usr/bin/env bash
# The run behind docs/results/cifar10_ensembles/: Hooker et al.'s comparison (NeurIPS 2019) on the shared
# CIFAR-10 JPEGs with experiment=cifar10_cpu's base model: the three base methods (input gradient,
# integrated gradients, guided backpropagation) against their SmoothGrad, SmoothGrad^2 and VarGrad ensembles
# and random (method=hooker), under ROAR's mean fill and then ROAD's imputation, one seed; then the leakage
# of their removal masks at 50 % (task=leakage: a classifier trained on the masks alone).
# Sized for a day on 2 CPU cores (maps for 17,000 images per method): every ensemble takes 4 noisy samples
# (Hooker et al.'s code: 25) and integrated gradients 8 steps, alone and in its ensembles (roar's default:
# 50), and the grid has two fractions, 50 and 90 %; FRACTIONS='[0.1,0.5,0.9]' runs more on the same stage
# cache (maps are reused).
# Usage: docs/results/cifar10_ensembles/run.sh IMAGES_DIR OUT_DIR [CACHE_DIR]   (IMAGES_DIR: train/, test/)
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
images=${1:?IMAGES_DIR} out=${2:?OUT_DIR} cache=${3:-$2/cache}
roar=${ROAR:-.venv/bin/roar}
fractions=${FRACTIONS:-[0.5,0.9]}
samples=()
for method in smoothgrad smoothgrad_sq vargrad; do samples+=("method.$method.n_samples=4"); done
for method in integrated_gradients_sg integrated_gradients_sg_sq integrated_gradients_var \
              guided_backprop_sg guided_backprop_sg_sq guided_backprop_var; do
    samples+=("method.$method.noise.n_samples=4")
done
for method in integrated_gradients integrated_gradients_sg integrated_gradients_sg_sq integrated_gradients_var; do
    samples+=("method.$method.n_steps=8")
done
common=(experiment=cifar10_cpu dataset=imagefolder "dataset.root=$images" dataset.num_classes=10
        dataset.image_size=32 "paths.cache_dir=$cache" method=hooker "roar.fractions=$fractions"
        logger=csv "${samples[@]}")
mkdir -p "$out"
for step in mean road; do
    timed "$out" "$step" "$roar" "${common[@]}" "roar.fill=$step" "hydra.run.dir=$out/$step"
done
# At 50 % removed the ensembles' retrained models beat the unmodified one: do their masks alone tell the label?
timed "$out" leakage "$roar" "${common[@]}" "roar.fractions=[0.5]" task=leakage "hydra.run.dir=$out/leakage"
