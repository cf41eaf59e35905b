"""A quadratic penalty that anchors parameters where earlier tasks left them,

    sum_ij Omega_ij (theta_ij - theta*_ij)^2  (+ a constant, see `merge`),

and the ways SGD can meet it (MAS, EWC, SI)."""

import torch
from torch import nn


def parameter_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters as they are now, by name, detached from later updates."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


class QuadraticPenalty:
    def __init__(self):
        self.omega: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.constant = 0.0  # what merged penalties add beyond the one quadratic (`merge`)
        self.cache: tuple | None = None  # proximal terms for one model and step size

    def __bool__(self) -> bool:
        return bool(self.omega)

    def set(self, omega: dict[str, torch.Tensor], model: nn.Module) -> None:
        """New importances; the anchor becomes the parameters as they are now."""
        self.omega = omega
        self.anchor = parameter_copy(model)
        self.constant, self.cache = 0.0, None

    @torch.no_grad()
    def merge(self, omega: dict[str, torch.Tensor], model: nn.Module) -> None:
        """Add a second penalty, `omega` anchored at the parameters as they are now, keeping
        both anchors: O1 (t - a1)^2 + O2 (t - a2)^2 = (O1 + O2)(t - a)^2 + O1 O2 / (O1 + O2) (a1 - a2)^2
        with a = (O1 a1 + O2 a2) / (O1 + O2). Gradients are those of the separate penalties, the
        value too (the constant), at the memory of one."""
        now = {name: p for name, p in parameter_copy(model).items() if name in omega}
        if not self.omega:
            self.omega, self.anchor, self.constant, self.cache = omega, now, 0.0, None
            return
        merged_omega, merged_anchor = {}, {}
        for name, new in omega.items():
            old, a1, a2 = self.omega.get(name), self.anchor.get(name), now[name]
            if old is None:
                merged_omega[name], merged_anchor[name] = new, a2
                continue
            total = old + new
            safe = total.where(total > 0, torch.ones_like(total))
            merged_anchor[name] = torch.where(total > 0, (old * a1 + new * a2) / safe, a2)
            self.constant += float((old * new / safe * (a1 - a2).pow(2)).sum())
            merged_omega[name] = total
        for name in self.omega.keys() - omega.keys():  # parameters the new penalty leaves out
            merged_omega[name], merged_anchor[name] = self.omega[name], self.anchor[name]
        self.omega, self.anchor, self.cache = merged_omega, merged_anchor, None

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
        return torch.stack(terms).sum() + self.constant

    @torch.no_grad()
    def value(self, model: nn.Module) -> torch.Tensor:
        """The same value in a few multi-tensor kernels. Omega may be negative (SI's path
        integral of a parameter the task loss pushed uphill), so no sqrt(Omega) trick."""
        params, names = self.matched(model)
        diffs = torch._foreach_sub(params, [self.anchor[n] for n in names])
        torch._foreach_mul_(diffs, diffs)
        torch._foreach_mul_(diffs, [self.omega[n] for n in names])
        return torch.stack([d.sum() for d in diffs]).sum() + self.constant

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
        return {"omega": self.omega, "anchor": self.anchor, "constant": self.constant}

    def load_state_dict(self, state: dict) -> None:
        self.omega, self.anchor, self.cache = state["omega"], state["anchor"], None
        self.constant = state.get("constant", 0.0)  # checkpoints from before merged penalties
