"""The method interface. The runner owns the loop (optimizer, schedule, AMP, backward, step,
evaluation, logging); a method adds only what makes it that method."""

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cl_runner.data.loader import EVERY_ROW, Augment, DeviceLoader
from cl_runner.data.schedule import Task
from cl_runner.distributed import SINGLE, Ranks
from cl_runner.errors import ConfigError
from cl_runner.models import IncrementalNet


def require(condition: bool, message: str) -> None:
    """Method constructors check their parameters with this: a bad value is a ConfigError."""
    if not condition:
        raise ConfigError(message)


@dataclass
class Batch:
    """The raw batch: uint8 images and labels on the device, plus how to turn them into inputs.

    `view()` returns a freshly distorted, normalised float view on every call, so a method can
    draw one view (most methods) or several (SD); `clean()` is the undistorted input. With
    several processes a batch holds this rank's `rows` of a global batch of `total` images, and
    random draws are made for all `total` (see distributed.py).
    """

    images: torch.Tensor
    labels: torch.Tensor
    task: Task
    augment: Augment
    generator: torch.Generator
    index: int = 0  # position in the epoch, for schedules within an epoch (DER's mask annealing)
    count: int = 1
    rows: slice = field(default_factory=lambda: EVERY_ROW)
    total: int | None = None  # None: the batch is all there is

    @property
    def size(self) -> int:
        """Images in the whole batch, over all ranks."""
        return self.total or len(self.labels)

    def view(self) -> torch.Tensor:
        return self.augment(self.images, self.generator, self.rows, self.size)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise for these rows, drawn for the whole batch."""
        shape = (self.size, *x.shape[1:])
        return torch.randn(shape, device=x.device, generator=self.generator)[self.rows].to(x.dtype)

    def clean(self) -> torch.Tensor:
        return self.augment.normalize(self.images)


class TaskData:
    """The task's training data (new classes plus exemplars) as an iterable of `Batch`es."""

    def __init__(self, loader: DeviceLoader, task: Task, augment: Augment, generator: torch.Generator):
        self.loader, self.task, self.augment, self.generator = loader, task, augment, generator

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_images(self) -> int:
        return len(self.loader.labels)

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch()

    def epoch(
        self, order: torch.Tensor | None = None, start_batch: int = 0, ranks: Ranks = SINGLE
    ) -> Iterator[Batch]:
        """One pass; `order` and `start_batch` continue an interrupted one; with several
        processes, this rank's rows of each batch."""
        for span, images, labels in self.loader.shards(order, start_batch, ranks):
            yield Batch(
                images,
                labels,
                self.task,
                self.augment,
                self.generator,
                span.index,
                len(self),
                span.rows,
                span.total,
            )


class Method:
    #: the network the method trains (DER swaps in its expandable one)
    network: type[nn.Module] = IncrementalNet
    #: epochs that train only the new head, feature extractor frozen, before normal training
    head_warmup_epochs: int = 0

    def training_classes(self, task: Task) -> range:
        """Labels whose training data the runner feeds in this task (memory comes on top)."""
        return task.labels

    def before_task(self, task: Task, model: nn.Module, memory) -> None:
        """Called after the runner added the task's head; snapshot teachers, grow networks."""

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor, task: Task) -> torch.Tensor:
        """Cross-entropy over all seen classes' logits (class-IL)."""
        return F.cross_entropy(logits, labels)

    def training_loss(self, batch: Batch, model: nn.Module) -> tuple[torch.Tensor, dict]:
        logits = model(batch.view())["logits"]
        loss = self.classification_loss(logits, batch.labels, batch.task)
        return loss, {"ce": loss.detach()}

    def after_step(self, model: nn.Module, lr: float) -> None:
        """Called after every optimizer step (MAS applies its proximal update here)."""

    def after_task(self, task: Task, model: nn.Module, memory, data: TaskData) -> None:
        """Called after training on the task and the memory update, before evaluation
        (importance, pruning, classifier re-balancing, ...)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
