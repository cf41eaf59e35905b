"""What the distilling methods share (LwF, iCaRL, WA): a frozen copy of the network as it was
when the task began, whose outputs on the same batch are the old classes' targets."""

import copy

import torch
from torch import nn

from cl_runner.data.schedule import Task
from cl_runner.methods.base import Batch, Method


def frozen_copy(model: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class WithTeacher(Method):
    teacher: nn.Module | None = None

    def before_task(self, task: Task, model: nn.Module, memory) -> None:
        if task.index > 0:
            self.teacher = frozen_copy(model)

    def with_teacher(self, batch: Batch, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The network's logits on the batch's view, and the teacher's logits of the old classes
        on the same view (None on the first task)."""
        x, out = batch.forward(model)
        if self.teacher is None:
            return out["logits"], None
        with torch.no_grad():
            return out["logits"], self.teacher(x)["logits"][:, : batch.task.offset]

    def state_dict(self) -> dict:
        return {"teacher": None if self.teacher is None else self.teacher.state_dict()}

    def load_state_dict(self, state: dict, model: nn.Module) -> None:
        # The teacher is a copy of the network at the task's start: the same heads as now.
        self.teacher = None
        if state["teacher"] is not None:
            self.teacher = frozen_copy(model)
            self.teacher.load_state_dict(state["teacher"])
