"""Optimizers the models name in their config (``optimizer`` = adagrad | adam | sgd, with
``learning_rate``, ``momentum``, ``weight_decay``), including the Adagrad-with-momentum
of the GRU4Rec / HGRU4Rec reference code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class AdagradMomentum(torch.optim.Optimizer):
    """Adagrad with optional momentum, as in the GRU4Rec / HGRU4Rec reference code::

        acc <- acc + g^2;  step = g / sqrt(acc + eps)
        v   <- momentum * v - lr * step;  p <- p + v        (momentum > 0)
        p   <- p - lr * step                                 (momentum = 0)

    (torch's Adagrad has no momentum and puts eps outside the square root.)"""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 0.05,
                 momentum: float = 0.0, eps: float = 1e-6, weight_decay: float = 0.0):
        if lr <= 0 or momentum < 0 or eps <= 0 or weight_decay < 0:
            raise ValueError(f"invalid Adagrad settings lr={lr} momentum={momentum}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "eps": eps,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if group["weight_decay"]:
                    grad = grad + group["weight_decay"] * param
                state = self.state[param]
                if not state:
                    state["sum"] = torch.zeros_like(param)
                    if group["momentum"]:
                        state["velocity"] = torch.zeros_like(param)
                state["sum"].addcmul_(grad, grad)
                update = grad / (state["sum"] + group["eps"]).sqrt()
                if group["momentum"]:
                    velocity = state["velocity"]
                    velocity.mul_(group["momentum"]).add_(update, alpha=-group["lr"])
                    param.add_(velocity)
                else:
                    param.add_(update, alpha=-group["lr"])
        return loss


def build_optimizer(params: list[torch.nn.Parameter], name: str, *, lr: float,
                    momentum: float = 0.0, weight_decay: float = 0.0,
                    model: str = "model") -> torch.optim.Optimizer:
    """The optimizer a model's config names (``optimizer`` field)."""
    name = name.lower()
    if name == "adagrad":
        return AdagradMomentum(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"{model}: unknown optimizer {name!r} (adagrad, adam, sgd)")
