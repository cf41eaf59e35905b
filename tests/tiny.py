"""Tiny networks and batches with hand-set numbers, for tests that pin a method's mathematics."""

import torch
from torch import nn

from cl_runner.data.batch import Batch
from cl_runner.data.loader import Augment
from cl_runner.data.schedule import Task
from cl_runner.models import IncrementalNet


class Pixels(nn.Module):
    """A 'feature extractor' that returns the input pixels: features = x / 255 (see `identity_augment`)."""

    def __init__(self, dim: int):
        super().__init__()
        self.feature_dim = dim
        self.anchor = nn.Parameter(torch.zeros(0))  # gives the network a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class Scale(nn.Module):
    """features = w * pixels / 255: one shared parameter vector (see `identity_augment`)."""

    def __init__(self, w: list[float]):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))
        self.feature_dim = len(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) * self.w


def linear_net(*heads: list[list[float]], biases: list[list[float]] | None = None) -> IncrementalNet:
    """Identity features followed by heads with the given weight matrices (and zero biases)."""
    dim = len(heads[0][0])
    net = IncrementalNet(Pixels(dim))
    for i, weight in enumerate(heads):
        head = net.add_head(len(weight))
        with torch.no_grad():
            head.weight.copy_(torch.tensor(weight))
            head.bias.copy_(torch.tensor(biases[i]) if biases else torch.zeros(len(weight)))
    return net


def identity_augment(channels: int) -> Augment:
    """No distortion, mean 0, std 1: a batch's view is images / 255."""
    return Augment([0.0] * channels, [1.0] * channels)


def make_batch(pixels: list[list[int]], labels: list[int], task: Task) -> Batch:
    images = torch.tensor(pixels, dtype=torch.uint8).view(len(pixels), -1, 1, 1)
    return Batch(images, torch.tensor(labels), task, identity_augment(images.shape[1]), torch.Generator())
