"""A quadratic penalty that anchors parameters where an earlier task left them,

    sum_ij Omega_ij (theta_ij - theta*_ij)^2,

and the ways SGD can meet it (MAS; the same form serves other importance-weighted methods)."""

import torch
from torch import nn


class QuadraticPenalty:
    def __init__(self):
        self.omega: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.cache: tuple | None = None  # proximal terms for one model and step size

    def __bool__(self) -> bool:
        return bool(self.omega)

    def set(self, omega: dict[str, torch.Tensor], model: nn.Module) -> None:
        """New importances; the anchor becomes the parameters as they are now."""
        self.omega = omega
        self.anchor = {name: p.detach().clone() for name, p in model.named_parameters()}
        self.cache = None

    def matched(self, model: nn.Module) -> tuple[list, list[str]]:
        """The parameters that have an importance, and their names, in one order."""
        pairs = [(p, name) for name, p in model.named_parameters() if name in self.omega]
        return [p for p, _ in pairs], [name for _, name in pairs]

    def __call__(self, model: nn.Module) -> torch.Tensor:
        """The penalty, differentiable in the parameters."""
        params, names = self.matched(model)
        terms = [
            (self.omega[n] * (p - self.anchor[n]).pow(2)).sum() for p, n in zip(params, names, strict=True)
        ]
        return torch.stack(terms).sum()

    @torch.no_grad()
    def value(self, model: nn.Module) -> torch.Tensor:
        """The same value in a few multi-tensor kernels: sum of ||sqrt(Omega) (theta - theta*)||^2."""
        params, names = self.matched(model)
        diffs = torch._foreach_sub(params, [self.anchor[n] for n in names])
        torch._foreach_mul_(diffs, [self.omega[n].sqrt() for n in names])
        return torch.stack(torch._foreach_norm(diffs)).square().sum()

    @torch.no_grad()
    def proximal_step(self, model: nn.Module, eta: float, lamb: float) -> None:
        """theta <- argmin_t lamb*Omega*(t - t*)^2 + (t - theta)^2 / (2 eta), per parameter:
        theta* + (theta - theta*) / (1 + 2 eta lamb Omega), in three multi-tensor kernels."""
        params, anchors, shrink = self.proximal_terms(model, eta, lamb)
        torch._foreach_sub_(params, anchors)
        torch._foreach_mul_(params, shrink)
        torch._foreach_add_(params, anchors)

    def proximal_terms(self, model: nn.Module, eta: float, lamb: float) -> tuple[list, list, list]:
        """Parameters, anchors and shrink factors, built once per model and step size (the
        learning rate changes once an epoch at most)."""
        key = (id(model), eta, lamb)
        if self.cache is None or self.cache[0] != key:
            params, names = self.matched(model)
            shrink = [1 / (1 + 2 * eta * lamb * self.omega[n]) for n in names]
            self.cache = (key, params, [self.anchor[n] for n in names], shrink)
        return self.cache[1:]

    def state_dict(self) -> dict:
        return {"omega": self.omega, "anchor": self.anchor}

    def load_state_dict(self, state: dict) -> None:
        self.omega, self.anchor, self.cache = state["omega"], state["anchor"], None
