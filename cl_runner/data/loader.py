"""Device-resident batches: the data set is one uint8 tensor on the device and every
augmentation (random crop with padding, horizontal flip, normalisation) runs batched there.
No worker processes and no per-image Python."""

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding`, then cut a random HxW window per image (one gather, no loop)."""
    if padding <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    dev = images.device
    dy = torch.randint(0, 2 * padding + 1, (n,), device=dev, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=dev, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, :, None]  # n, h, 1
    cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, :]  # n, 1, w
    batch = torch.arange(n, device=dev)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(images), device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


class Augment:
    """uint8 batch -> normalised float batch, with or without random distortions."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        crop_padding: int = 0,
        flip: bool = False,
        channels_last: bool = False,
    ):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.crop_padding = crop_padding
        self.flip = flip
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        x = (images.float() / 255.0 - mean) / std
        return x.contiguous(memory_format=self.memory_format)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = random_crop(images, self.crop_padding, generator)
        if self.flip:
            images = random_flip(images, generator)
        return self.normalize(images)


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
        order = self.start_epoch(order)
        for start in range(start_batch * self.batch_size, len(self.labels), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.images[idx], self.labels[idx]
