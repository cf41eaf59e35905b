"""Synaptic Intelligence (Zenke, Poole & Ganguli, ICML 2017).

Along the training trajectory of task mu, each parameter's contribution to the drop in the loss
is the path integral of -gradient x update, summed over the optimizer's steps:

    omega_k^mu = - sum_steps g_k(t) * (theta_k(t+1) - theta_k(t))                           (eq. 3)

with g the gradient of the task's own loss (the surrogate term's gradient taken out, as the
official code does). At the task's end it becomes an importance

    Omega_k^mu = sum_{nu <= mu} omega_k^nu / ((Delta_k^nu)^2 + xi)                          (eq. 5)

with Delta^nu = theta(t^nu) - theta(t^{nu-1}) the task's whole change, and later
tasks minimise L~ = L + c sum_k Omega_k (theta_k - theta~_k)^2 (eq. 4), theta~ the parameters at
the end of the previous task. The update comes from the runner's `after_step`
hook: the step the parameters really took, momentum, weight decay and the surrogate term
included. `update`: "proximal" (default) or "gradient" (the paper's loss taken literally), see
regularized.py.
"""

import torch
from torch import nn

from cl_runner.data.schedule import Task
from cl_runner.methods.base import TaskData, require
from cl_runner.methods.penalty import parameter_copy
from cl_runner.methods.regularized import Regularized


class SI(Regularized):
    stability, stability_start = "c", 10.0  # the continual search's parameter (FACIL's start)
    part = "si"

    def __init__(self, c: float = 0.1, xi: float = 1e-3, update: str = "proximal", all_logits: bool = False):
        require(c >= 0, f"method.c={c} is invalid: expected a number >= 0")
        require(xi > 0, f"method.xi={xi} is invalid: expected a number > 0")
        super().__init__(update)
        self.c, self.xi, self.all_logits = c, xi, all_logits
        self.path: dict[str, torch.Tensor] = {}  # omega of the task in progress (eq. 3)
        self.start: dict[str, torch.Tensor] = {}  # the parameters when the task began
        self.previous: dict[str, torch.Tensor] = {}  # the parameters before the coming step

    def before_task(self, task: Task, model: nn.Module, memory) -> None:
        self.start = parameter_copy(model)
        self.previous = parameter_copy(model)
        self.path = {name: torch.zeros_like(p) for name, p in self.start.items()}

    @property
    def weight(self) -> float:
        return self.c  # L~ = L + c sum Omega (theta - theta~)^2, eq. 4

    @torch.no_grad()
    def after_step(self, model: nn.Module, lr: float, momentum: float) -> None:
        super().after_step(model, lr, momentum)  # the proximal step, if that is the update
        literal = self.update == "gradient"
        for name, p in model.named_parameters():
            if p.grad is None or name not in self.path:
                continue
            before = self.previous[name]
            grad = p.grad
            if literal and name in self.penalty.omega:  # the task loss's own: less 2 c Omega (theta - theta~)
                grad = grad - 2 * self.c * self.penalty.omega[name] * (before - self.penalty.anchor[name])
            step = p.detach() - before
            # a step a float16 gradient scaler skipped has no update and may have inf gradients
            self.path[name] -= torch.nan_to_num(grad * step, nan=0.0, posinf=0.0, neginf=0.0)  # eq. 3
            before.copy_(p.detach())

    def after_task(self, task: Task, model: nn.Module, memory, data: TaskData) -> None:
        old = self.penalty.omega
        omega = {}
        for name, p in model.named_parameters():
            if name not in self.path:
                continue
            delta = p.detach() - self.start[name]
            new = self.path[name] / (delta.pow(2) + self.xi)  # eq. 5
            omega[name] = old[name] + new if name in old else new
        self.penalty.set(omega, model)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "path": self.path, "start": self.start}

    def load_state_dict(self, state: dict, model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.path, self.start = state["path"], state["start"]
        self.previous = parameter_copy(model)  # a resume continues from the model as it is
