"""CIFAR-style ResNets (He et al. 2016, section 4.2): 3 stages of n basic blocks, 16/32/64 channels.

Depth = 6n + 2: resnet20 (n=3), resnet32 (n=5, the iCaRL/PyCIL/DER CIFAR backbone).
Shortcuts that change shape are "option A" (strided identity, zero-padded channels), as in the
original paper and the class-incremental toolboxes: they hold no parameters. The variants the
cosine-classifier methods use:

- `relu="not_last"`: no ReLU after the last block's addition, so features take either sign
  (UCIR: "the ReLU in the penultimate layer is removed"); `relu="none"`: no ReLU after any
  block's addition (PODNet's official ResNet-32, `my_resnet.py` with `last_relu=False`);
- `shortcut="B"`: a 1x1 convolution and BatchNorm where the shape changes (UCIR's official
  `modified_resnet_cifar.py`);
- `layout="podnet"`: 5/5/4 blocks and a fourth stage of one 64-channel block (PODNet's
  "rebuffi" ResNet-32); `stage_outputs` returns each stage's output for its POD-spatial loss.
"""

import torch
import torch.nn.functional as F
from torch import nn

from cl_runner.errors import ConfigError

RELUS = ("every", "not_last", "none")


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, relu_out: bool = True, shortcut: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.pad_channels = planes - in_planes
        self.relu_out = relu_out
        self.downsample = None
        if shortcut == "B" and (stride != 1 or in_planes != planes):
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )
        # Set by channel pruning: output channel -> kept input channel (or the padded zero one)
        self.register_buffer("shortcut_index", None)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            return self.downsample(x)
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.shortcut_index is not None:
            return F.pad(x, (0, 0, 0, 0, 0, 1))[:, self.shortcut_index]
        if self.pad_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad_channels))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        return F.relu(out) if self.relu_out else out


class CifarResNet(nn.Module):
    def __init__(
        self,
        depth: int,
        in_channels: int = 3,
        zero_init_residual: bool = False,
        relu: str = "every",
        shortcut: str = "A",
        layout: str = "he",
    ):
        super().__init__()
        if (depth - 2) % 6:
            raise ConfigError(
                f"backbone.depth={depth} is invalid: CIFAR ResNets have depth 6n+2 (20, 32, 44, 56)"
            )
        if relu not in RELUS:
            raise ConfigError(f"backbone.relu={relu!r} is invalid: choose from {', '.join(RELUS)}")
        if shortcut not in ("A", "B") or layout not in ("he", "podnet"):
            raise ConfigError(
                f"backbone.shortcut={shortcut!r}/layout={layout!r}: choose A or B / he or podnet"
            )
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages = [(16, 1, n), (32, 2, n), (64, 2, n)]
        if layout == "podnet":  # the same depth: one block of stage 3 moves to a stage of its own
            stages = [(16, 1, n), (32, 2, n), (64, 2, n - 1), (64, 1, 1)]
        blocks, in_planes, self.stage_ends = [], 16, []
        for planes, stride, count in stages:
            for i in range(count):
                blocks.append(
                    BasicBlock(in_planes, planes, stride if i == 0 else 1, relu == "every", shortcut)
                )
                in_planes = planes
            self.stage_ends.append(len(blocks))
        if relu == "not_last":
            blocks[-1].relu_out = False
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = 64
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:  # each residual branch starts as the identity (Goyal et al. 2017)
            for block in blocks:
                nn.init.zeros_(block.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage_outputs(x)[0]

    def stage_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The pooled features and each stage's output map (PODNet's POD-spatial reads them)."""
        x = F.relu(self.bn1(self.conv1(x)))
        maps = []
        for index, block in enumerate(self.blocks, start=1):
            x = block(x)
            if index in self.stage_ends:
                maps.append(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), maps


def _check_stem(stem: str) -> None:
    # Accepted so that a config written for ResNet-18 (`stem: cifar`) can swap in these.
    if stem != "cifar":
        raise ConfigError(f"backbone.stem={stem!r}: the CIFAR ResNets only have the cifar stem")


def resnet20(
    in_channels: int = 3,
    image_size: int | None = None,
    stem: str = "cifar",
    zero_init_residual: bool = False,
    relu: str = "every",
    shortcut: str = "A",
    layout: str = "he",
) -> CifarResNet:
    _check_stem(stem)
    return CifarResNet(20, in_channels, zero_init_residual, relu, shortcut, layout)


def resnet32(
    in_channels: int = 3,
    image_size: int | None = None,
    stem: str = "cifar",
    zero_init_residual: bool = False,
    relu: str = "every",
    shortcut: str = "A",
    layout: str = "he",
) -> CifarResNet:
    _check_stem(stem)
    return CifarResNet(32, in_channels, zero_init_residual, relu, shortcut, layout)
