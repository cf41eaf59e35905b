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

    def make_head(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.feature_dim, num_classes)

    def add_head(self, num_classes: int) -> nn.Module:
        device = next(self.backbone.parameters()).device
        head = self.make_head(num_classes).to(device)
        self.heads.append(head)
        return head

    def load_pretrained_head(self) -> None:
        """The last head becomes the pretrained network's own classifier (`backbone.pretrained`)."""
        weight = self.backbone.pretrained.classifier["weight"]
        head = nn.Linear(weight.shape[1], weight.shape[0]).to(weight.device)
        head.load_state_dict(self.backbone.pretrained.classifier)
        self.heads[-1] = head.to(next(self.backbone.parameters()).device)

    def param_counts(self) -> dict[str, int]:
        return {"params": sum(p.numel() for p in self.parameters())}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        logits = torch.cat([head(features) for head in self.heads], dim=1)
        return {"logits": logits, "features": features}
