"""Nearest-mean-of-exemplars evaluation (iCaRL, Alg. 1) for every method with a memory: class
means by hand, predictions by hand, and the new keys of metrics.json."""

import json

import pytest
import torch
from torch import nn

from cl_runner.data.images import ImageSet
from cl_runner.data.schedule import Task
from cl_runner.evaluate import class_means, evaluate
from cl_runner.train import run

from .conftest import TINY, make_cfg


class PixelFeatures(nn.Module):
    """features = the image's pixels as a vector; logits fixed at zero (the CNN guesses class 0)."""

    def __init__(self, classes: int):
        super().__init__()
        self.classes = classes

    def forward(self, x):
        features = x.flatten(1).float()
        return {"features": features, "logits": features.new_zeros(len(x), self.classes)}


def images(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.uint8).view(len(rows), 1, 1, 2)  # 1 channel, 1 x 2 pixels


def test_class_means_are_normalised_means_of_normalised_features():
    exemplars = ImageSet(images([[3, 4], [0, 5], [6, 0]]), torch.tensor([0, 0, 1]))
    means = class_means(PixelFeatures(2), exemplars, lambda x: x.float(), 2, classes=2, flip=False)
    # class 0: (0.6, 0.8) and (0, 1) -> mean (0.3, 0.9) -> / sqrt(0.9); class 1: (1, 0)
    norm = (0.3**2 + 0.9**2) ** 0.5
    assert torch.allclose(means, torch.tensor([[0.3 / norm, 0.9 / norm], [1.0, 0.0]]), atol=1e-6)


def test_class_means_with_mirror_images_average_both_views():
    """The official code's class mean: (mean of the features + mean of the mirrored ones) / 2."""
    exemplars = ImageSet(images([[3, 4]]), torch.tensor([0]))
    means = class_means(PixelFeatures(1), exemplars, lambda x: x.float(), 1, classes=1, flip=True)
    mean = torch.tensor([0.6 + 0.8, 0.8 + 0.6]) / 2  # (0.6, 0.8) and its mirror (0.8, 0.6)
    assert torch.allclose(means[0], mean / mean.norm(), atol=1e-6)


def test_nme_accuracy_by_hand():
    """Means: class 0 (1, 0), class 1 (0, 1), class 2 (0.6, 0.8). Test images (5, 1) -> 0,
    (1, 5) -> 1, (3, 4) -> 2, (4, 3) -> 2 (cosine 0.96 against 0.8 for class 0)."""
    tasks = [Task(0, (0, 1), 0), Task(1, (2,), 2)]
    test = ImageSet(images([[5, 1], [1, 5], [3, 4], [4, 3]]), torch.tensor([0, 1, 2, 0]))
    means = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    ev = evaluate(PixelFeatures(3), test, tasks, lambda x: x.float(), 3, means=means)
    assert ev.nme == pytest.approx([200 / 3, 100.0])  # task 0: 2 of 3 right; task 1: 1 of 1
    assert ev.seen_acc_nme == 75.0
    assert ev.class_il == pytest.approx([200 / 3, 0.0])  # the zero logits pick class 0: another classifier
    assert evaluate(PixelFeatures(3), test, tasks, lambda x: x.float(), 3).nme is None


def test_runs_with_a_memory_report_nme_beside_class_il_and_task_il(tmp_path):
    run(make_cfg(*TINY, "steps=2", "method=finetune", "memory.size=20"), tmp_path / "memory")
    metrics = json.loads((tmp_path / "memory" / "metrics.json").read_text())
    assert set(metrics["accuracy_matrix"]) == {"class_il", "task_il", "nme"}
    assert set(metrics["summary"]["nme"]) == {"avg_incremental_acc", "last_acc", "avg_forgetting", "bwt"}
    nme = metrics["accuracy_matrix"]["nme"]
    assert len(nme) == 2 and nme[0][1] is None and all(0 <= a <= 100 for a in nme[1])
    steps = metrics["steps"]
    assert steps[0]["seen_acc_nme"] == nme[0][0]
    assert len(steps[1]["forgetting_nme"]) == 1
    assert "nme_acc" in (tmp_path / "memory" / "metrics.csv").read_text().splitlines()[0]

    run(make_cfg(*TINY, "steps=2", "method=finetune"), tmp_path / "plain")
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert set(plain["accuracy_matrix"]) == {"class_il", "task_il"}  # the contract as it was
    assert "nme" not in plain["summary"] and "seen_acc_nme" not in plain["steps"][0]
