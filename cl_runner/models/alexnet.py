"""AlexNet feature extractors.

Inputs of 64 px and more use torchvision's AlexNet (Krizhevsky et al. 2012) up to its second
4096-unit layer, as LwF does. Smaller inputs use the small AlexNet of the continual-learning
literature (three conv layers with max-pooling, two 2048-unit layers; HAT / FACIL style), made
size-agnostic by an adaptive pool so it also runs on 8x8 digits.
"""

import torch
from torch import nn
from torchvision.models import alexnet as tv_alexnet

from cl_runner.errors import ConfigError
from cl_runner.models.weights import load_pretrained

SMALL_INPUT_LIMIT = 64


class AlexNetFeatures(nn.Module):
    """torchvision AlexNet without its last (1000-way) layer; feature_dim = 4096."""

    def __init__(self, in_channels: int):
        super().__init__()
        net = tv_alexnet(weights=None)
        if in_channels != 3:
            net.features[0] = nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2)
        self.features, self.avgpool = net.features, net.avgpool
        self.fc = net.classifier[:-1]
        self.feature_dim = 4096
        self.pooled_dim = 256 * 6 * 6

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """pool5, flattened: the input of the fully connected layers (EBLL's autoencoders read it)."""
        return torch.flatten(self.avgpool(self.features(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pooled(x))


class SmallAlexNet(nn.Module):
    """Three 3x3 conv layers (64, 128, 256) with max-pooling, then 2048-2048; feature_dim = 2048."""

    def __init__(self, in_channels: int, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(2),
        )  # fmt: skip
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(256 * 4, 2048), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(2048, 2048), nn.ReLU(),
        )  # fmt: skip
        self.feature_dim = 2048
        self.pooled_dim = 256 * 4

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The last pooling's output, flattened: the input of the fully connected layers."""
        return torch.flatten(self.features(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pooled(x))  # fc's Flatten leaves the flat input as it is


def alexnet(
    in_channels: int = 3, image_size: int = 224, weights: str | None = None, weights_data: str | None = None
) -> nn.Module:
    """`weights`: imagenet (torchvision's) or a state dict's path in torchvision's layout; the
    pretrained fc8 is kept as `backbone.pretrained` (see weights.py)."""
    if image_size < SMALL_INPUT_LIMIT:
        if weights:
            raise ConfigError(
                f"backbone.weights needs inputs of {SMALL_INPUT_LIMIT} px or more (got {image_size})"
            )
        return SmallAlexNet(in_channels)
    net = AlexNetFeatures(in_channels)
    net.pretrained = None
    if weights:
        if in_channels != 3:
            raise ConfigError("backbone.weights needs 3-channel images")
        net.pretrained = load_pretrained(net, "alexnet", weights, weights_data)
    return net
