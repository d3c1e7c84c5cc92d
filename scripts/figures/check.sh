#!/usr/bin/env bash
# make figures-check: regenerates every figure family (all.sh) into a fresh temporary directory and compares
# the summaries' numbers with the committed ones in docs/ (compare.py says how, and why that tolerance).
# Fails, naming each difference, when one differs; the temporary directory is then kept for a look.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
FIGURES_WORK="$tmp/work" "$repo/scripts/figures/all.sh" "$tmp/figures"
if (cd "$repo" && .venv/bin/python -m scripts.figures.compare docs "$tmp/figures"); then
  rm -rf "$tmp"
else
  echo "figures-check: the regenerated figures and their runs are in $tmp"
  exit 1
fi
