"""CIFAR-style ResNets (He et al. 2016, section 4.2): 3 stages of n basic blocks, 16/32/64 channels.

Depth = 6n + 2: resnet20 (n=3), resnet32 (n=5, the iCaRL/PyCIL/DER CIFAR backbone).
Shortcuts that change shape are "option A" (strided identity, zero-padded channels), as in the
original paper and the class-incremental toolboxes: they hold no parameters.
"""

import torch
import torch.nn.functional as F
from torch import nn

from cl_runner.errors import ConfigError


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.pad_channels = planes - in_planes
        # Set by channel pruning: output channel -> kept input channel (or the padded zero one)
        self.register_buffer("shortcut_index", None)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.shortcut_index is not None:
            return F.pad(x, (0, 0, 0, 0, 0, 1))[:, self.shortcut_index]
        if self.pad_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad_channels))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, in_channels: int = 3, zero_init_residual: bool = False):
        super().__init__()
        if (depth - 2) % 6:
            raise ConfigError(
                f"backbone.depth={depth} is invalid: CIFAR ResNets have depth 6n+2 (20, 32, 44, 56)"
            )
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = 64
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:  # each residual branch starts as the identity (Goyal et al. 2017)
            for block in blocks:
                nn.init.zeros_(block.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.blocks(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def _check_stem(stem: str) -> None:
    # Accepted so that a config written for ResNet-18 (`stem: cifar`) can swap in these.
    if stem != "cifar":
        raise ConfigError(f"backbone.stem={stem!r}: the CIFAR ResNets only have the cifar stem")


def resnet20(
    in_channels: int = 3, image_size: int | None = None, stem: str = "cifar", zero_init_residual: bool = False
) -> CifarResNet:
    _check_stem(stem)
    return CifarResNet(20, in_channels, zero_init_residual)


def resnet32(
    in_channels: int = 3, image_size: int | None = None, stem: str = "cifar", zero_init_residual: bool = False
) -> CifarResNet:
    _check_stem(stem)
    return CifarResNet(32, in_channels, zero_init_residual)
