"""PODNet's network (Douillard et al., ECCV 2020): a backbone that also returns each stage's
output map, and the local similarity classifier (LSC): K proxies per class, each class's
similarity the softmax-weighted mean of its proxies' similarities,

    s_{c,k} = -|| f/|f| - theta_{c,k}/|theta_{c,k}| ||^2  (= 2 cos - 2, the official distance),
    c_y = sum_k softmax_k(s_{y,k}) s_{y,k},

and a learnt scale eta (initialised to 1) that the NCA loss multiplies them by. One proxy matrix
per task; a first task's proxies are Kaiming-normal (linear gain), later ones are set by the
method (k-means of the new classes' features)."""

import torch
import torch.nn.functional as F
from torch import nn

from cl_runner.errors import ConfigError
from cl_runner.models.continual import WeightHeads


class ProxyNet(WeightHeads):
    def __init__(self, backbone: nn.Module, proxies: int = 10):
        super().__init__()
        if not hasattr(backbone, "stage_outputs"):
            raise ConfigError(
                "method=podnet needs a backbone with stage outputs: resnet20, resnet32 or resnet18"
            )
        self.backbone, self.proxies = backbone, proxies
        self.heads = nn.ParameterList()
        self.scale = nn.Parameter(torch.ones(()))  # eta of the NCA loss

    @property
    def task_sizes(self) -> list[int]:
        return [len(weight) // self.proxies for weight in self.heads]

    def add_head(self, num_classes: int) -> None:
        weight = torch.empty(num_classes * self.proxies, self.feature_dim, device=self.scale.device)
        nn.init.kaiming_normal_(weight, nonlinearity="linear")
        self.heads.append(nn.Parameter(weight))

    def similarities(self, features: torch.Tensor) -> torch.Tensor:
        """[n, classes]: each class's merged similarity c_y."""
        proxies = F.normalize(torch.cat(list(self.heads)), dim=1)
        distance = (2 - 2 * F.normalize(features, dim=1) @ proxies.T).clamp(min=0)  # |f^ - theta^|^2
        s = -distance.view(len(features), -1, self.proxies)  # [n, classes, K]
        return (F.softmax(s, dim=2) * s).sum(2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features, maps = self.backbone.stage_outputs(x)
        return {"logits": self.similarities(features), "features": features, "maps": maps}
