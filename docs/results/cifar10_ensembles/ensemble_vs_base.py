"""Each ensemble against its base method, and SG-SQ and VarGrad against SG, from a run's per_image.pt:
AUC differences with 95 % bootstrap intervals over test images, computed by the functions behind
summary.md's intervals (roar.report.summary: image_replicates, image_interval), which compare only
neighbours in the ranking. Usage: python ensemble_vs_base.py RUN_DIR... > ensemble_vs_base.md"""

import sys
from pathlib import Path

from roar.report.results import read_csv, read_per_image
from roar.report.summary import image_interval, image_replicates, scores, verdict

FAMILIES = {
    "input_gradient": ("smoothgrad", "smoothgrad_sq", "vargrad"),
    "integrated_gradients": tuple(f"integrated_gradients_{k}" for k in ("sg", "sg_sq", "var")),
    "guided_backprop": tuple(f"guided_backprop_{k}" for k in ("sg", "sg_sq", "var")),
}


def pairs():
    """(method, the one it is compared with): every ensemble with its base, then SG-SQ and Var with SG."""
    for base, (sg, sg_sq, var) in FAMILIES.items():
        yield from ((sg, base), (sg_sq, base), (var, base), (sg_sq, sg), (var, sg))


print("Lower AUC is better (more of what the task needs removed); an interval that contains 0 is a tie.\n")
print("| fill | method | compared with | AUC difference | 95 % over test images | verdict |")
print("| --- | --- | --- | ---: | --- | --- |")
for run in map(Path, sys.argv[1:]):
    # The run's results table, each row with its per-image values, as summary.md's intervals take them.
    values = {
        (r["method"], r["fraction"], r["seed"]): r["values"]
        for r in read_per_image(run / "per_image.pt")["rows"]
    }
    rows = [
        {**r, "per_image": values[r["method"], r["fraction"], r["seed"]]}
        for r in read_csv(run / "results.csv")
    ]
    auc = {method: mean for method, (mean, _, _) in scores(rows).items()}
    replicates = image_replicates(rows)
    for method, other in pairs():
        difference = auc[method] - auc[other]
        low, high = image_interval(replicates[method], replicates[other])
        word = verdict(difference, [(low, high)], lower_is_better=True, words=("better", "worse"))
        print(f"| {run.name} | {method} | {other} | {difference:+.4f} | [{low:+.4f}, {high:+.4f}] | {word} |")
