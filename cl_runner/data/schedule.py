"""Class order and the split of classes into tasks.

Labels are remapped once so that the class at position k of the order gets label k; task t then
owns the contiguous labels [offset, offset + size).
"""

from dataclasses import dataclass

import numpy as np
import torch

from cl_runner.errors import ConfigError


@dataclass(frozen=True)
class Task:
    index: int
    classes: tuple[int, ...]  # original class ids, in class order
    offset: int  # first (remapped) label of this task
    name: str | None = None  # a sequence's data set (one task each); None: a class split
    pretrained: bool = False  # learnt by the pretrained backbone already: its head is given, not trained
    multilabel: bool = False  # several classes per image (VOC): a sigmoid/BCE head, scored by mAP

    @property
    def size(self) -> int:
        return len(self.classes)

    @property
    def end(self) -> int:
        """One past the last label of this task = number of classes seen so far."""
        return self.offset + self.size

    @property
    def labels(self) -> range:
        return range(self.offset, self.end)


def class_order(num_classes: int, seed: int | None, explicit: list[int] | None = None) -> list[int]:
    """An explicit order (DER's official CIFAR-100 configs use PODNet's), else numpy
    RandomState(seed).permutation: the order iCaRL and PyCIL use with seed 1993."""
    if explicit is not None:
        explicit = list(explicit)
        if sorted(explicit) != list(range(num_classes)):
            n = len(explicit)
            problem = "repeats or out-of-range ids" if n == num_classes else f"{n} entries"
            raise ConfigError(
                f"class_order must list each of the {num_classes} classes 0..{num_classes - 1} "
                f"once (got {problem})"
            )
        return explicit
    if seed is None:
        return list(range(num_classes))
    return np.random.RandomState(seed).permutation(num_classes).tolist()


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def task_sizes(num_classes: int, steps: int, init_classes: int | None) -> list[int]:
    """B0: `steps` equal tasks. B<init>: a base task of `init_classes`, then `steps` equal tasks.

    This is the papers' convention: CIFAR-100 "B50, 10 steps" is 50 classes, then 10 x 5.
    """
    if init_classes is None:
        if num_classes % steps:
            raise ConfigError(
                f"steps={steps} does not split the {num_classes} classes evenly; "
                f"steps that work: {', '.join(map(str, _divisors(num_classes)))}"
            )
        return [num_classes // steps] * steps
    if not 0 < init_classes < num_classes:
        raise ConfigError(
            f"init_classes={init_classes} is out of range; it must be between 1 and "
            f"{num_classes - 1} (the data set has {num_classes} classes), or null for equal tasks"
        )
    rest = num_classes - init_classes
    if rest % steps:
        raise ConfigError(
            f"with init_classes={init_classes}, the remaining {rest} classes do not split into "
            f"steps={steps} equal steps; steps that work: {', '.join(map(str, _divisors(rest)))}"
        )
    return [init_classes] + [rest // steps] * steps


def make_schedule(
    num_classes: int,
    steps: int,
    init_classes: int | None,
    order_seed: int | None,
    explicit_order: list[int] | None = None,
):
    order = class_order(num_classes, order_seed, explicit_order)
    tasks, offset = [], 0
    for index, size in enumerate(task_sizes(num_classes, steps, init_classes)):
        tasks.append(Task(index, tuple(order[offset : offset + size]), offset))
        offset += size
    return order, tasks


def remap_labels(labels: torch.Tensor, order: list[int]) -> torch.Tensor:
    """Original class id -> its position in the class order."""
    position = torch.empty(len(order), dtype=torch.long)
    position[torch.tensor(order)] = torch.arange(len(order))
    return position.to(labels.device)[labels]
