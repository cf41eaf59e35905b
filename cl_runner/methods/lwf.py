"""Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017).

Before each new task the current network is frozen as the teacher. Its old-class logits on the
*same distorted batch* are the soft targets for the student's old-class logits:

    L = CE(z_new, y) + lambda_o * T^2 * KL(softmax(z_old^teacher / T) || softmax(z_old / T))   (eq. 2-4)

All old heads are distilled together (one softmax over their concatenated logits, as FACIL and
PyCIL do in class-IL). With exemplars in the batch, CE covers all seen logits, since old-class
labels have no place in the new head. `warmup_epochs` first trains the new head alone with the
extractor frozen (the paper's warm-up step).
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from cl_runner.data.schedule import Task
from cl_runner.methods.base import Batch, Method, require
from cl_runner.methods.losses import distillation


class LwF(Method):
    def __init__(self, lamb: float = 1.0, T: float = 2.0, warmup_epochs: int = 0):
        require(lamb >= 0, f"method.lamb={lamb} is invalid: expected a number >= 0")
        require(T > 0, f"method.T={T} is invalid: expected a number > 0")
        require(warmup_epochs >= 0, f"method.warmup_epochs={warmup_epochs} is invalid: expected >= 0")
        self.lamb, self.T, self.head_warmup_epochs = lamb, T, warmup_epochs
        self.teacher: nn.Module | None = None
        self.rehearsal = False

    def before_task(self, task: Task, model: nn.Module, memory) -> None:
        if task.index == 0:
            return
        self.rehearsal = len(memory) > 0  # decided once per task: no per-batch host sync
        self.teacher = copy.deepcopy(model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor, task: Task) -> torch.Tensor:
        if task.index == 0 or self.rehearsal:
            return F.cross_entropy(logits, labels)  # first task, or exemplars of old classes present
        return F.cross_entropy(logits[:, task.offset :], labels - task.offset)  # new head only

    def training_loss(self, batch: Batch, model: nn.Module) -> tuple[torch.Tensor, dict]:
        x = batch.view()
        logits = model(x)["logits"]
        ce = self.classification_loss(logits, batch.labels, batch.task)
        if self.teacher is None:
            return ce, {"ce": ce.detach()}
        old = batch.task.offset
        with torch.no_grad():
            soft_targets = self.teacher(x)["logits"][:, :old]
        kd = distillation(logits[:, :old], soft_targets, self.T)
        return ce + self.lamb * kd, {"ce": ce.detach(), "kd": kd.detach()}

    def state_dict(self) -> dict:
        return {"teacher": self.teacher, "rehearsal": self.rehearsal}

    def load_state_dict(self, state: dict) -> None:
        self.teacher, self.rehearsal = state["teacher"], state["rehearsal"]
