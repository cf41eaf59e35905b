"""ResNet-18 (He et al. 2016) with either stem.

`stem="cifar"`: 3x3 conv, stride 1, no max-pool (the DER/PODNet CIFAR recipe);
`stem="imagenet"`: 7x7 conv, stride 2, then 3x3 max-pool (torchvision's layout);
`stem="podnet"`: 3x3 conv, stride 1, then 3x3 max-pool (DER's official ImageNet B50 network,
after PODNet). `zero_init_residual` starts every residual branch's last BatchNorm scale at 0,
as DER's official ResNet-18 does (torchvision's default is off).
"""

import torch
import torch.nn.functional as F
from torch import nn

from cl_runner.errors import ConfigError
from cl_runner.models.weights import load_pretrained


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.relu_out = True  # False: no ReLU after the addition (UCIR's last block, PODNet's)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity) if self.relu_out else out + identity


STEMS = {"cifar": (3, 1, False), "imagenet": (7, 2, True), "podnet": (3, 1, True)}  # kernel, stride, pool


def four_stages(block: type[nn.Module]) -> nn.Sequential:
    """ResNet-18's body: four stages of two blocks, 64 to 512 channels, stride 2 from stage 2."""
    layers, in_planes = [], 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [block(in_planes, planes, stride), block(planes, planes, 1)]
        in_planes = planes
    return nn.Sequential(*layers)


def kaiming_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class ResNet18(nn.Module):
    def __init__(
        self, in_channels: int = 3, stem: str = "cifar", zero_init_residual: bool = False, relu: str = "every"
    ):
        super().__init__()
        if stem not in STEMS:
            raise ConfigError(f"backbone.stem={stem!r} is invalid: choose from {', '.join(STEMS)}")
        kernel, stride, pool = STEMS[stem]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel, stride, kernel // 2, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            *([nn.MaxPool2d(3, 2, 1)] if pool else []),
        )
        self.layers = four_stages(BasicBlock)
        self.feature_dim = 512
        kaiming_convs(self)
        if zero_init_residual:
            for block in self.layers:
                nn.init.zeros_(block.bn2.weight)
        if relu not in ("every", "not_last", "none"):
            raise ConfigError(f"backbone.relu={relu!r} is invalid: choose from every, not_last, none")
        unrectified = {"every": [], "not_last": list(self.layers)[-1:], "none": list(self.layers)}[relu]
        for block in unrectified:
            block.relu_out = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage_outputs(x)[0]

    def stage_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The pooled features and each stage's output map (PODNet's POD-spatial reads them)."""
        x, maps = self.stem(x), []
        for index, block in enumerate(self.layers):
            x = block(x)
            if index % 2:  # two blocks a stage
                maps.append(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), maps


def resnet18(
    in_channels: int = 3,
    image_size: int | None = None,
    stem: str = "cifar",
    zero_init_residual: bool = False,
    weights: str | None = None,
    weights_data: str | None = None,
    relu: str = "every",
) -> ResNet18:
    """`weights`: imagenet (torchvision's) or a state dict's path in torchvision's layout; the
    pretrained fc is kept as `backbone.pretrained` (see weights.py)."""
    net = ResNet18(in_channels, stem, zero_init_residual, relu)
    net.pretrained = None
    if weights:
        if stem != "imagenet" or in_channels != 3:
            raise ConfigError(
                "backbone.weights needs backbone.stem=imagenet and 3-channel images (torchvision's layout)"
            )
        net.pretrained = load_pretrained(net, "resnet18", weights, weights_data)
    return net
