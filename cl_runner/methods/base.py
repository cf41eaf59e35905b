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
    draw one view (most methods) or several (SD); `clean()` is the undistorted input. Device data
    is distorted on the device at each call; file data arrives distorted by the loader's workers
    as `images[:, k]` (n, views, C, H, W), and each call takes the next of those views.
    `rehearsal`: exemplars of earlier tasks' classes are among the task's training data. With
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
    rehearsal: bool = False
    drawn: int = 0  # views taken so far (file data: which worker-made view comes next)

    @property
    def size(self) -> int:
        """Images in the whole batch, over all ranks."""
        return self.total or len(self.labels)

    def view(self) -> torch.Tensor:
        images = self.images
        if images.dim() == 5:  # views distorted by the file loader's workers
            images = images[:, self.drawn % images.shape[1]]
        self.drawn += 1
        return self.augment(images, self.generator, self.rows, self.size)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise for these rows, drawn for the whole batch."""
        shape = (self.size, *x.shape[1:])
        return torch.randn(shape, device=x.device, generator=self.generator)[self.rows].to(x.dtype)

    def clean(self) -> torch.Tensor:
        return self.augment.normalize(self.images[:, 0] if self.images.dim() == 5 else self.images)


class TaskData:
    """The task's training data (new classes plus exemplars) as an iterable of `Batch`es."""

    def __init__(
        self,
        loader: DeviceLoader,
        task: Task,
        augment: Augment,
        generator: torch.Generator,
        rehearsal: bool = False,
        ranks: Ranks = SINGLE,
    ):
        self.loader, self.task, self.augment, self.generator = loader, task, augment, generator
        self.rehearsal, self.ranks = rehearsal, ranks

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_images(self) -> int:
        return len(self.loader.labels)

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch()

    def owns(self, batch: Batch) -> bool:
        """After training, whole batches are dealt to the processes in turn (one process: all)."""
        return batch.index % self.ranks.world == self.ranks.rank

    def own_batches(self) -> Iterator[Batch]:
        """One pass for work after training (importance): this process's share of the batches.
        Sums over them are added up across processes with `total`."""
        return (batch for batch in self.epoch() if self.owns(batch))

    def own_views(self) -> Iterator[torch.Tensor]:
        """A distorted view of each of this process's batches (BatchNorm statistics). Every
        process draws every batch's distortions, so their generators stay in step."""
        for batch in self.epoch():
            x = batch.view()
            if self.owns(batch):
                yield x

    def total(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each value summed over the processes, all of them in one all-reduce."""
        if not self.ranks.active:
            return values
        summed = self.ranks.sum(torch.cat([v.reshape(-1) for v in values.values()]))
        parts = summed.split([v.numel() for v in values.values()])
        return {name: part.view_as(v) for (name, v), part in zip(values.items(), parts, strict=True)}

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
                self.rehearsal,
            )


class Method:
    #: the network the method trains (DER swaps in its expandable one)
    network: type[nn.Module] = IncrementalNet
    #: epochs that train only the new head, feature extractor frozen, before normal training
    head_warmup_epochs: int = 0
    #: distorted views per image the method draws from one batch (file data decodes this many)
    views: int = 1
    #: cross-entropy over all seen classes even when no exemplars are in the batch
    all_logits: bool = False

    def training_classes(self, task: Task) -> range:
        """Labels whose training data the runner feeds in this task (memory comes on top)."""
        return task.labels

    def before_task(self, task: Task, model: nn.Module, memory) -> None:
        """Called after the runner added the task's head; snapshot teachers, grow networks."""

    def classification_loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Cross-entropy over the new head's logits when the batch holds only the new task's
        classes (FACIL's and PyCIL's fine-tuning, the LwF paper); over all seen classes when
        exemplars of old classes are in the training data, on the first task, or with
        `all_logits`."""
        task = batch.task
        if self.all_logits or batch.rehearsal or task.index == 0:
            return F.cross_entropy(logits, batch.labels)
        return F.cross_entropy(logits[:, task.offset : task.end], batch.labels - task.offset)

    def training_loss(self, batch: Batch, model: nn.Module) -> tuple[torch.Tensor, dict]:
        logits = model(batch.view())["logits"]
        loss = self.classification_loss(logits, batch)
        return loss, {"ce": loss.detach()}

    def epoch_start(self, epoch: int, model: nn.Module, data: TaskData) -> None:
        """Called before each epoch of the main stage, not again when a resume continues inside
        it (DER resets its classifiers when the learning-rate warm-up ends); random draws use
        `data.generator`, which every process of a run draws alike."""

    def after_step(self, model: nn.Module, lr: float, momentum: float) -> None:
        """Called after every optimizer step with its learning rate and momentum (MAS applies
        its proximal update here)."""

    def after_task(self, task: Task, model: nn.Module, memory, data: TaskData) -> None:
        """Called after training on the task and the memory update, before evaluation
        (importance, pruning, classifier re-balancing, ...)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
