#!/usr/bin/env bash
# Regenerates every figure family (digits.sh, synthetic.sh, agreement.sh, blur.sh) into OUT (default
# docs/), all runs sharing one work directory and stage cache. `make figures` runs it; `make figures-check` runs it
# into a temporary directory and compares the numbers (check.sh).
# Usage: scripts/figures/all.sh [OUT]  (FIGURES_WORK: the runs' directory, default a fresh temporary one)
set -euo pipefail
here=$(dirname "$0")
export FIGURES_WORK=${FIGURES_WORK:-$(mktemp -d)}
for family in digits synthetic agreement blur; do
  start=$SECONDS
  "$here/$family.sh" "$@"
  echo "figures: $family done in $((SECONDS - start)) s (runs in $FIGURES_WORK)"
done
