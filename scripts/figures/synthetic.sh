#!/usr/bin/env bash
# Regenerates ROAR on synthetic data with a known answer (oracle, FullGrad, random): roar_synthetic.png and
# roar_synthetic.summary.md (docs/evaluation.md, "Ground truth"). Usage and FIGURES_WORK:
# scripts/figures/lib.sh.
source "$(dirname "$0")/lib.sh"

figure roar_synthetic dataset=synthetic "method=[oracle,fullgrad,random]" "roar.fractions=[0.05,0.14,0.3]" \
  trainer.max_epochs=6
