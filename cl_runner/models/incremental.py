"""A feature extractor with one linear head per task.

Class-IL logits are the heads concatenated in task order; task-IL evaluation reads only the
slice of a task's own head (see `evaluate.py`).
"""

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cl_runner.models.continual import ContinualNet


class IncrementalNet(ContinualNet):
    takes_pretrained_head = True

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleList()

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

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

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.heads[-1].parameters())

    def old_head_parameters(self) -> list[nn.Parameter]:
        return [p for head in list(self.heads)[:-1] for p in head.parameters()]

    def classifier_parameters(self) -> list[nn.Parameter]:
        return list(self.heads.parameters())

    def shared_batchnorms(self) -> list[_BatchNorm]:
        return [m for m in self.backbone.modules() if isinstance(m, _BatchNorm)]

    def load_pretrained_head(self, classifier: dict) -> None:
        weight = classifier["weight"]
        head = nn.Linear(weight.shape[1], weight.shape[0])
        head.load_state_dict(classifier)
        self.heads[-1] = head.to(next(self.backbone.parameters()).device)

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Every task's head on the features, concatenated in task order."""
        return torch.cat([head(features) for head in self.heads], dim=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        return {"logits": self.head_logits(features), "features": features}
