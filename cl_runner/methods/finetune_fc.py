"""Fine-tune FC (the LwF paper's baseline, Sec. 3): after the first task the convolutional layers
are fixed and only the fully connected layers (AlexNet's fc6-fc7, the backbone's `fc`) and the
heads learn. A ResNet backbone has no fully connected shared layer: there it equals feature
extraction with linear heads."""

from functools import partial

from torch import nn

from cl_runner.data.schedule import Task
from cl_runner.methods.base import Method
from cl_runner.models.frozen import PartlyFrozenNet


class FinetuneFC(Method):
    def __init__(self, head_epochs: int = 0):
        self.network = partial(PartlyFrozenNet, keep_learning=("fc",))
        self.head_epochs = head_epochs  # the LwF paper's warm-up

    def before_task(self, task: Task, model: nn.Module, memory) -> None:
        if task.index > 0:
            model.freeze()
