"""Device-resident batches: the data set is one uint8 tensor on the device and every
augmentation (random crop with padding, horizontal flip, normalisation) runs batched there.
No worker processes and no per-image Python."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cl_runner.distributed import SINGLE, Ranks

EVERY_ROW = slice(None)


def random_crop(
    images: torch.Tensor,
    padding: int,
    generator: torch.Generator,
    shard: slice = EVERY_ROW,
    global_size: int | None = None,
) -> torch.Tensor:
    """Zero-pad by `padding`, then cut a random HxW window per image (one gather, no loop).
    `images` may be one rank's `shard` of a batch of `global_size`: the draws are made for all of it."""
    if padding <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    dev = images.device
    draws = (global_size or n,)
    dy = torch.randint(0, 2 * padding + 1, draws, device=dev, generator=generator)[shard]
    dx = torch.randint(0, 2 * padding + 1, draws, device=dev, generator=generator)[shard]
    ys = (dy[:, None] + torch.arange(h, device=dev))[:, :, None]  # n, h, 1
    xs = (dx[:, None] + torch.arange(w, device=dev))[:, None, :]  # n, 1, w
    batch = torch.arange(n, device=dev)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, ys, xs].permute(0, 3, 1, 2)


def random_flip(
    images: torch.Tensor, generator: torch.Generator, shard: slice = EVERY_ROW, global_size: int | None = None
) -> torch.Tensor:
    flip = torch.rand(global_size or len(images), device=images.device, generator=generator)[shard] < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def random_brightness(
    images: torch.Tensor,
    strength: float,
    generator: torch.Generator,
    shard: slice = EVERY_ROW,
    global_size: int | None = None,
) -> torch.Tensor:
    """torchvision's ColorJitter(brightness=strength) on [0, 1] images: each image times a
    factor drawn uniformly from [max(0, 1 - strength), 1 + strength], clipped to [0, 1]."""
    low, high = max(0.0, 1 - strength), 1 + strength
    draws = torch.rand(global_size or len(images), device=images.device, generator=generator)[shard]
    factor = (low + (high - low) * draws).to(images.dtype)
    return (images * factor[:, None, None, None]).clamp_(0, 1)


class Augment:
    """uint8 batch -> normalised float batch, with or without random distortions (crop with
    padding, horizontal flip, brightness jitter: the CIFAR recipes' order)."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        crop_padding: int = 0,
        flip: bool = False,
        channels_last: bool = False,
        brightness: float = 0.0,
    ):
        self.mean = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
        self.crop_padding = crop_padding
        self.flip = flip
        self.brightness = brightness
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.constants: dict = {}  # (device, dtype) -> mean, std: copied there once, not per batch

    def mean_std(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (device, dtype)
        if key not in self.constants:
            self.constants[key] = (self.mean.to(device, dtype), self.std.to(device, dtype))
        return self.constants[key]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (or floats already in [0, 1]) -> (x - mean) / std."""
        # The default float type: float32, unless a caller (an exactness test) asks for float64.
        dtype = torch.get_default_dtype()
        mean, std = self.mean_std(images.device, dtype)
        unit = images.to(dtype) / 255.0 if images.dtype == torch.uint8 else images.to(dtype)
        x = (unit - mean) / std
        return x.contiguous(memory_format=self.memory_format)

    def __call__(
        self,
        images: torch.Tensor,
        generator: torch.Generator,
        shard: slice = EVERY_ROW,
        global_size: int | None = None,
    ) -> torch.Tensor:
        """`images` are one rank's `shard` of a batch of `global_size` (all of it by default); draws are
        made for the whole batch, so every rank of a run draws alike (see distributed.py)."""
        images = random_crop(images, self.crop_padding, generator, shard, global_size)
        if self.flip:
            images = random_flip(images, generator, shard, global_size)
        if self.brightness:
            unit = images.to(torch.get_default_dtype()) / 255.0
            images = random_brightness(unit, self.brightness, generator, shard, global_size)
        return self.normalize(images)


@dataclass(frozen=True)
class Span:
    """One batch of an epoch: its number, where it starts in the epoch's order, how many
    images it has in all, and which of them are this rank's."""

    index: int
    start: int
    global_size: int
    shard: slice


def spans(num_images: int, batch_size: int, start_batch: int, ranks: Ranks) -> Iterator[Span]:
    starts = range(start_batch * batch_size, num_images, batch_size)
    for index, start in enumerate(starts, start=start_batch):
        size = min(batch_size, num_images - start)
        if size >= ranks.world:  # else some rank would get no image: every rank skips it
            yield Span(index, start, size, ranks.shard(size))


class DeviceLoader:
    """Shuffled (or ordered) mini-batches of device tensors; indices drawn on the device."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None = None,
    ):
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.generator = batch_size, shuffle, generator

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch()

    def start_epoch(self, order: torch.Tensor | None) -> torch.Tensor:
        """The pass's order: the given one (an interrupted epoch) or a new one. It stays in
        `self.order` so that a checkpoint can record it."""
        n, dev = len(self.labels), self.labels.device
        if order is None:
            if self.shuffle:
                order = torch.randperm(n, device=dev, generator=self.generator)
            else:
                order = torch.arange(n, device=dev)
        self.order = order
        return order

    def epoch(self, order: torch.Tensor | None = None, start_batch: int = 0):
        """One pass. `order` and `start_batch` continue an interrupted epoch."""
        for _, images, labels in self.shards(order, start_batch, SINGLE):
            yield images, labels

    def shards(self, order: torch.Tensor | None, start_batch: int, ranks: Ranks):
        """One pass as (span, images, labels): this rank's shard of every batch."""
        order = self.start_epoch(order)
        for span in spans(len(self.labels), self.batch_size, start_batch, ranks):
            idx = order[span.start : span.start + span.global_size][span.shard]
            yield span, self.images[idx], self.labels[idx]
