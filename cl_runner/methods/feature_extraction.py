"""Feature extraction (the LwF paper's baseline, Sec. 3): the shared layers theta_s are fixed
after the first task and only each new task's head theta_n learns, so earlier tasks' outputs
cannot change. The paper's new-task head is a two-layer network with 4096 hidden units on the
frozen features (`hidden`; 0: one linear layer, FACIL's `freezing`), trained at 5x the rate the
other methods use (`lr_scale`). A first task that is not pretrained trains everything: the
features must be learnt once. `head_epochs` (a warm-up, as the other methods of the LwF table
take) adds epochs of the same training, since only heads learn anyway."""

from functools import partial

from torch import nn

from cl_runner.data.schedule import Task
from cl_runner.methods.base import Method, require
from cl_runner.models.frozen import PartlyFrozenNet


class FeatureExtraction(Method):
    def __init__(self, hidden: int = 4096, lr_scale: float = 5.0, head_epochs: int = 0):
        require(hidden >= 0, f"method.hidden={hidden} is invalid: expected an integer >= 0")
        require(lr_scale > 0, f"method.lr_scale={lr_scale} is invalid: expected a number > 0")
        self.network = partial(PartlyFrozenNet, hidden=hidden)
        self.lr_scale, self.head_epochs = lr_scale, head_epochs

    def before_task(self, task: Task, model: nn.Module, memory) -> None:
        if task.index > 0:
            model.freeze()
