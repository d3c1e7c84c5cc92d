"""What a run does (`task=...`): each task is `run(cfg) -> run directory`, built from roar.stages."""
