"""Per-parameter importance from gradients of a scalar of the network's output, over a task's
training data (MAS's Omega, EWC's Fisher; the same loops serve any such estimate). Importance
describes the trained network, so both loops run it in eval mode and leave its mode as it was."""

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from cl_runner.data.batch import Batch, TaskData
from cl_runner.modes import eval_mode

# what to differentiate: the logits of one batch (or one sample) and their labels -> a scalar
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# which rows of a batch, as clean (undistorted) inputs, with the labels the objective takes
Inputs = Callable[[Batch], tuple[torch.Tensor, torch.Tensor]]


def clean_inputs(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    return Batch.clean(batch), batch.labels


def batch_importance(model: nn.Module, data: TaskData, objective: Objective) -> dict[str, torch.Tensor]:
    """(1/N) sum over batches of |d sum_{k in batch} objective(x_k) / d theta|, on the clean inputs."""
    params = dict(model.named_parameters())
    omega = {name: torch.zeros_like(p) for name, p in params.items()}
    count = 0
    with eval_mode(model):
        for batch in data.own_batches():
            x, y = clean_inputs(batch)
            value = objective(model(x)["logits"], y)
            grads = torch.autograd.grad(value, list(params.values()), allow_unused=True)
            for (name, _), g in zip(params.items(), grads, strict=True):
                if g is not None:
                    omega[name] += g.abs()
            count += len(x)
    return mean_over_processes(data, omega, count)


def sample_importance(
    model: nn.Module,
    data: TaskData,
    objective: Objective,
    chunk_size: int | None,
    magnitude: Callable[[torch.Tensor], torch.Tensor] = torch.abs,
    inputs: Inputs = clean_inputs,
) -> dict[str, torch.Tensor]:
    """(1/N) sum over samples of magnitude(d objective(x_k, y_k) / d theta): |.| for MAS, (.)^2
    for a Fisher. Per-sample gradients via vmap (one batched call per batch, never a loop over
    samples); `inputs` picks each batch's rows and labels."""
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def one_sample(p: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return objective(functional_call(model, (p, buffers), (x.unsqueeze(0),))["logits"], y.unsqueeze(0))

    per_sample = vmap(grad(one_sample), in_dims=(None, 0, 0), chunk_size=chunk_size)
    omega = {name: torch.zeros_like(p) for name, p in params.items()}
    count = 0
    with eval_mode(model):  # `inputs` may run the model too (EWC's sampled labels)
        for batch in data.own_batches():
            x, y = inputs(batch)
            if len(x) == 0:
                continue
            for name, g in per_sample(params, x, y).items():
                omega[name] += magnitude(g).sum(0)
            count += len(x)
    return mean_over_processes(data, omega, count)


def mean_over_processes(data: TaskData, sums: dict[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    """The sums of every process's batches over all their samples (one process: as they are)."""
    device = next(iter(sums.values())).device
    totals = data.sum_over_ranks({**sums, "count": torch.tensor(float(count), device=device)})
    n = totals.pop("count").clamp(min=1)
    return {name: value / n for name, value in totals.items()}
