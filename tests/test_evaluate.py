"""Class-IL and task-IL accuracy from a model whose logits are fixed by hand."""

import pytest
import torch
from torch import nn

from cl_runner.data.images import ImageSet
from cl_runner.data.schedule import Task
from cl_runner.evaluate import evaluate
from cl_runner.modes import eval_mode


class FixedLogits(nn.Module):
    """Returns row i of `table` for the image whose pixel value is i."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float32)

    def forward(self, x):
        i = x.view(len(x), -1)[:, 0].long()
        return {"logits": self.table[i], "features": self.table[i]}


def test_per_task_class_il_and_task_il():
    tasks = [Task(0, (7, 3), 0), Task(1, (1, 5), 2)]
    labels = [0, 1, 2, 3]
    table = [
        [5, 1, 9, 0],  # label 0: class-IL says 2 (wrong), own head {0,1} says 0 (right)
        [0, 4, 1, 1],  # label 1: right in both
        [1, 0, 3, 7],  # label 2: class-IL 3 (wrong), own head {2,3} says 3 (wrong)
        [0, 0, 1, 2],  # label 3: right in both
    ]
    test = ImageSet(torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1), torch.tensor(labels))
    ev = evaluate(FixedLogits(table), test, tasks, lambda x: x.float(), batch_size=3)
    assert ev.class_il == [50.0, 50.0]
    assert ev.task_il == [100.0, 50.0]
    assert ev.seen_acc == 50.0
    assert ev.seen_acc_task_il == 75.0
    assert ev.old_acc == 50.0 and ev.new_acc == 50.0
    assert ev.seen_acc_top5 == 100.0  # 4 classes: top-5 holds them all


def test_unseen_classes_are_left_out():
    tasks = [Task(0, (0, 1), 0)]
    test = ImageSet(torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1), torch.tensor([0, 1, 2, 3]))
    table = [[1, 0], [1, 0], [0, 1], [0, 1]]
    ev = evaluate(FixedLogits(table), test, tasks, lambda x: x.float(), batch_size=2)
    assert ev.class_il == [50.0] and ev.seen_acc == pytest.approx(50.0)
    assert ev.old_acc is None


def test_a_multilabel_task_scores_map_and_stays_out_of_the_pooled_accuracies():
    tasks = [Task(0, (0, 1), 0, "digits"), Task(1, (2, 3), 2, "voc2012", multilabel=True)]
    labels = [0, 1, 2, 3]
    table = [
        [5, 1, 0, 0],  # digits, label 0: right
        [3, 1, 0, 0],  # digits, label 1: wrong
        [0, 0, 0.9, 0.2],  # VOC image with class 2 present, class 3 absent
        [0, 0, 0.1, 0.8],  # VOC image with class 3 present, class 2 absent
    ]
    targets = torch.tensor([[0, 0], [0, 0], [1, -1], [-1, 1]], dtype=torch.int8)
    test = ImageSet(torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1), torch.tensor(labels), targets)
    ev = evaluate(FixedLogits(table), test, tasks, lambda x: x.float(), batch_size=3)
    assert ev.task_il == [50.0, 100.0] and ev.class_il == [50.0, 100.0]  # VOC: mAP, both classes ranked first
    assert ev.seen_acc == 50.0 and ev.seen_acc_task_il == 50.0  # the digits alone
    assert ev.new_acc == 100.0
    # VOC as the first task: nothing single-label is seen yet, its mAP stands for the pooled numbers
    voc_first = [Task(0, (0, 1), 0, "voc2012", multilabel=True)]
    test = ImageSet(torch.arange(2, dtype=torch.uint8).view(2, 1, 1, 1), torch.tensor([0, 1]), targets[2:])
    ev = evaluate(FixedLogits([[0.9, 0.2], [0.1, 0.8]]), test, voc_first, lambda x: x.float(), batch_size=3)
    assert ev.seen_acc == 100.0 and ev.seen_acc_task_il == 100.0 and ev.task_il == [100.0]
    # then the digits: old classes are VOC's alone, so the old accuracy is its mAP
    tasks = [*voc_first, Task(1, (2, 3), 2, "digits")]
    table = [[0.9, 0.2, 0, 0], [0.1, 0.8, 0, 0], [0, 0, 5, 1], [0, 0, 3, 1]]
    marks = torch.tensor([[1, -1], [-1, 1], [0, 0], [0, 0]], dtype=torch.int8)
    test = ImageSet(torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1), torch.tensor([0, 1, 2, 3]), marks)
    ev = evaluate(FixedLogits(table), test, tasks, lambda x: x.float(), batch_size=3)
    assert ev.old_acc == 100.0 and ev.new_acc == 50.0 and ev.seen_acc == 50.0


def test_eval_mode_gives_the_model_its_own_mode_back_even_after_an_error():
    model = nn.Sequential(nn.BatchNorm1d(2))
    for training in (True, False):
        model.train(training)
        with pytest.raises(KeyboardInterrupt), eval_mode(model):
            assert not model.training and not model[0].training
            raise KeyboardInterrupt  # a Ctrl-C in evaluation or DER's balanced stage
        assert model.training is training and model[0].training is training
