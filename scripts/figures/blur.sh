#!/usr/bin/env bash
# Regenerates the blur control on digits (docs/evaluation.md, "Blur control"): FullGrad's maps at
# blur_sigma 0 and 1 pixel beside random, under pixel perturbation (LeRF and MoRF deletion and SRG, with the
# logit change and with the probability) and under ROAR with ROAD's fill; one seed. Writes
# blur_digits.summary.md (one table of every run's AUCs, scripts/figures/blur_table.py). Usage and
# FIGURES_WORK: scripts/figures/lib.sh.
source "$(dirname "$0")/lib.sh"

perturbation=(experiment=digits task=perturbation "task.order=[lerf,morf]" "task.fractions=[0.03,0.1,0.2,0.3,0.5]"
  "method=[fullgrad,random]")
for sigma in 0 1; do
  for metric in logit_change probability; do
    "${roar[@]}" "hydra.run.dir=$work/blur/perturbation_${metric}_sigma$sigma" "${perturbation[@]}" \
      task.metric=$metric method.fullgrad.blur_sigma=$sigma
  done
  "${roar[@]}" "hydra.run.dir=$work/blur/roar_road_sigma$sigma" experiment=digits roar.fill=road \
    "method=[fullgrad,random]" method.fullgrad.blur_sigma=$sigma
done
"$repo/.venv/bin/python" -m scripts.figures.blur_table "$work/blur" > "$out/blur_digits.summary.md"
