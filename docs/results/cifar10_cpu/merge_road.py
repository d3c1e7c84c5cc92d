"""Merge ROAR runs of one grid split by fractions into one report: merge_road.py RUN... OUT_DIR.

Here the ROAD grid's 10/50/90 % run with its 30/70 % run (docs/cifar10.md): they share the base model and the
saliency maps (bitwise equal, checked), so their unmodified rows are identical (asserted) and kept once.
`roar-report` refuses to merge them because their configurations differ in keys the code added between
the two runs (dataset.channels)."""

import sys
from pathlib import Path

from omegaconf import OmegaConf

from roar import report
from roar.tasks.roar import outputs

runs = [Path(p) for p in sys.argv[1:-1]]
out = Path(sys.argv[-1])
out.mkdir(parents=True, exist_ok=True)
rows = {}
for run in runs:
    for row in report.read_csv(run / "results.csv"):
        key = (row["method"], row["fraction"], row["seed"])
        if key in rows:
            assert rows[key]["test_acc"] == row["test_acc"], key  # the shared unmodified cell
        rows[key] = row
cfg = OmegaConf.load(runs[0] / ".hydra" / "config.yaml")
merged = sorted(rows.values(), key=lambda r: (r["method"], r["fraction"], r["seed"]))
report.publish(merged, out, outputs=outputs(cfg))
