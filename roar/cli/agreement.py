"""`roar-report --agreement DIR ...`: the agreement between protocols run on one base model
(roar/report/agreement.py), written and sent to the first run's logger."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig

from roar import report
from roar.cli.jobs import allowed_logger, job_choices, job_config, report_logger
from roar.errors import ConfigError
from roar.report import agreement
from roar.report.naming import unique_dir


def agreement_identity(
    cfg: DictConfig, run_dir: Path, out_dir: Path, comparison: agreement.Comparison
) -> dict:
    """The agreement report's W&B run: job type `agreement`, named after its protocols, in a group of its
    own (its runs each have theirs)."""
    choices = job_choices(run_dir)
    protocols = ", ".join(p.name for p in comparison.protocols)
    return {"group": f"agreement · {choices['dataset']} · {choices['model']} ({out_dir.name})",
            "name": f"agreement: {protocols}", "job_type": "agreement"}  # fmt: skip


def agreement_main(args: argparse.Namespace) -> None:
    """`roar-report --agreement DIR ...`: roar.agreement's report over the runs, sent to the first run's
    logger (W&B: the rank and τ tables and the heat map)."""
    try:
        if args.bootstrap < 1:
            raise ConfigError(f"--bootstrap: {args.bootstrap}; give at least 1 replicate")
        comparison = agreement.compare(args.dirs, args.bootstrap, args.bootstrap_seed)
        cfg = job_config(args.dirs[0])
        allowed_logger(cfg, args.dirs[0])  # refused before anything is written
    except ConfigError as error:
        print(f"roar-report: error: {error}", file=sys.stderr)
        sys.exit(2)
    out_dir = args.out or Path(unique_dir(f"outputs/agreement_{datetime.now():%Y-%m-%d_%H-%M-%S}"))
    text = agreement.write_report(comparison, out_dir)
    logger = report_logger(
        cfg, out_dir, args.dirs[0], lambda: agreement_identity(cfg, args.dirs[0], out_dir, comparison)
    )
    if logger is not None:
        names = [p.name for p in comparison.protocols]
        logger.log_hyperparams(
            {"runs": [str(p.run_dir) for p in comparison.protocols], "protocols": names,
             "methods": ",".join(comparison.methods), "dropped": comparison.dropped,
             "bootstrap": comparison.replicates, "bootstrap_seed": comparison.seed}
        )  # fmt: skip
        pairs = comparison.pairs
        if hasattr(logger, "log_table"):
            logger.log_table("agreement", columns=list(pairs[0]), data=[list(p.values()) for p in pairs])
            logger.log_table(
                "ranks",
                columns=["method", *names],
                data=[[m, *(p.ranks[m] for p in comparison.protocols)] for m in comparison.methods],
            )
        else:
            logger.log_metrics({f"tau/{p['protocol_a']} vs {p['protocol_b']}": p["tau"] for p in pairs})
        if hasattr(logger, "log_image"):
            logger.log_image("agreement", [str(out_dir / agreement.FIGURE)])
        report.close_logger(logger)
    print(f"\n{text}\nagreement report of {len(comparison.protocols)} runs: {out_dir}")
