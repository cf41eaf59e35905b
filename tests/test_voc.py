"""PASCAL VOC 2012 classification, the multi-label task of the LwF table: its reader, the
devkit's average precision by hand, the BCE head's loss by hand, and a sequence that learns it."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from synthetic_sets import write_voc2012  # noqa: E402

from cl_runner.data.batch import Heads  # noqa: E402
from cl_runner.data.schedule import Task  # noqa: E402
from cl_runner.data.sets import VOC_CLASSES, voc2012  # noqa: E402
from cl_runner.errors import ConfigError  # noqa: E402
from cl_runner.methods.base import Method, multilabel_loss  # noqa: E402
from cl_runner.metrics import average_precision, mean_average_precision  # noqa: E402
from cl_runner.train import run  # noqa: E402

from .conftest import make_cfg  # noqa: E402
from .tiny import make_batch  # noqa: E402


def test_reader_gives_every_class_mark_of_every_image(tmp_path):
    write_voc2012(tmp_path)
    splits = voc2012(str(tmp_path), 32, 0)
    assert (len(splits.train), len(splits.test)) == (8, 4)
    assert splits.train.targets.shape == (8, 20) and splits.train.targets.dtype == torch.int8
    # image 3 of train: classes 3 (present) and 10 (difficult: every fourth image), the rest absent
    row = splits.train.targets[3].tolist()
    assert row[3] == 1 and row[10] == 0 and row.count(-1) == 18
    assert splits.train.labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]  # the first present class
    assert splits.train.images.paths[0].endswith("JPEGImages/2012_train_0000.jpg")


def test_reader_errors_are_one_line(tmp_path):
    write_voc2012(tmp_path)
    with open(tmp_path / "ImageSets" / "Main" / f"{VOC_CLASSES[4]}_val.txt", "a") as f:
        f.write("2012_val_0000 2\n")
    with pytest.raises(ConfigError, match=r"bottle_val.txt: '2' is not 1, 0 or -1"):
        voc2012(str(tmp_path), 32, 0)
    with pytest.raises(
        ConfigError, match=r"PASCAL VOC 2012 .* not found; set its root \(sets.voc2012.root\)"
    ):
        voc2012(str(tmp_path / "nowhere"), 32, 0)


def test_average_precision_is_the_devkits_by_hand():
    # ranked: +, -, +, -  ->  recall .5 at precision 1, recall 1 at precision 2/3:
    # AP = .5 * 1 + .5 * 2/3
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, -1, 1, -1]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # a difficult image ranked first counts neither way: the same AP
    assert average_precision([0.9, 0.8, 0.7, 0.6], [0, 1, -1, 1]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # the envelope: precision at recall r is the best at any recall >= r
    # ranked: -, +, +  ->  recall .5 at 1/2, recall 1 at 2/3 -> envelope 2/3 for both halves
    assert average_precision([3, 2, 1], [-1, 1, 1]) == pytest.approx(2 / 3)
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.7, 0.2], [0.6, 0.3]])
    targets = torch.tensor([[1, -1], [-1, 1], [1, -1], [-1, -1]])
    # class 0 as above; class 1: its one positive ranked first -> AP 1; a class without any
    # positive is left out of the mean
    assert mean_average_precision(scores, targets) == pytest.approx(100 * (0.5 + 0.5 * 2 / 3 + 1) / 2)
    absent = torch.cat([targets, -torch.ones(4, 1, dtype=torch.long)], 1)
    assert mean_average_precision(torch.cat([scores, scores[:, :1]], 1), absent) == pytest.approx(
        100 * (0.5 + 0.5 * 2 / 3 + 1) / 2
    )


def test_multilabel_loss_is_the_per_class_logistic_loss_without_difficult_marks():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -3.0]])
    targets = torch.tensor([[1, -1, 0], [-1, 1, 1]])

    def softplus(x: float) -> float:
        return float(torch.log1p(torch.exp(torch.tensor(x))))

    # -log sigmoid(z) = softplus(-z) for a present class, softplus(z) for an absent one
    by_hand = (softplus(-2.0) + softplus(-1.0)) + (softplus(0.0) + softplus(-1.0) + softplus(3.0))
    assert float(multilabel_loss(logits, targets)) == pytest.approx(by_hand)


def test_in_a_sequence_each_image_is_scored_by_its_own_head():
    """Joint training over [a 2-class set, a 3-class multi-label set]: the first row's
    cross-entropy over head 0 only, the second row's BCE over head 1 only."""
    tasks = [Task(0, (0, 1), 0, "digits"), Task(1, (2, 3, 4), 2, "voc2012", multilabel=True)]
    logits = torch.tensor([[1.0, 0.0, 5.0, -5.0, 9.0], [7.0, -7.0, 2.0, -1.0, 0.5]])
    targets = torch.tensor([[0, 0, 0], [1, -1, 0]], dtype=torch.long)
    batch = make_batch([[0], [0]], [1, 2], tasks[1])
    batch.heads, batch.targets = Heads.of(tasks, "cpu"), targets

    def softplus(x: float) -> float:
        return float(torch.log1p(torch.exp(torch.tensor(x))))

    ce = -float(torch.log_softmax(torch.tensor([1.0, 0.0]), 0)[1])  # row 0: label 1 of head 0
    bce = softplus(-2.0) + softplus(-1.0)  # row 1: class 2 present, class 3 absent, class 4 difficult
    assert float(Method().classification_loss(logits, batch)) == pytest.approx((ce + bce) / 2)


def test_a_sequence_learns_voc_with_its_bce_head_and_reports_its_map(tmp_path):
    write_voc2012(tmp_path / "voc", images=(40, 20))
    small = [f"+sets.voc2012.root={tmp_path / 'voc'}", "+sets.voc2012.size=32", "+sets.voc2012.workers=0"]
    cfg = make_cfg("method=lwf", "sequence=[digits,voc2012]", "backbone=resnet20", "device=cpu",
                   "logger=local", "train.epochs=2", "memory.size=40", *small)  # fmt: skip
    run(cfg, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "nme" not in metrics["accuracy_matrix"]  # no nearest mean for a multi-label run
    voc = metrics["accuracy_matrix"]["task_il"][1][1]
    assert voc == metrics["accuracy_matrix"]["class_il"][1][1] and 0 < voc <= 100  # mAP, where accuracy is
    assert metrics["steps"][1]["new_acc"] == voc
    # the pooled accuracies are the digits' alone
    assert metrics["steps"][1]["seen_acc_task_il"] == pytest.approx(
        metrics["accuracy_matrix"]["task_il"][1][0]
    )
    with pytest.raises(ConfigError, match="is one task of a sequence"):
        run(make_cfg("dataset=voc2012", "steps=1", "device=cpu", "logger=local", *small), tmp_path / "c")
