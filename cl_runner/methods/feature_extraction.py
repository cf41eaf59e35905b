"""Feature extraction (the LwF paper's baseline, Sec. 3): the shared layers theta_s are fixed
after the first task and only each new task's head theta_n learns, so earlier tasks' outputs
cannot change. The paper's new-task head is a two-layer network with 4096 hidden units on the
frozen features (`hidden`; 0: one linear layer, FACIL's `freezing`). A first task that is not
pretrained trains everything: the features must be learnt once."""

from functools import partial

from torch import nn

from cl_runner.data.schedule import Task
from cl_runner.methods.base import Method, require
from cl_runner.models.frozen import PartlyFrozenNet


class FeatureExtraction(Method):
    def __init__(self, hidden: int = 4096):
        require(hidden >= 0, f"method.hidden={hidden} is invalid: expected an integer >= 0")
        self.network = partial(PartlyFrozenNet, hidden=hidden)

    def before_task(self, task: Task, model: nn.Module, memory) -> None:
        if task.index > 0:
            model.freeze()
