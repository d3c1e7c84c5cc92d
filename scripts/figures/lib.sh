# Sourced by the figure scripts: where their runs and outputs go, the roar command, and figure().
# Usage of every script: scripts/figures/<family>.sh [OUT]  (OUT: where the figures go, default docs/)
# FIGURES_WORK names the directory of the runs and their shared stage cache (default: a fresh temporary
# one); `make figures` gives every family the same one, so the agreement runs reuse the digits cells.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$repo/docs}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=${FIGURES_WORK:-$(mktemp -d)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
# The committed figures were made with two threads. roar keys its CPU stages by the thread count, and
# one thread trains to other weights (the digits base model's FullGrad perturbation AUC is 0.4126 with one
# thread, 0.4174 with two to eight): pinning it makes the figures independent of the machine's core count.
export OMP_NUM_THREADS=2
roar=("$repo/.venv/bin/roar" logger=none "paths.cache_dir=$work/cache")

figure() {  # figure <name> <overrides...>: one run into $work/<name>; its curve and summary.md to $out
  local name=$1; shift
  "${roar[@]}" "hydra.run.dir=$work/$name" "$@"
  cp "$work/$name"/*_curve.png "$out/$name.png"
  cp "$work/$name/summary.md" "$out/$name.summary.md"
}
