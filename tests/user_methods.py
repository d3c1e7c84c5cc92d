"""Methods a user might write, each breaking one part of the contract roar checks before it computes."""

import time

import torch


def wrong_shape(model, inputs, targets):
    return inputs[..., :-1]


def not_finite(model, inputs, targets):
    attributions = inputs.detach().clone()
    attributions[0, 0, 0, 0] = float("nan")
    return attributions


def elsewhere(model, inputs, targets):
    return torch.zeros_like(inputs, device="meta")


def raises(model, inputs, targets):
    raise RuntimeError("my method broke\nsecond line")


class InputTimesGradient:
    """A user's class method: Captum's interface, cls(model, **params) with attribute(inputs, target)."""

    def __init__(self, model, scale: float = 1.0):
        self.model, self.scale = model, scale

    def attribute(self, inputs, target=None):
        inputs = inputs.detach().requires_grad_()
        (gradients,) = torch.autograd.grad(self.model(inputs).gather(1, target.view(-1, 1)).sum(), inputs)
        return self.scale * gradients * inputs


def input_times_gradient(model, inputs, targets, scale: float = 1.0):
    return InputTimesGradient(model, scale).attribute(inputs, targets)


def slow_input_gradient(model, inputs, targets, delay: float = 0.2):
    """The input gradient after a pause: a method slow enough for a test to stop a job while it runs."""
    time.sleep(delay)
    inputs = inputs.detach().requires_grad_()
    (gradients,) = torch.autograd.grad(model(inputs).gather(1, targets.view(-1, 1)).sum(), inputs)
    return gradients
