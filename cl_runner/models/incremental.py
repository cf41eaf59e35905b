"""A feature extractor with one linear head per task.

Class-IL logits are the heads concatenated in task order; task-IL evaluation reads only the
slice of a task's own head (see `evaluate.py`).
"""

import torch
from torch import nn


class IncrementalNet(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleList()

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    @property
    def num_classes(self) -> int:
        return sum(head.out_features for head in self.heads)

    @property
    def task_sizes(self) -> list[int]:
        return [head.out_features for head in self.heads]

    def add_head(self, num_classes: int) -> nn.Linear:
        device = next(self.backbone.parameters()).device
        head = nn.Linear(self.feature_dim, num_classes).to(device)
        self.heads.append(head)
        return head

    def param_counts(self) -> dict[str, int]:
        return {"params": sum(p.numel() for p in self.parameters())}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        logits = torch.cat([head(features) for head in self.heads], dim=1)
        return {"logits": logits, "features": features}
