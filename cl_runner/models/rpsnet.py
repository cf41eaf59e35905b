"""RPSNet's network (Rajasegaran et al., NeurIPS 2019), as the official code builds it
(`brjathu/RPSnet`, rps_net.py `RPS_net_cifar`, and `RPS_net` for ImageNet with `stem=imagenet`):
9 layers of M parallel modules, a path choosing which modules run, one classifier over every
class of the protocol.

Widths 64, 64, 64, 128, 128, 256, 256, 512, 512 (`width` divides them); 3x3 convolutions with
bias and BatchNorm; layer 1's modules conv-BN-ReLU, the others a residual branch conv-BN-ReLU-
conv-BN. The outputs of a layer's modules on the path are summed, then

    layers 1 and 7:          x = relu(sum)                      (module 0 always on)
    layers 2, 3, 5, 9:       x = relu(sum + x)                  (module 0 always on)
    layers 4, 6, 8:          x = relu(skip(x) + sum)            (a conv-BN-ReLU projection, always on)

with 2x2 max-pooling after layers 5 and 7 and global average pooling at the end. The ImageNet
network differs in two places only: layer 1's convolutions are 7x7 with stride 2 (no max-pool
after them), and it max-pools after layers 3, 5, 7 and 9 (224 -> 112 -> 56 -> 28 -> 14 -> 7).
The path the network runs (`infer`, an L x M 0/1 list: the task's path and every frozen one) is
its state.
"""

import torch
import torch.nn.functional as F
from torch import nn

from cl_runner.errors import ConfigError
from cl_runner.models.continual import ContinualNet

WIDTHS = (64, 64, 64, 128, 128, 256, 256, 512, 512)
ALWAYS_FIRST = (0, 1, 2, 4, 6, 8)  # layers whose module 0 runs whatever the path
SKIPS = (3, 5, 7)  # layers with a projection instead of module 0 always on
RESIDUAL = (1, 2, 4, 8)  # layers adding their input
POOL_AFTER = {"cifar": (4, 6), "imagenet": (2, 4, 6, 8)}


def conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out)]


def module(layer: int, c_in: int, c_out: int, stem: str) -> nn.Sequential:
    if layer == 0 and stem == "imagenet":  # RPS_net: Conv2d(3, 64, 7, 2, 3)
        return nn.Sequential(nn.Conv2d(c_in, c_out, 7, stride=2, padding=3), nn.BatchNorm2d(c_out), nn.ReLU())
    if layer == 0:
        return nn.Sequential(*conv_bn(c_in, c_out), nn.ReLU())
    return nn.Sequential(*conv_bn(c_in, c_out), nn.ReLU(), *conv_bn(c_out, c_out))


class RPSBank(nn.Module):
    """The modules: `layers[l][m]`, and `skips[str(l)]` for layers 4, 6 and 8."""

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        modules: int = 8,
        width: int = 1,
        stem: str = "cifar",
    ):
        super().__init__()  # any image size: the features are globally average-pooled
        if stem not in POOL_AFTER:
            raise ConfigError(f"backbone.stem={stem}: rpsnet has the stems {', '.join(POOL_AFTER)}")
        widths = [w // width for w in WIDTHS]
        inputs = [in_channels, *widths[:-1]]
        self.layers = nn.ModuleList(
            nn.ModuleList(module(layer, inputs[layer], widths[layer], stem) for _ in range(modules))
            for layer in range(len(WIDTHS))
        )
        self.skips = nn.ModuleDict(
            {str(layer): nn.Sequential(*conv_bn(inputs[layer], widths[layer]), nn.ReLU()) for layer in SKIPS}
        )
        self.modules_per_layer = modules
        self.feature_dim = widths[-1]
        self.pool_after = POOL_AFTER[stem]

    def forward(self, x: torch.Tensor, path: list[list[int]] | None = None) -> torch.Tensor:
        if path is None:  # another method's network calls backbone(x)
            raise ConfigError("backbone=rpsnet is RPSNet's bank of modules: use it with method=rpsnet")
        for layer, modules in enumerate(self.layers):
            on = [m for m, used in enumerate(path[layer]) if used or (m == 0 and layer in ALWAYS_FIRST)]
            y = self.skips[str(layer)](x) if layer in SKIPS else 0
            for m in on:
                y = y + modules[m](x)
            x = F.relu(y + x if layer in RESIDUAL else y)
            if layer in self.pool_after:
                x = F.max_pool2d(x, 2)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


class RPSNet(ContinualNet):
    """The bank and one classifier over all `total_classes`; `logits` are the seen classes',
    `all_logits` every column (the distillation's softmax covers them all)."""

    def __init__(self, bank: RPSBank, total_classes: int):
        super().__init__()
        self.backbone = bank
        self.fc = nn.Linear(bank.feature_dim, total_classes)
        self.sizes: list[int] = []
        self.infer: list[list[int]] = [[0] * bank.modules_per_layer for _ in bank.layers]

    @property
    def task_sizes(self) -> list[int]:
        return list(self.sizes)

    def add_head(self, num_classes: int) -> None:
        self.sizes.append(num_classes)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.fc.parameters())

    def classifier_parameters(self) -> list[nn.Parameter]:
        return list(self.fc.parameters())

    def shared_batchnorms(self):
        return [m for m in self.backbone.modules() if isinstance(m, nn.BatchNorm2d)]

    def on_path(self) -> list[nn.Module]:
        """The modules the network runs: the path's, each layer's always-on module 0, the skips."""
        bank = self.backbone
        used = [
            bank.layers[layer][m]
            for layer, row in enumerate(self.infer)
            for m, on in enumerate(row)
            if on or (m == 0 and layer in ALWAYS_FIRST)
        ]
        return [*used, *bank.skips.values(), self.fc]

    def param_counts(self) -> dict[str, int]:
        """`params`: what the network runs (the paper's count); `allocated`: the whole bank."""
        used = sum(p.numel() for m in self.on_path() for p in m.parameters())
        return {"params": used, "allocated": sum(p.numel() for p in self.parameters())}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x, self.infer)
        every = self.fc(features)
        return {"logits": every[:, : self.num_classes], "all_logits": every, "features": features}

    def get_extra_state(self) -> dict:
        return {"sizes": list(self.sizes), "infer": [list(row) for row in self.infer]}

    def set_extra_state(self, state: dict) -> None:
        self.sizes = list(state["sizes"])
        self.infer = [list(row) for row in state["infer"]]


def rpsnet(
    in_channels: int = 3, image_size: int = 32, modules: int = 8, width: int = 1, stem: str = "cifar"
) -> RPSBank:
    """The backbone config's builder (`backbone=rpsnet`); `method=rpsnet` wraps it."""
    return RPSBank(in_channels, image_size, modules, width, stem)
