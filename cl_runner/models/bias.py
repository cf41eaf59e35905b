"""BiC's network (Wu et al., CVPR 2019): the incremental network with a bias correction layer
per task, two parameters applied to that task's logits, q = alpha o + beta (eq. 4). Which tasks'
corrections apply is the network's state: none while a task is learnt (the official code's
student), the newest one when it is evaluated or distils the next task (the official code keeps
one correction at a time; FACIL and PyCIL all of them)."""

import torch
from torch import nn

from cl_runner.models.incremental import IncrementalNet


class BiasNet(IncrementalNet):
    takes_pretrained_head = False

    def __init__(self, backbone: nn.Module):
        super().__init__(backbone)
        self.bias = nn.ParameterList()  # per task: (alpha, beta)
        self.applied: list[int] = []  # the tasks whose correction the logits go through

    def add_head(self, num_classes: int) -> nn.Module:
        head = super().add_head(num_classes)
        self.bias.append(nn.Parameter(torch.tensor([1.0, 0.0], device=head.weight.device)))
        return head

    def correction(self, task: int) -> nn.Parameter:
        return self.bias[task]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = super().forward(x)
        return {**out, "logits": self.corrected(out["logits"])} if self.applied else out

    def corrected(self, logits: torch.Tensor) -> torch.Tensor:
        """The `applied` tasks' corrections on uncorrected logits."""
        parts, start = [], 0
        for task, size in enumerate(self.task_sizes):
            part = logits[:, start : start + size]
            if task in self.applied:
                alpha, beta = self.bias[task]
                part = alpha * part + beta  # eq. 4
            parts.append(part)
            start += size
        return torch.cat(parts, 1)

    def get_extra_state(self) -> dict:
        return {"applied": list(self.applied)}

    def set_extra_state(self, state: dict) -> None:
        self.applied = list(state["applied"])
