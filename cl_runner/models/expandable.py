"""DER's expandable network (Yan, Xie, He, CVPR 2021).

One feature extractor per task: extractor t starts as a copy of extractor t-1, and every older
extractor is frozen (parameters and BatchNorm statistics) and runs forward-only. The
super-feature u = [phi_1(x), ..., phi_t(x)] feeds one classifier over all seen classes, whose old
weights are copied when it grows; an auxiliary classifier on phi_t(x) has |C_t| + 1 outputs
(all old classes are one label).
"""

import copy

import torch
from torch import nn


class ExpandableNet(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.extractors = nn.ModuleList([backbone])
        self.extractor_dim = backbone.feature_dim
        self.classifier: nn.Linear | None = None
        self.aux_classifier: nn.Linear | None = None
        self.task_sizes: list[int] = []

    @property
    def feature_dim(self) -> int:
        return self.extractor_dim * len(self.extractors)

    @property
    def num_classes(self) -> int:
        return sum(self.task_sizes)

    def add_head(self, num_classes: int) -> None:
        """Grow for a new task: a new extractor (after the first task), a wider classifier, a new
        auxiliary classifier."""
        device = next(self.extractors[0].parameters()).device
        if self.task_sizes:
            self.extractors.append(copy.deepcopy(self.extractors[-1]))
            for old in self.extractors[:-1]:
                old.requires_grad_(False)
                old.eval()
        old = self.classifier
        self.classifier = nn.Linear(self.feature_dim, self.num_classes + num_classes).to(device)
        if old is not None:
            with torch.no_grad():
                self.classifier.weight[: old.out_features, : old.in_features] = old.weight
                self.classifier.bias[: old.out_features] = old.bias
        first = not self.task_sizes
        self.aux_classifier = None if first else nn.Linear(self.extractor_dim, num_classes + 1).to(device)
        self.task_sizes.append(num_classes)

    def train(self, mode: bool = True) -> "ExpandableNet":
        super().train(mode)
        for old in self.extractors[:-1]:
            old.eval()  # frozen: their BatchNorm statistics must not move
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            old = [extractor(x) for extractor in self.extractors[:-1]]
        new = self.extractors[-1](x)
        features = torch.cat([*old, new], dim=1)
        out = {"logits": self.classifier(features), "features": features}
        if self.aux_classifier is not None:
            out["aux_logits"] = self.aux_classifier(new)
        return out
