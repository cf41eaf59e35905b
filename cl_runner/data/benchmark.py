"""The class-incremental benchmark: training and test images with labels in class-order
positions, the tasks, the distortions, and the generator of every random draw on the data."""

from dataclasses import dataclass

import torch

from cl_runner.data.batch import Heads, TaskData
from cl_runner.data.files import FileImages, FileLoader
from cl_runner.data.images import ImageSet, Splits
from cl_runner.data.loader import Augment, DeviceLoader
from cl_runner.data.schedule import Task, remap_labels
from cl_runner.distributed import SINGLE, Ranks


@dataclass
class Benchmark:
    train: ImageSet
    test: ImageSet
    tasks: list[Task]
    augment: Augment
    generator: torch.Generator  # shuffling and distortions, drawn alike by every process
    heads: Heads | None = None  # a sequence of data sets: each label's own head (task-IL losses)
    validation: ImageSet | None = None  # held out of the training images (`validation`)

    @classmethod
    def on_device(
        cls,
        splits: Splits,
        order: list[int],
        tasks: list[Task],
        augment: Augment,
        seed: int,
        device,
        validation: ImageSet | None = None,
    ):
        """Labels remapped to class-order positions; images and labels moved to the device once
        (file images stay on disk, their labels move)."""

        def prepare(part: ImageSet) -> ImageSet:
            targets = None if part.targets is None else part.targets.to(device)
            return ImageSet(part.images.to(device), remap_labels(part.labels, order).to(device), targets)

        generator = torch.Generator(device=device).manual_seed(seed)
        heads = Heads.of(tasks, device) if tasks[0].name is not None else None
        held = None if validation is None else prepare(validation)
        return cls(prepare(splits.train), prepare(splits.test), tasks, augment, generator, heads, held)

    def validation_data(self, task: Task, per_class: int | None, batch_size: int, ranks: Ranks = SINGLE):
        """The held-out images of every class seen so far, the same number of each: `per_class`
        (the first in the held-out order), or as many as every class has."""
        labels = self.validation.labels
        seen = labels < task.end
        counts = torch.bincount(labels[seen], minlength=task.end)
        keep = int(counts.min()) if per_class is None else min(per_class, int(counts.min()))
        positions = torch.cat([(labels == c).nonzero().squeeze(1)[:keep] for c in range(task.end)])
        loader = DeviceLoader(
            self.validation.images[positions], labels[positions], batch_size, True, self.generator
        )
        return TaskData(loader, task, self.augment, self.generator, True, ranks, self.heads)

    def training_data(
        self,
        task: Task,
        classes: range,
        rehearsed: torch.Tensor,
        batch_size: int,
        views: int,
        ranks: Ranks = SINGLE,
    ) -> TaskData:
        """The training images of `classes` plus the exemplars at `rehearsed` (indices into
        `train`) of other classes. Images in memory are batched on their device; images on
        disk are decoded by workers, `views` distortions of each (an add-on that draws two)."""
        train = self.train
        fresh = (train.labels >= classes.start) & (train.labels < classes.stop)
        rehearsed = rehearsed[~fresh[rehearsed]]
        idx = torch.cat([fresh.nonzero().squeeze(1), rehearsed])
        images, labels, generator = train.images[idx], train.labels[idx], self.generator
        if train.targets is not None:  # a multi-label set: its targets travel beside the labels
            labels = torch.cat([labels[:, None], train.targets[idx].long()], 1)
        if isinstance(images, FileImages):
            loader = FileLoader(images, labels, batch_size, True, generator, views=views)
        else:
            loader = DeviceLoader(images, labels, batch_size, True, generator)
        return TaskData(loader, task, self.augment, generator, len(rehearsed) > 0, ranks, self.heads)
