"""iCaRL (Rebuffi et al. 2017) and WA (Zhao et al. 2020) by hand on tiny linear networks: iCaRL's
BCE targets and loss (Alg. 3), WA's distillation weight, clipping and rescaled norms."""

import math

import pytest
import torch

from cl_runner.data.schedule import Task
from cl_runner.methods.icarl import ICaRL, icarl_targets
from cl_runner.methods.wa import WA, aligning_factor

from .tiny import linear_net, make_batch

TASK1 = Task(1, (2, 3), 2)


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def bce(z: float, t: float) -> float:
    return -(t * math.log(sigmoid(z)) + (1 - t) * math.log(1 - sigmoid(z)))


def test_icarl_targets_are_one_hot_with_the_old_networks_outputs_on_old_classes():
    old = torch.tensor([[0.9, 0.2], [0.3, 0.6]])
    targets = icarl_targets(torch.tensor([3, 0]), 4, old)
    # row 0: new-class image, label 3; row 1: an exemplar of old class 0, whose own column too
    # takes the old network's output (Alg. 3: q_i^y for every old y)
    assert torch.equal(targets, torch.tensor([[0.9, 0.2, 0.0, 1.0], [0.3, 0.6, 0.0, 0.0]]))
    assert torch.equal(icarl_targets(torch.tensor([1]), 2, None), torch.tensor([[0.0, 1.0]]))


def test_icarl_loss_by_hand():
    """Student logits for the image (1, 0): old head (2, 0), new head (1, -1); the teacher's old
    logits (1, 0). Label 2: targets (s(1), s(0), 1, 0); loss = sum of the four BCEs."""
    net = linear_net([[1, 0], [0, 1]], [[1, 1], [-1, 0]])
    icarl = ICaRL()
    icarl.before_task(TASK1, net, None)
    with torch.no_grad():
        net.heads[0].weight[0, 0] = 2.0  # the student drifts after the snapshot
    loss, parts = icarl.training_loss(make_batch([[255, 0]], [2], TASK1), net)
    want = bce(2, sigmoid(1)) + bce(0, sigmoid(0)) + bce(1, 1.0) + bce(-1, 0.0)
    assert loss.item() == pytest.approx(want, rel=1e-6)
    assert parts["bce"].item() == pytest.approx(want, rel=1e-6)


def test_icarl_loss_averages_over_the_batch_and_first_task_has_no_distillation():
    net = linear_net([[1, 0], [0, 1]])
    icarl = ICaRL()
    icarl.before_task(Task(0, (0, 1), 0), net, None)
    loss, _ = icarl.training_loss(make_batch([[255, 0], [0, 255]], [0, 0], Task(0, (0, 1), 0)), net)
    want = (bce(1, 1) + bce(0, 0) + bce(0, 1) + bce(1, 0)) / 2
    assert loss.item() == pytest.approx(want, rel=1e-6)


def test_wa_loss_weights_distillation_by_the_share_of_old_classes():
    """L = (1 - l) CE + l KL(teacher || student) at T = 2, l = old / seen = 2 / 4."""
    net = linear_net([[1, 0], [0, 1]], [[1, 1], [-1, 0]])
    wa = WA(T=2.0)
    wa.before_task(TASK1, net, None)
    with torch.no_grad():
        net.heads[0].weight[0, 0] = 2.0
    batch = make_batch([[255, 0]], [2], TASK1)
    batch.rehearsal = True  # exemplars in the data: the cross-entropy covers all seen classes
    loss, parts = wa.training_loss(batch, net)
    logits = [2.0, 0.0, 1.0, -1.0]
    ce = -logits[2] + math.log(sum(math.exp(z) for z in logits))
    p = [sigmoid(0.5), 1 - sigmoid(0.5)]  # teacher: softmax((1, 0) / 2)
    q = [sigmoid(1.0), 1 - sigmoid(1.0)]  # student: softmax((2, 0) / 2)
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert parts["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert parts["kd"].item() == pytest.approx(kl, rel=1e-5)
    assert loss.item() == pytest.approx(0.5 * ce + 0.5 * kl, rel=1e-5)


def test_wa_aligns_the_new_norms_to_the_old_and_clips_negative_weights():
    # old rows' norms 5 and 3 (mean 4); new rows' norms 1 and 3 (mean 2): gamma = 2
    net = linear_net([[3, 4], [0, 3]], [[1, 0], [0, -3]], biases=[[0.0, 0.0], [0.5, -1.0]])
    assert aligning_factor(net.heads[0].weight, net.heads[1].weight).item() == pytest.approx(2.0)
    wa = WA(clip=True)
    wa.after_step(net, 0.1, 0.9)
    assert torch.equal(net.heads[1].weight, torch.tensor([[1.0, 0.0], [0.0, 0.0]]))  # -3 clipped
    net = linear_net([[3, 4], [0, 3]], [[1, 0], [0, 3]], biases=[[0.0, 0.0], [0.5, -1.0]])
    wa.after_task(TASK1, net, None, None)
    assert torch.allclose(net.heads[1].weight, torch.tensor([[2.0, 0.0], [0.0, 6.0]]))
    new_norms, old_norms = net.heads[1].weight.norm(dim=1), net.heads[0].weight.norm(dim=1)
    assert new_norms.mean().item() == pytest.approx(old_norms.mean().item())
    assert torch.allclose(net.heads[1].bias, torch.tensor([1.0, -2.0]))  # the new logits x gamma
    assert torch.equal(net.heads[0].weight, torch.tensor([[3.0, 4.0], [0.0, 3.0]]))  # old unchanged


def test_wa_leaves_the_first_task_and_unclipped_weights_alone():
    net = linear_net([[1, -2]])
    before = net.heads[0].weight.clone()
    WA(clip=False).after_step(net, 0.1, 0.9)
    WA().after_task(Task(0, (0,), 0), net, None, None)
    assert torch.equal(net.heads[0].weight, before)
