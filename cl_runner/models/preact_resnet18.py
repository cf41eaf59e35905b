"""The pre-activation ResNet-18 of DER's official ImageNet-100 B0 recipe.

Its block is that code's own variant of He et al. (2016b): BN-ReLU first (the projection
shortcut reads the activated input), two 3x3 convs with BN-ReLU between them, the shortcut
added, then a third BatchNorm and ReLU on the sum. The ImageNet stem is a 7x7 stride-2 conv
and a 3x3 max-pool with no BatchNorm; the CIFAR stem a 3x3 conv.
"""

import torch
import torch.nn.functional as F
from torch import nn

from cl_runner.errors import ConfigError
from cl_runner.models.resnet18 import four_stages, kaiming_convs


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return F.relu(self.bn3(out + shortcut))


class PreActResNet18(nn.Module):
    def __init__(self, in_channels: int = 3, stem: str = "imagenet"):
        super().__init__()
        if stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.MaxPool2d(3, 2, 1))
        elif stem == "cifar":
            self.stem = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        else:
            raise ConfigError(f"backbone.stem={stem!r} is invalid: choose from imagenet, cifar")
        self.layers = four_stages(PreActBlock)
        self.feature_dim = 512
        kaiming_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def preact_resnet18(
    in_channels: int = 3, image_size: int | None = None, stem: str = "imagenet"
) -> PreActResNet18:
    return PreActResNet18(in_channels, stem)
