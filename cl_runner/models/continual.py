"""What the runner and the methods may ask of a network that learns task after task. The
incremental network (one head per task) and DER's expandable one implement it; nothing probes a
network for attributes, and wrappers (DDP, torch.compile) only run its forward pass."""

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class ContinualNet(nn.Module):
    #: the weights' own classifier can serve as a pretrained first task's head
    takes_pretrained_head: bool = False

    @property
    def task_sizes(self) -> list[int]:
        """Classes of each task seen so far, in order."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return sum(self.task_sizes)

    def add_head(self, num_classes: int) -> None:
        """Grow for a new task of `num_classes` classes (a head; DER: also an extractor)."""
        raise NotImplementedError

    def forward(self, x):
        """{"logits": all seen classes' logits, "features": what they are computed from, ...}."""
        raise NotImplementedError

    def head_parameters(self) -> list[nn.Parameter]:
        """The newest task's own output layer: what a head-only warm-up trains."""
        raise NotImplementedError

    def old_head_parameters(self) -> list[nn.Parameter]:
        """Earlier tasks' own output layers (kept fixed in a sequence of data sets)."""
        return []

    def classifier_parameters(self) -> list[nn.Parameter]:
        """Everything between the features and the logits: what a classifier-only stage trains."""
        raise NotImplementedError

    def shared_batchnorms(self) -> list[_BatchNorm]:
        """BatchNorm layers every task goes through (`train.fix_bn` fixes them after the first)."""
        return []

    def load_pretrained_head(self, classifier: dict) -> None:
        """The newest head becomes the pretrained weights' classifier (state dict of a Linear)."""
        raise NotImplementedError(f"{type(self).__name__} cannot take the weights' classifier as a head")

    def param_counts(self) -> dict[str, int]:
        return {"params": sum(p.numel() for p in self.parameters())}


class WeightHeads(ContinualNet):
    """A backbone and one weight matrix per task in `heads` (an `nn.ParameterList`), no bias:
    UCIR's cosine classifier, PODNet's proxies. A classifier-only stage trains every task's
    matrix, not the scale the subclass keeps beside them."""

    backbone: nn.Module
    heads: nn.ParameterList

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    def head_parameters(self) -> list[nn.Parameter]:
        return [self.heads[-1]]

    def old_head_parameters(self) -> list[nn.Parameter]:
        return list(self.heads)[:-1]

    def classifier_parameters(self) -> list[nn.Parameter]:
        return list(self.heads)

    def shared_batchnorms(self) -> list[_BatchNorm]:
        return [m for m in self.backbone.modules() if isinstance(m, _BatchNorm)]
