"""IMM: Overcoming catastrophic forgetting by incremental moment matching (Lee et al., NeurIPS
2017), as the MAS authors' group runs it for multi-head sequences (`Mattdl/CLsurvey`,
src/methods/IMM/{main_L2transfer,train_L2transfer,merge}.py; the authors' own code,
`btjhjeon/IMM_tensorflow`, covers one shared-head MLP).

Each task is learnt from the previous task's own solution theta_{k-1} (weight-transfer), with
L2-transfer,

    L = CE(theta) + lambda_l2 || theta - theta_{k-1} ||^2          (no 1/2; lambda_l2 = 0.01)

on the shared parameters (the backbone; none on the first task). After the task its solution
theta_k is kept, and the network is replaced by the merge of theta_0..theta_k, which is what is
evaluated (the heads are each task's own, not merged):

    mean-IMM:  theta* = sum_k alpha_k theta_k,                       alpha_k = 1 / (k + 1)
    mode-IMM:  theta*_v = sum_k alpha_k F_k,v theta_k,v / sum_k alpha_k F_k,v

F_k the diagonal Fisher of task k's solution: labels sampled from the network's own predictive
distribution over the task's head, F = mean over the task's batches of (d mean-NLL / d theta)^2
(eval mode, clean images), starting from 1e-8 (CLsurvey's diag_fisher). The next task starts
again from theta_k, never from the merge.

Drop-transfer (`drop` = p > 0; the authors' code: p = 0.5, main_drop.py), dropout of each unit's
update away from the previous solution, on every weight layer of the backbone, per image:

    h = W_{k-1} x + b_{k-1} + m * ((W x + b) - (W_{k-1} x + b_{k-1})) / (1 - p),   m ~ Bernoulli(1 - p)

which is the paper's theta_hat = theta_{k-1} + m (theta - theta_{k-1}) / (1 - p) applied per unit,
as the authors' code does it (a frozen theta_{k-1} plus a dropped-out trainable update).
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from cl_runner.data.schedule import Task
from cl_runner.methods.base import Batch, Method, TaskData, require
from cl_runner.models import IncrementalNet
from cl_runner.modes import eval_mode

MODES = ("mean", "mode")


def merge(solutions: list[dict], fishers: list[dict] | None) -> dict[str, torch.Tensor]:
    """Uniform alpha over the solutions: their mean (mean-IMM), or each parameter's
    Fisher-weighted mean (mode-IMM; the alphas cancel)."""
    if fishers is None:
        return {name: torch.stack([s[name] for s in solutions]).mean(0) for name in solutions[0]}
    merged = {}
    for name in solutions[0]:
        weights = torch.stack([f[name] for f in fishers])
        merged[name] = (weights * torch.stack([s[name] for s in solutions])).sum(0) / weights.sum(0)
    return merged


def sampled_fisher(model: IncrementalNet, data: TaskData, task: Task) -> dict[str, torch.Tensor]:
    """Mean over the task's batches of the squared gradient of the batch's mean NLL, labels drawn
    from the network's softmax over the task's head; shared parameters only."""
    params = dict(model.backbone.named_parameters())
    fisher = {name: torch.full_like(p, 1e-8) for name, p in params.items()}
    batches = 0
    with eval_mode(model):
        for batch in data.own_batches():
            logits = model(batch.clean())["logits"][:, task.offset : task.end]
            with torch.no_grad():
                labels = torch.multinomial(F.softmax(logits, 1), 1, generator=data.generator).squeeze(1)
            nll = F.cross_entropy(logits, labels)
            grads = torch.autograd.grad(nll, list(params.values()), allow_unused=True)
            for (name, _), g in zip(params.items(), grads, strict=True):
                if g is not None:
                    fisher[name] += g.pow(2)
            batches += 1
    count = torch.tensor(float(batches), device=data.generator.device)
    totals = data.sum_over_ranks({**fisher, "batches": count})
    n = totals.pop("batches").clamp(min=1)
    return {name: value / n for name, value in totals.items()}


def drop_transfer_hook(p: float, weight: torch.Tensor, bias: torch.Tensor | None):
    """A forward hook: the layer's output with each unit's change from the previous solution's
    output dropped with probability p (kept ones scaled by 1 / (1 - p)); in eval mode the layer's own."""

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return output
        x = inputs[0]
        previous = (
            module._conv_forward(x, weight, bias)
            if isinstance(module, _ConvNd)
            else F.linear(x, weight, bias)
        )
        return previous + F.dropout(output - previous, p)

    return hook


class IMM(Method):
    def __init__(self, mode: str = "mode", l2: float = 0.01, drop: float = 0.0):
        require(mode in MODES, f"method.mode={mode!r} is invalid: choose from mean, mode")
        require(l2 >= 0, f"method.l2={l2} is invalid: expected a number >= 0")
        require(0 <= drop < 1, f"method.drop={drop} is invalid: expected a probability in [0, 1)")
        self.mode, self.l2, self.drop = mode, l2, drop
        self.solutions: list[dict[str, torch.Tensor]] = []  # theta_k of each task, shared parameters
        self.fishers: list[dict[str, torch.Tensor]] = []  # F_k (mode-IMM)

    def before_task(self, task: Task, model: IncrementalNet, memory) -> None:
        """Weight-transfer: learn from the last task's own solution, not from the merge."""
        if self.solutions:
            load_shared(model, self.solutions[-1])

    @contextmanager
    def drop_transfer(self, model: IncrementalNet) -> Iterator[None]:
        """Drop-transfer on the backbone's weight layers for one forward pass (none on the first
        task, nor without `drop`); hooks live only inside it, so evaluation, BatchNorm
        recalibration and the Fisher see the network itself."""
        if not (self.drop and self.solutions):
            yield
            return
        previous = self.solutions[-1]
        hooks = [
            module.register_forward_hook(
                drop_transfer_hook(self.drop, previous[f"{name}.weight"], previous.get(f"{name}.bias"))
            )
            for name, module in model.backbone.named_modules()
            if isinstance(module, nn.Linear | _ConvNd)
        ]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()

    def training_loss(self, batch: Batch, model: IncrementalNet) -> tuple[torch.Tensor, dict]:
        with self.drop_transfer(model):
            _, out = batch.forward(model)
        ce = self.classification_loss(out["logits"], batch)
        if not self.solutions or not self.l2:
            return ce, {"ce": ce.detach()}
        previous = self.solutions[-1]
        l2 = sum((p - previous[name]).pow(2).sum() for name, p in model.backbone.named_parameters())
        return ce + self.l2 * l2, {"ce": ce.detach(), "l2": l2.detach()}  # L2-transfer

    def after_task(self, task: Task, model: IncrementalNet, memory, data: TaskData) -> None:
        solution = {name: p.detach().clone() for name, p in model.backbone.named_parameters()}
        self.solutions.append(solution)
        if self.mode == "mode":
            self.fishers.append(sampled_fisher(model, data, task))
        load_shared(model, merge(self.solutions, self.fishers if self.mode == "mode" else None))

    def state_dict(self) -> dict:
        return {"solutions": self.solutions, "fishers": self.fishers}

    def load_state_dict(self, state: dict, model) -> None:
        device = next(model.parameters()).device
        self.solutions = [{k: v.to(device) for k, v in s.items()} for s in state["solutions"]]
        self.fishers = [{k: v.to(device) for k, v in f.items()} for f in state["fishers"]]


@torch.no_grad()
def load_shared(model: IncrementalNet, values: dict[str, torch.Tensor]) -> None:
    for name, p in model.backbone.named_parameters():
        p.copy_(values[name])
