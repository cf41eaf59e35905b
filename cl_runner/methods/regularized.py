"""What MAS, EWC and SI share: the loss adds `weight` x a quadratic penalty that anchors the
parameters (penalty.py), and SGD meets it in one of two ways.

`update="gradient"` adds the penalty's gradient to the loss's before momentum: the papers' loss
as written, and their code. It diverges once lr x 2 weight x Omega exceeds 2(1 + momentum), which
importances easily reach on small data sets (EWC at FACIL's lambda = 5000 on digits does).
`update="proximal"` (default) takes the exact proximal step after the SGD step, with the step
size momentum SGD really takes, eta = lr / (1 - momentum): its fixed point is the papers',
grad L + 2 weight Omega (theta - theta*) = 0, and it is stable for any step size.
"""

import torch
from torch import nn

from cl_runner.methods.base import Batch, Method, require
from cl_runner.methods.penalty import QuadraticPenalty

UPDATES = ("proximal", "gradient")


class Regularized(Method):
    #: the penalty's name among the loss's logged parts
    part: str = "penalty"

    def __init__(self, update: str = "proximal"):
        require(update in UPDATES, f"method.update={update!r}: choose proximal, gradient")
        self.update = update
        self.penalty = QuadraticPenalty()

    @property
    def weight(self) -> float:
        """The penalty's factor in the loss."""
        raise NotImplementedError

    def training_loss(self, batch: Batch, model: nn.Module) -> tuple[torch.Tensor, dict]:
        ce, parts = super().training_loss(batch, model)
        if not self.penalty:
            return ce, parts
        if self.update == "gradient":
            reg = self.penalty(model)
            return ce + self.weight * reg, {**parts, self.part: reg.detach()}
        # after_step applies the penalty; it is reported once an epoch, at its last batch,
        # weighted so that the epoch's average of the parts reads as that value
        if batch.index == batch.count - 1:
            parts[self.part] = self.penalty.value(model) * batch.count
        return ce, parts

    def after_step(self, model: nn.Module, lr: float, momentum: float) -> None:
        if self.update == "proximal" and self.penalty:
            self.penalty.proximal_step(model, lr / (1 - momentum), self.weight)

    def state_dict(self) -> dict:
        return self.penalty.state_dict()

    def load_state_dict(self, state: dict, model: nn.Module) -> None:
        self.penalty.load_state_dict(state)
