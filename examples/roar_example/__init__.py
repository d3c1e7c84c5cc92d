"""An example of benchmarking your own saliency method, model and dataset with roar, from outside roar.

Nothing here is imported by roar: the configs under `conf/` name these objects with `_target_`, and
`hydra.searchpath=[pkg://roar_example.conf]` makes them selectable as `method=box_gradient`,
`model=tiny_cnn`, `dataset=bars`, `experiment=bars`.
"""
