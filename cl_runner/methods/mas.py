"""Memory Aware Synapses (Aljundi et al., ECCV 2018).

After task t, the importance of every parameter is how strongly the squared L2 norm of the
network's output reacts to it, averaged over the task's training data (no labels needed):

    Omega_ij = 1/N sum_k | d ||F(x_k; theta)||_2^2 / d theta_ij |                        (eq. 4 and 10)

and training on later tasks adds (penalty.py)

    L(theta) = L_new(theta) + lambda * sum_ij Omega_ij (theta_ij - theta*_ij)^2             (eq. 3)

with theta* the parameters after task t. `update`: "proximal" (default) or "gradient" (the
official code's), see regularized.py.

`importance`: "batch" takes |gradient of the batch sum| per batch (the official code), "sample"
exact per-sample gradients. Importances accumulate over tasks by sum (the official
`accumulate_reg_params`) or FACIL's alpha*old + (1-alpha)*new. F is the task's own head
(`output="task"`, the official code) or all seen logits (`output="all"`, FACIL); Omega covers
every parameter, heads included.
"""

import torch
from torch import nn

from cl_runner.data.schedule import Task
from cl_runner.methods.base import TaskData, require
from cl_runner.methods.importance import batch_importance, sample_importance
from cl_runner.methods.regularized import Regularized


class MAS(Regularized):
    stability, stability_start = "lamb", 400.0  # the continual search's parameter (FACIL's start)
    part = "mas"

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
        require(output in ("task", "all"), f"method.output={output!r}: choose task, all")
        self.lamb, self.importance, self.accumulate = lamb, importance, accumulate
        super().__init__(update)
        self.alpha, self.sample_chunk = alpha, sample_chunk
        self.output, self.all_logits = output, all_logits

    @property
    def weight(self) -> float:
        return self.lamb  # L_new + lambda sum Omega (theta - theta*)^2, eq. 3

    def task_importance(self, model: nn.Module, data: TaskData) -> dict[str, torch.Tensor]:
        """Omega of the task just learnt, on its clean (undistorted) inputs, in eval mode:
        importance describes the trained network."""
        outputs = slice(data.task.offset, data.task.end) if self.output == "task" else slice(None)

        def squared_norm(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # ||F(x)||_2^2, eq. 10
            return logits[:, outputs].pow(2).sum()

        if self.importance == "batch":
            return batch_importance(model, data, squared_norm)
        return sample_importance(model, data, squared_norm, self.sample_chunk)

    def after_task(self, task: Task, model: nn.Module, memory, data: TaskData) -> None:
        old = self.penalty.omega
        new = self.task_importance(model, data)
        self.penalty.set({name: self.accumulated(old.get(name), value) for name, value in new.items()}, model)

    def accumulated(self, old: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
        if old is None:
            return new
        return old + new if self.accumulate == "sum" else self.alpha * old + (1 - self.alpha) * new
