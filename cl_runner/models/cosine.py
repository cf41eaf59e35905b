"""UCIR's network (Hou et al., CVPR 2019): a feature extractor and a cosine-normalised classifier,

    logits_c = sigma * <f(x) / ||f(x)||, w_c / ||w_c||>,

one weight matrix per task, no bias, one learnt scale sigma (initialised to 1) shared by every
class, as the official `SplitCosineLinear` applies one sigma to the old and new classes' cosines.
A new task's rows start from U(-1/sqrt(d), 1/sqrt(d)) (`CosineLinear.reset_parameters`) until the
method imprints them."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from cl_runner.models.continual import WeightHeads


class CosineNet(WeightHeads):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ParameterList()
        self.sigma = nn.Parameter(torch.ones(()))

    @property
    def task_sizes(self) -> list[int]:
        return [len(weight) for weight in self.heads]

    def add_head(self, num_classes: int) -> None:
        device = self.sigma.device
        bound = 1 / math.sqrt(self.feature_dim)
        self.heads.append(
            nn.Parameter(torch.empty(num_classes, self.feature_dim, device=device).uniform_(-bound, bound))
        )

    def cosines(self, features: torch.Tensor) -> torch.Tensor:
        weights = torch.cat(list(self.heads))
        return F.normalize(features, dim=1) @ F.normalize(weights, dim=1).T

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        cosine = self.cosines(features)
        return {"logits": self.sigma * cosine, "features": features, "cosine": cosine}
