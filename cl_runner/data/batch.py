"""What a method trains on: `Batch` (one batch of raw images and how to turn them into inputs)
and `TaskData` (a task's training data as an iterable of batches)."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from cl_runner.data.loader import EVERY_ROW, Augment, DeviceLoader
from cl_runner.data.outputs import forward_all
from cl_runner.data.schedule import Task
from cl_runner.distributed import SINGLE, Ranks


@dataclass(frozen=True)
class Heads:
    """In a sequence of data sets, each label's own head: its first and one-past-last label, and
    whether it is multi-label (indexed by label, on the device)."""

    start: torch.Tensor
    end: torch.Tensor
    multilabel: torch.Tensor
    multilabel_range: tuple[int, int] | None  # the labels of the sequence's multi-label set

    @classmethod
    def of(cls, tasks: list[Task], device) -> "Heads":
        def per_label(value) -> torch.Tensor:
            return torch.tensor([value(t) for t in tasks for _ in t.labels], device=device)

        multi = [(t.offset, t.end) for t in tasks if t.multilabel]
        starts, ends = per_label(lambda t: t.offset), per_label(lambda t: t.end)
        return cls(starts, ends, per_label(lambda t: t.multilabel), multi[0] if multi else None)


class Forward(NamedTuple):
    """One forward pass of the network being trained: its input and its outputs."""

    inputs: torch.Tensor
    outputs: dict


@dataclass
class Batch:
    """The raw batch: uint8 images and labels on the device, plus how to turn them into inputs.

    `view()` returns a freshly distorted, normalised float view on every call, so a method can
    draw one view (most methods) or several (SD); `clean()` is the undistorted input. Device data
    is distorted on the device at each call; file data arrives distorted by the loader's workers
    as `images[:, k]` (n, views, C, H, W), and each call takes the next of those views.
    `forward(model)` draws a view and runs the model on it; the batch keeps the first such pass
    (`first`), so an add-on reuses the method's forward pass instead of running it again. The
    runner attaches `network`, the form of the model that runs its forward pass in training (a
    DDP replica, a compiled graph), so a method reads its attributes from the model itself.
    `rehearsal`: exemplars of earlier tasks' classes are among the task's training data. With
    several processes a batch holds this rank's `shard` of a global batch of `global_size` images,
    and random draws are made for all of them (see distributed.py).
    """

    images: torch.Tensor
    labels: torch.Tensor
    task: Task
    augment: Augment
    generator: torch.Generator
    index: int = 0  # position in the epoch, for schedules within an epoch (DER's mask annealing)
    count: int = 1
    shard: slice = field(default_factory=lambda: EVERY_ROW)
    global_size: int | None = None  # None: the batch is all there is
    rehearsal: bool = False
    drawn: int = 0  # views taken so far (file data: which worker-made view comes next)
    first: Forward | None = None  # the first forward pass of the trained network on this batch
    targets: torch.Tensor | None = None  # a multi-label task's: 1 present, -1 absent, 0 difficult
    heads: Heads | None = None  # a sequence's: every image is scored by its own task's head
    network: nn.Module | None = None  # what runs the model's forward pass (None: the model)
    #: each image's row in its data's images (`TaskData.loader.images`): a key for what a stage
    #: keeps fixed per image (BiC's logits of the fixed network)
    positions: torch.Tensor | None = None

    @property
    def size(self) -> int:
        """Images in the whole batch, over all ranks."""
        return self.global_size or len(self.labels)

    def view(self) -> torch.Tensor:
        images = self.images
        if images.dim() == 5:  # views distorted by the file loader's workers
            images = images[:, self.drawn % images.shape[1]]
        self.drawn += 1
        return self.augment(images, self.generator, self.shard, self.size)

    def forward(self, model: nn.Module, inputs: torch.Tensor | None = None) -> Forward:
        """The model on `inputs`, by default a fresh view of the batch."""
        inputs = self.view() if inputs is None else inputs
        network = model if self.network is None else self.network  # a module's truth value is its len()
        result = Forward(inputs, network(inputs))
        if self.first is None:
            self.first = result
        return result

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise for this shard, drawn for the whole batch."""
        shape = (self.size, *x.shape[1:])
        return torch.randn(shape, device=x.device, generator=self.generator)[self.shard].to(x.dtype)

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
        heads: Heads | None = None,
    ):
        self.loader, self.task, self.augment, self.generator = loader, task, augment, generator
        self.rehearsal, self.ranks, self.heads = rehearsal, ranks, heads

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_images(self) -> int:
        return len(self.loader.labels)

    @property
    def labels(self) -> torch.Tensor:
        return label_column(self.loader.labels)

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch()

    def outputs(self, model: nn.Module, batch_size: int, key: str = "logits") -> torch.Tensor:
        """The model's output `key` for every training image, undistorted and in eval mode, in
        the loader's row order (a batch's `positions` index it): what a stage keeps fixed."""
        return forward_all(model, self.loader.images, self.augment.normalize, batch_size, key)

    def subset(self, keep: torch.Tensor, batch_size: int) -> "TaskData":
        """The images at positions `keep`, in batches of `batch_size`, one view per image
        (a class-balanced stage). Every process passes over all of them."""
        loader = self.loader
        part = type(loader)(loader.images[keep], loader.labels[keep], batch_size, True, self.generator)
        return TaskData(part, self.task, self.augment, self.generator, self.rehearsal, heads=self.heads)

    def owns(self, batch: Batch) -> bool:
        """After training, whole batches are dealt to the processes in turn (one process: all)."""
        return batch.index % self.ranks.world == self.ranks.rank

    def own_batches(self) -> Iterator[Batch]:
        """One pass for work after training (importance): this process's share of the batches.
        Sums over them are added up across processes with `sum_over_ranks`."""
        return (batch for batch in self.epoch() if self.owns(batch))

    def own_views(self) -> Iterator[torch.Tensor]:
        """A distorted view of each of this process's batches (BatchNorm statistics). Every
        process draws every batch's distortions, so their generators stay in step."""
        for batch in self.epoch():
            x = batch.view()
            if self.owns(batch):
                yield x

    def sum_over_ranks(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each value summed over the processes, all of them in one all-reduce."""
        if not self.ranks.active:
            return values
        summed = self.ranks.sum(torch.cat([v.reshape(-1) for v in values.values()]))
        parts = summed.split([v.numel() for v in values.values()])
        return {name: part.view_as(v) for (name, v), part in zip(values.items(), parts, strict=True)}

    def epoch(
        self,
        order: torch.Tensor | None = None,
        start_batch: int = 0,
        ranks: Ranks = SINGLE,
        network: nn.Module | None = None,
    ) -> Iterator[Batch]:
        """One pass; `order` and `start_batch` continue an interrupted one; with several
        processes, this rank's shard of each batch; `network` runs the model's forward passes."""
        for span, images, labels in self.loader.shards(order, start_batch, ranks):
            targets = labels[:, 1:] if labels.dim() == 2 else None
            yield Batch(
                images,
                label_column(labels),
                self.task,
                self.augment,
                self.generator,
                span.index,
                len(self),
                span.shard,
                span.global_size,
                self.rehearsal,
                targets=targets,
                heads=self.heads,
                network=network,
                positions=self.loader.order[span.start : span.start + span.global_size][span.shard],
            )


def balanced_subset(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Positions of a random subset with every class cut to the smallest class's count."""
    classes, counts = labels.unique(return_counts=True)
    keep = int(counts.min())
    picks = []
    for c in classes.tolist():
        members = (labels == c).nonzero().squeeze(1)
        order = torch.randperm(len(members), generator=generator, device=generator.device)
        picks.append(members[order[:keep].to(members.device)])
    return torch.cat(picks)


def label_column(labels: torch.Tensor) -> torch.Tensor:
    """The class labels of a loader's labels: a multi-label set's rows carry its targets after them."""
    return labels[:, 0] if labels.dim() == 2 else labels
