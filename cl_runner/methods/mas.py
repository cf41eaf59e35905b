"""Memory Aware Synapses (Aljundi et al., ECCV 2018).

After task t, the importance of every parameter is how strongly the squared L2 norm of the
network's output reacts to it, averaged over the task's training data (no labels needed):

    Omega_ij = 1/N sum_k | d ||F(x_k; theta)||_2^2 / d theta_ij |                        (eq. 4 and 10)

and training on later tasks adds

    L(theta) = L_new(theta) + lambda * sum_ij Omega_ij (theta_ij - theta*_ij)^2             (eq. 3)

with theta* the parameters after task t. The objective is the paper's; `update` says how SGD meets
the quadratic term. The official code adds 2*lambda*Omega*(theta - theta*) to the gradient before
momentum (`update="gradient"`), which diverges once lr*2*lambda*Omega exceeds 2(1 + momentum):
at this runner's learning rates Omega reaches the hundreds. `update="proximal"` (default) takes
the SGD step on the task loss, then the exact minimiser of the penalty's proximal problem with
the step size momentum SGD really takes, eta = lr / (1 - momentum):

    theta <- theta* + (theta - theta*) / (1 + 2 * eta * lambda * Omega)

Its fixed point is the paper's, grad L + 2 lambda Omega (theta - theta*) = 0 (shrinking with lr
alone would give a (1 - momentum)-times weaker penalty), and it is stable for any step size.

`importance="batch"` takes |gradient of the batch sum| per batch, as the official code does
(exact for batch size 1); `importance="sample"` takes exact per-sample gradients with torch.func
(one batched vmap per batch, never a loop over samples). Importances accumulate over tasks by
sum (the official code's `accumulate_reg_params`) or FACIL's fusion alpha*old + (1-alpha)*new.
F is the output of the task's own head (`output="task"`), as in the official code, which computes
each task's Omega with that task's head on that task's data; Omega covers every parameter,
heads included. `output="all"` takes all seen logits instead (FACIL).
"""

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from cl_runner.data.schedule import Task
from cl_runner.methods.base import Batch, Method, TaskData, require


def batch_importance(model: nn.Module, data, inputs, outputs: slice) -> dict[str, torch.Tensor]:
    """(1/N) sum over batches of |d sum_{k in batch} ||F(x_k)||^2 / d theta|, F = logits[:, outputs]."""
    params = dict(model.named_parameters())
    omega = {name: torch.zeros_like(p) for name, p in params.items()}
    count = 0
    for batch in data.own_batches():
        x = inputs(batch)
        squared_norm = model(x)["logits"][:, outputs].pow(2).sum()
        grads = torch.autograd.grad(squared_norm, list(params.values()), allow_unused=True)
        for (name, _), g in zip(params.items(), grads, strict=True):
            if g is not None:
                omega[name] += g.abs()
        count += len(x)
    return mean_over_processes(data, omega, count)


def sample_importance(
    model: nn.Module, data, inputs, outputs: slice, chunk_size: int | None
) -> dict[str, torch.Tensor]:
    """(1/N) sum over samples of |d ||F(x_k)||^2 / d theta|, per-sample gradients via vmap."""
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def squared_norm(p: dict, x: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (p, buffers), (x.unsqueeze(0),))["logits"]
        return logits[:, outputs].pow(2).sum()

    per_sample = vmap(grad(squared_norm), in_dims=(None, 0), chunk_size=chunk_size)
    omega = {name: torch.zeros_like(p) for name, p in params.items()}
    count = 0
    for batch in data.own_batches():
        x = inputs(batch)
        for name, g in per_sample(params, x).items():
            omega[name] += g.abs().sum(0)
        count += len(x)
    return mean_over_processes(data, omega, count)


