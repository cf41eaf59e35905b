"""Joint training: at every step, train on all data of every class seen so far. The upper bound.
In a sequence, all data of every set seen so far (a pretrained set's too). `head_epochs`: the
LwF paper's warm-up, which it gives joint training too."""

from cl_runner.data.schedule import Task
from cl_runner.methods.base import Method


class Joint(Method):
    all_logits = True  # every seen class is in the data

    def __init__(self, head_epochs: int = 0):
        self.head_epochs = head_epochs

    def training_classes(self, task: Task) -> range:
        return range(0, task.end)
