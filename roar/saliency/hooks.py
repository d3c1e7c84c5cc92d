"""Forward hooks that never outlive their use: registered for a block of code and removed when it ends,
whether it returns or raises (a hook left behind would fire on every later forward of the model)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def forward_hooks(
    modules: Iterable[nn.Module], hook: Callable, *, pre: bool = False, with_kwargs: bool = False
) -> Iterator[None]:
    """`hook` on every module of `modules` (a forward pre-hook if `pre`), for the duration of the block."""
    handles = [
        (module.register_forward_pre_hook if pre else module.register_forward_hook)(
            hook, with_kwargs=with_kwargs
        )
        for module in modules
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def probe(model: nn.Module, inputs, modules: Iterable[nn.Module], hook: Callable, **kind) -> None:
    """One forward of `inputs` without gradients, with `hook` on `modules` (`kind`: as `forward_hooks`): how
    a method finds out what the model does with its inputs (which modules run, how often, on what)."""
    with forward_hooks(modules, hook, **kind), torch.no_grad():
        model(inputs)
