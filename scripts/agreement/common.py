"""What the launchers share: the protocol, the epoch cut and the result file's shape."""

import json
import os
import time
from pathlib import Path

SEEDS = [1993, 1994, 1995]
TASKS, CLASSES_PER_TASK = 5, 2


def scale_milestones(milestones: list[int], full_epochs: int, epochs: int) -> list[int]:
    """The toolbox's milestones moved to a cut schedule in proportion, rounded half up.
    Two milestones may land on one epoch: both sides then drop by gamma twice there (PyTorch's
    MultiStepLR and cl_runner's lr_factor both count repeats), so the cut stays identical."""
    return [int(m * epochs / full_epochs + 0.5) for m in milestones]


def one_thread() -> None:
    """Every training runs on one CPU thread, so that both sides' wall times compare."""
    import torch

    torch.set_num_threads(1)


def write_result(path: str, result: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, path)


def summary(curve: list[float] | None) -> dict | None:
    """Average incremental accuracy (mean of the seen-class curve) and last accuracy."""
    if not curve:
        return None
    return {"curve": [round(float(v), 2) for v in curve], "avg": sum(curve) / len(curve), "last": curve[-1]}


class Clock:
    def __init__(self):
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start
