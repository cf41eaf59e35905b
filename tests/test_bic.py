"""BiC (Wu et al. 2019) by hand: the bias layer on the new classes' logits (eq. 4), its fit on a
2-class toy, the distillation weighted by old / seen classes, which corrections apply when, and
the validation images it fits on: held out of training, balanced, floor(pool / t) per class."""

import math

import pytest
import torch

from cl_runner.data.batch import TaskData
from cl_runner.data.loader import DeviceLoader
from cl_runner.data.schedule import Task
from cl_runner.methods.base import Stage
from cl_runner.methods.bic import BiC
from cl_runner.models.bias import BiasNet
from cl_runner.train import build_runner

from .conftest import TINY, make_cfg
from .tiny import Pixels, identity_augment, make_batch


def bias_net(*heads: list[list[float]]) -> BiasNet:
    net = BiasNet(Pixels(len(heads[0][0])))
    for weight in heads:
        head = net.add_head(len(weight))
        with torch.no_grad():
            head.weight.copy_(torch.tensor(weight))
            head.bias.zero_()
    return net


def test_the_correction_scales_and_shifts_only_its_tasks_logits():
    net = bias_net([[1.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]])
    with torch.no_grad():
        net.correction(1).copy_(torch.tensor([0.5, -1.0]))
    x = torch.tensor([[2.0, 4.0]])
    assert net(x)["logits"].tolist() == [[2.0, 4.0, 6.0]]  # nothing applied while a task trains
    net.applied = [1]
    assert net(x)["logits"].tolist() == [[2.0, 0.5 * 4 - 1, 0.5 * 6 - 1]]  # eq. 4


def test_the_bias_layer_fit_on_a_two_class_toy_removes_the_new_class_bias():
    """An old and a new class whose logits are biased towards the new one (+2): fitting alpha and
    beta on balanced held-out images brings beta down to cancel the bias, alpha unchanged-ish."""
    torch.manual_seed(0)
    net = bias_net([[1.0, 0.0]], [[0.0, 1.0]])
    net.heads[1].bias.data.fill_(2.0)  # the new class scores 2 higher: old images misclassified
    task1 = Task(1, (1,), 1)
    bic = BiC(beta_penalty=0.0)
    net.applied = [1]
    alpha, beta = net.correction(1)
    optimizer = torch.optim.SGD([net.correction(1)], lr=0.1, momentum=0.9)
    images = [[200, 50]] * 8 + [[50, 200]] * 8  # old class: x0 > x1; new: x1 > x0
    batch = make_batch(images, [0] * 8 + [1] * 8, task1)
    accuracy = lambda: (net(batch.clean())["logits"].argmax(1) == batch.labels).float().mean().item()  # noqa: E731
    assert accuracy() == 0.5  # every image called new
    # the stage's data, shuffled: its fixed logits computed once and looked up by position
    loader = DeviceLoader(batch.images, batch.labels, 16, True, torch.Generator().manual_seed(0))
    data = TaskData(loader, task1, identity_augment(2), torch.Generator())
    bic.stage_prepare(Stage("bias"), net, data)
    assert net.applied == [1]  # computed uncorrected, the stage's corrections left as they were
    for _ in range(300):
        (shuffled,) = list(data.epoch())
        loss, _ = bic.bias_loss(shuffled, net)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert accuracy() == 1.0 and beta.item() < -1.0


def test_distillation_is_weighted_by_the_share_of_old_classes():
    """L = lambda L_d + (1 - lambda) L_c, lambda = old / seen = 1 / 3, L_d the soft cross-entropy
    at T = 2 of the teacher's (its newest correction applied) and the student's old logits."""
    net = bias_net([[1.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]])
    with torch.no_grad():
        net.correction(0).copy_(torch.tensor([2.0, 0.5]))
    net.applied = [0]  # as the last task's stage 2 left it
    task1 = Task(1, (1, 2), 1)
    bic = BiC()
    bic.before_task(task1, net, None)
    bic.stage_start(bic.stages(task1, True)[0], net, type("D", (), {"task": task1})())
    assert net.applied == [] and bic.teacher.applied == [0]  # student uncorrected, teacher corrected
    loss, parts = bic.training_loss(make_batch([[255, 0]], [2], task1), net)  # logits (1, 0, 1)
    ce = -math.log(math.e / (2 * math.e + 1))
    kd = 0.0  # one old class: both softmaxes are 1, whatever the logits
    assert parts["ce"].item() == pytest.approx(ce) and parts["kd"].item() == pytest.approx(kd, abs=1e-7)
    assert loss.item() == pytest.approx(ce * 2 / 3 + kd / 3)


def test_stage_two_fits_on_held_out_images_balanced_over_seen_classes(tmp_path):
    runner = build_runner(make_cfg(*TINY, "method=bic", "steps=2", "memory.size=30", "validation=6",
                                   "method.val_per_class=4", "method.bias_epochs=2"), tmp_path)  # fmt: skip
    train, held = runner.benchmark.train, runner.benchmark.validation
    assert len(held) == 6 * 10 and len(train) == (20 - 6) * 10  # 6 of each class's 20, never trained on
    assert runner.memory.size == 27  # 90% of the budget for training exemplars
    seen, stage_data = {}, runner.stage_data

    def spy(task, data, stage):
        used = stage_data(task, data, stage)
        if stage.name == "bias":
            seen[task.index] = (torch.bincount(used.labels).tolist(), stage.per_class)
        return used

    runner.stage_data = spy
    results = runner.run()
    assert seen == {1: ([4] * 10, 4)}  # floor(4 / 1) of each of the 10 seen classes
    assert runner.model.applied == [1] and results.finished
    assert list(results.steps[1]["phase_seconds"])[4] == "bias"
