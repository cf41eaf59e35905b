"""An incremental network whose shared layers stop learning after the first task: the feature
extraction and fine-tune-FC baselines of the LwF paper. Frozen layers keep their weights
(requires_grad off, so the optimizer never sees them, weight decay included) and run in eval
mode (no dropout, BatchNorm statistics kept)."""

from torch import nn

from cl_runner.models.incremental import IncrementalNet


class MLPHead(nn.Sequential):
    """A task head with one hidden layer (the LwF paper's feature-extraction head)."""

    def __init__(self, in_features: int, hidden: int, num_classes: int):
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    @property
    def out_features(self) -> int:
        return self[-1].out_features


class PartlyFrozenNet(IncrementalNet):
    def __init__(self, backbone: nn.Module, keep_learning: tuple[str, ...] = (), hidden: int = 0):
        """`keep_learning`: names of backbone children that still learn once frozen (fc);
        `hidden` > 0: new heads get a hidden layer of that width."""
        super().__init__(backbone)
        self.keep_learning, self.hidden = keep_learning, hidden
        self.frozen = False

    def make_head(self, num_classes: int) -> nn.Module:
        if not self.hidden:
            return super().make_head(num_classes)
        return MLPHead(self.feature_dim, self.hidden, num_classes)

    def frozen_modules(self) -> list[nn.Module]:
        return [m for name, m in self.backbone.named_children() if name not in self.keep_learning]

    def freeze(self) -> None:
        self.frozen = True
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> "PartlyFrozenNet":
        super().train(mode)
        if getattr(self, "frozen", False):
            for module in self.frozen_modules():
                module.eval()
        return self

    def get_extra_state(self) -> dict:
        return {"frozen": self.frozen}

    def set_extra_state(self, state: dict) -> None:
        if state["frozen"]:
            self.freeze()
