"""The method interface. The runner owns the loop (optimizer, schedule, AMP, backward, step,
evaluation, logging); a method adds only what makes it that method."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cl_runner.data.schedule import Task


@dataclass
class Batch:
    """The raw batch: uint8 images and labels on the device, plus the augmentation.

    `view()` returns a freshly distorted, normalised float view on every call, so a method can
    draw one view (most methods) or several (SD).
    """

    images: torch.Tensor
    labels: torch.Tensor
    task: Task
    augment: Callable[[torch.Tensor], torch.Tensor]

    def view(self) -> torch.Tensor:
        return self.augment(self.images)


class Method:
    def training_classes(self, task: Task) -> range:
        """Labels whose training data the runner feeds in this task (memory comes on top)."""
        return task.labels

    def before_task(self, task: Task, model: nn.Module, memory) -> None:
        """Called after the runner added the task's head; snapshot teachers, grow networks."""

    def training_loss(self, batch: Batch, model: nn.Module) -> tuple[torch.Tensor, dict]:
        """Cross-entropy over all seen classes' logits (class-IL)."""
        logits = model(batch.view())["logits"]
        loss = F.cross_entropy(logits, batch.labels)
        return loss, {"ce": loss.detach()}

    def after_task(self, task: Task, model: nn.Module, memory, loader) -> None:
        """Called after training on the task, before evaluation (importance, pruning, ...)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
