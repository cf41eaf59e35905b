"""Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017).

Before each new task the current network is frozen as the teacher. Its old-class logits on the
*same distorted batch* are the soft targets for the student's old-class logits:

    L = L_new(y_n, yhat_n) + lambda_o * L_old(y_o, yhat_o)                              (eq. 2)
    L_old = -sum_i y'_o(i) log yhat'_o(i),  y' = softmax(z)^(1/T) renormalised          (eq. 3-4)

with T = 2 and lambda_o = 1, and no T^2 factor (the paper, FACIL and PyCIL have none). In a
class split all old heads are distilled together (one softmax over their concatenated logits, as
FACIL and PyCIL do in class-IL); in a sequence of data sets each old task's head is its own
softmax and their terms are added, as the paper's L_old is one term per old task. L_new is the
new head's cross-entropy; with exemplars in the training data it covers all seen logits, since
old-class labels have no place in the new head (`all_logits` forces that always). `head_epochs`
first trains the new head alone with the rest frozen (the paper's warm-up step).
"""

import torch
from torch import nn

from cl_runner.data.schedule import Task
from cl_runner.methods.base import Batch, require
from cl_runner.methods.losses import modified_cross_entropy
from cl_runner.methods.teacher import WithTeacher


class LwF(WithTeacher):
    stability, stability_start = "lamb", 10.0  # the continual search's parameter (FACIL's start)
    trains_old_heads = True  # theta_o is optimised jointly (the paper's joint-optimize step)

    def __init__(self, lamb: float = 1.0, T: float = 2.0, head_epochs: int = 0, all_logits: bool = False):
        require(lamb >= 0, f"method.lamb={lamb} is invalid: expected a number >= 0")
        require(T > 0, f"method.T={T} is invalid: expected a number > 0")
        self.lamb, self.T, self.head_epochs, self.all_logits = lamb, T, head_epochs, all_logits
        self.old_heads: list[int] = []  # sizes of the heads the teacher answers for

    def before_task(self, task: Task, model: nn.Module, memory) -> None:
        super().before_task(task, model, memory)
        self.old_heads = list(model.task_sizes[:-1])

    def training_loss(self, batch: Batch, model: nn.Module) -> tuple[torch.Tensor, dict]:
        logits, soft_targets = self.with_teacher(batch, model)
        ce = self.classification_loss(logits, batch)
        if soft_targets is None:
            return ce, {"ce": ce.detach()}
        kd = self.distillation(logits, soft_targets, batch)
        return ce + self.lamb * kd, {"ce": ce.detach(), "kd": kd.detach()}  # eq. 2

    def distillation(self, logits: torch.Tensor, soft_targets: torch.Tensor, batch: Batch) -> torch.Tensor:
        """L_old: the old classes' logits against the teacher's (`soft_targets`, old classes only)."""
        old = batch.task.offset
        if batch.task.name is None:  # a class split: one softmax over all old classes (FACIL)
            return modified_cross_entropy(logits[:, :old], soft_targets, self.T)  # eq. 3-4
        pairs = zip(
            logits[:, :old].split(self.old_heads, 1), soft_targets.split(self.old_heads, 1), strict=True
        )
        return sum(
            modified_cross_entropy(student, teacher, self.T) for student, teacher in pairs
        )  # per old task

    def load_state_dict(self, state: dict, model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.old_heads = list(model.task_sizes[:-1])