def mean_over_processes(data: TaskData, sums: dict[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    """The sums of every process's batches over all their samples (one process: as they are)."""
    device = next(iter(sums.values())).device
    totals = data.total({**sums, "count": torch.tensor(float(count), device=device)})
    n = totals.pop("count")
    return {name: value / n for name, value in totals.items()}


class MAS(Method):
    def __init__(
        self,
        lamb: float = 1.0,
        importance: str = "batch",
        accumulate: str = "sum",
        alpha: float = 0.5,
        sample_chunk: int | None = 32,
        update: str = "proximal",
        output: str = "task",
        all_logits: bool = False,
    ):
        require(lamb >= 0, f"method.lamb={lamb} is invalid: expected a number >= 0")
        require(importance in ("batch", "sample"), f"method.importance={importance!r}: choose batch, sample")
        require(accumulate in ("sum", "alpha"), f"method.accumulate={accumulate!r}: choose sum, alpha")
        require(0 <= alpha <= 1, f"method.alpha={alpha} is invalid: expected a number in [0, 1]")
        require(update in ("proximal", "gradient"), f"method.update={update!r}: choose proximal, gradient")
        require(output in ("task", "all"), f"method.output={output!r}: choose task, all")
        self.lamb, self.importance, self.accumulate = lamb, importance, accumulate
        self.alpha, self.sample_chunk, self.update = alpha, sample_chunk, update
        self.output, self.all_logits = output, all_logits
        self.omega: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.cache: tuple | None = None  # proximal_terms for one model and step size

    def matched(self, model: nn.Module) -> tuple[list, list[str]]:
        """The parameters that have an importance, and their names, in one order."""
        pairs = [(p, name) for name, p in model.named_parameters() if name in self.omega]
        return [p for p, _ in pairs], [name for _, name in pairs]

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """sum_ij Omega_ij (theta_ij - theta*_ij)^2 over the parameters that have an importance."""
        params, names = self.matched(model)
        terms = [
            (self.omega[n] * (p - self.anchor[n]).pow(2)).sum() for p, n in zip(params, names, strict=True)
        ]
        return torch.stack(terms).sum()

    @torch.no_grad()
    def reported_penalty(self, model: nn.Module) -> torch.Tensor:
        """The same value in a few multi-tensor kernels: sum of ||sqrt(Omega) (theta - theta*)||^2."""
        params, names = self.matched(model)
        diffs = torch._foreach_sub(params, [self.anchor[n] for n in names])
        torch._foreach_mul_(diffs, [self.omega[n].sqrt() for n in names])
        return torch.stack(torch._foreach_norm(diffs)).square().sum()

    def training_loss(self, batch: Batch, model: nn.Module) -> tuple[torch.Tensor, dict]:
        ce, parts = super().training_loss(batch, model)
        if not self.omega:
            return ce, parts
        if self.update == "gradient":
            reg = self.penalty(model)
            return ce + self.lamb * reg, {**parts, "mas": reg.detach()}
        # after_step applies the penalty; it is reported once an epoch, at its last batch,
        # weighted so that the epoch's average of the parts reads as that value
        if batch.index == batch.count - 1:
            parts["mas"] = self.reported_penalty(model) * batch.count
        return ce, parts

    @torch.no_grad()
    def after_step(self, model: nn.Module, lr: float, momentum: float) -> None:
        """Proximal step: argmin_t lambda*Omega*(t - t*)^2 + (t - theta)^2 / (2 eta), per parameter,
        with eta = lr / (1 - momentum), the step momentum SGD takes in its steady state. Three
        multi-tensor kernels a step, whatever the number of parameter tensors."""
        if self.update != "proximal" or not self.omega:
            return
        params, anchors, shrink = self.proximal_terms(model, lr / (1 - momentum))
        torch._foreach_sub_(params, anchors)
        torch._foreach_mul_(params, shrink)  # (theta - theta*) / (1 + 2 eta lambda Omega)
        torch._foreach_add_(params, anchors)

    def proximal_terms(self, model: nn.Module, eta: float) -> tuple[list, list, list]:
        """Parameters, anchors and shrink factors, built once per model and step size (the
        learning rate changes once an epoch at most)."""
        key = (id(model), eta)
        if self.cache is None or self.cache[0] != key:
            params, names = self.matched(model)
            shrink = [1 / (1 + 2 * eta * self.lamb * self.omega[n]) for n in names]
            self.cache = (key, params, [self.anchor[n] for n in names], shrink)
        return self.cache[1:]

    def task_importance(self, model: nn.Module, data: TaskData) -> dict[str, torch.Tensor]:
        # The clean (undistorted) inputs, in eval mode: importance describes the trained network.
        was_training = model.training
        model.eval()
        task = data.task
        outputs = slice(task.offset, task.end) if self.output == "task" else slice(None)
        if self.importance == "batch":
            omega = batch_importance(model, data, Batch.clean, outputs)
        else:
            omega = sample_importance(model, data, Batch.clean, outputs, self.sample_chunk)
        model.train(was_training)
        return omega

    def after_task(self, task: Task, model: nn.Module, memory, data: TaskData) -> None:
        new = self.task_importance(model, data)
        for name, value in new.items():
            old = self.omega.get(name)
            if old is None:
                self.omega[name] = value
            elif self.accumulate == "sum":
                self.omega[name] = old + value
            else:
                self.omega[name] = self.alpha * old + (1 - self.alpha) * value
        self.anchor = {name: p.detach().clone() for name, p in model.named_parameters()}
        self.cache = None

    def state_dict(self) -> dict:
        return {"omega": self.omega, "anchor": self.anchor}

    def load_state_dict(self, state: dict) -> None:
        self.omega, self.anchor = state["omega"], state["anchor"]
        self.cache = None
