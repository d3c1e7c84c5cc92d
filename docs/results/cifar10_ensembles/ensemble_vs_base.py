"""Each ensemble against its base method, and SG-SQ and VarGrad against SG, from a run's per_image.pt:
AUC differences with 95 % bootstrap intervals over test images, computed by the functions behind
summary.md's intervals (roar.report.summary: image_replicates, image_interval), which compare only
neighbours in the ranking. Usage: python ensemble_vs_base.py RUN_DIR... > ensemble_vs_base.md"""

import sys
from pathlib import Path

from roar.report.results import read_per_image
from roar.report.summary import image_interval, image_replicates, scores

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
    stored = read_per_image(run / "per_image.pt")
    rows = [{"method": r["method"], "fraction": r["fraction"], "seed": r["seed"],
             "test_acc": float(r["values"].double().mean()), "per_image": r["values"]}
            for r in stored["rows"]]  # fmt: skip
    auc = {method: mean for method, (mean, _, _) in scores(rows).items()}
    replicates = image_replicates(rows)
    for method, other in pairs():
        low, high = image_interval(replicates[method], replicates[other])
        verdict = "tie" if low <= 0 <= high else ("worse" if low > 0 else "better")
        difference, interval = f"{auc[method] - auc[other]:+.4f}", f"[{low:+.4f}, {high:+.4f}]"
        print(f"| {run.name} | {method} | {other} | {difference} | {interval} | {verdict} |")
