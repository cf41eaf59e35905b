"""IMM (cl_runner/methods/imm.py): the mean and mode merges against the paper's formulas, the
L2-transfer term by hand, weight-transfer from the unmerged solution, the merge evaluated."""

import pytest
import torch
from torch import nn

from cl_runner.data.memory import ExemplarMemory
from cl_runner.data.schedule import Task
from cl_runner.errors import ConfigError
from cl_runner.methods.imm import IMM, merge
from cl_runner.models import IncrementalNet
from cl_runner.train import build_runner, train

from .conftest import TINY, make_cfg
from .tiny import Scale, make_batch

TASK0, TASK1 = Task(0, (0, 1), 0), Task(1, (2, 3), 2)


def test_mode_imm_of_two_quadratics_lands_on_the_fisher_weighted_mean():
    # two 1-D solutions: theta_1 = 0 with F = 1, theta_2 = 3 with F = 2; alpha = 1/2 each
    solutions = [{"w": torch.tensor([0.0])}, {"w": torch.tensor([3.0])}]
    fishers = [{"w": torch.tensor([1.0])}, {"w": torch.tensor([2.0])}]
    assert merge(solutions, fishers)["w"].item() == pytest.approx((0 * 1 + 3 * 2) / (1 + 2))  # = 2
    # that is the minimum of the sum of the two quadratics F_k (theta - theta_k)^2 / 2
    theta = torch.linspace(-1, 4, 5001)
    loss = 0.5 * fishers[0]["w"] * (theta - 0) ** 2 + 0.5 * fishers[1]["w"] * (theta - 3) ** 2
    assert theta[loss.argmin()].item() == pytest.approx(2.0, abs=1e-3)
    assert merge(solutions, None)["w"].item() == pytest.approx(1.5)  # mean-IMM


def test_l2_transfer_pulls_the_shared_parameters_to_the_last_solution():
    net = IncrementalNet(Scale([1.0, 2.0]))
    net.add_head(2)
    imm = IMM(mode="mean", l2=0.5)
    batch0 = make_batch([[255, 0], [0, 255]], [0, 1], TASK0)
    ce0, parts0 = imm.training_loss(batch0, net)
    assert "l2" not in parts0  # the first task: no solution to pull to
    imm.solutions = [{"w": torch.tensor([0.0, 1.0])}]
    net.add_head(2)
    batch1 = make_batch([[255, 0], [0, 255]], [2, 3], TASK1)
    loss, parts = imm.training_loss(batch1, net)
    # ||(1, 2) - (0, 1)||^2 = 2, times lambda 0.5
    assert parts["l2"].item() == pytest.approx(2.0)
    assert loss.item() == pytest.approx(parts["ce"].item() + 0.5 * 2.0)


def test_the_merge_is_evaluated_and_the_next_task_starts_from_the_unmerged_solution():
    net = IncrementalNet(Scale([1.0, 1.0]))
    net.add_head(2)
    imm = IMM(mode="mean", l2=0.0)
    imm.solutions = [{"w": torch.tensor([3.0, 3.0])}]  # theta_0
    with torch.no_grad():
        net.backbone.w.copy_(torch.tensor([1.0, 5.0]))  # theta_1 as training left it
    imm.after_task(TASK1, net, ExemplarMemory(), None)
    assert net.backbone.w.tolist() == [2.0, 4.0]  # the mean of theta_0 and theta_1, evaluated
    imm.before_task(Task(2, (4, 5), 4), net, ExemplarMemory())
    assert net.backbone.w.tolist() == [1.0, 5.0]  # weight-transfer: theta_1, not the merge


def test_mode_imm_runs_end_to_end_and_keeps_one_solution_and_fisher_per_task(tmp_path):
    runner = build_runner(make_cfg(*TINY, "method=imm", "steps=2"), tmp_path)
    results = train(runner)
    imm = runner.method
    assert len(imm.solutions) == len(imm.fishers) == 2 and results.finished
    merged = merge(imm.solutions, imm.fishers)
    for name, p in runner.model.backbone.named_parameters():
        assert torch.allclose(p, merged[name])  # the evaluated network is the merge
        assert (imm.fishers[0][name] > 0).all()  # 1e-8 floor: no division by zero


class OneLayer(nn.Module):
    """A single weight layer as the whole backbone: a linear one, or a 1x1 convolution."""

    def __init__(self, kind: str):
        super().__init__()
        self.layer = nn.Linear(3, 4) if kind == "linear" else nn.Conv2d(3, 4, 1)
        self.feature_dim = 4

    def forward(self, x):
        return self.layer(x if isinstance(self.layer, nn.Conv2d) else x.flatten(1)).flatten(1)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_drop_transfer_drops_each_units_change_from_the_last_solution(kind):
    """h = W_{k-1} x + b_{k-1} + m ((W x + b) - (W_{k-1} x + b_{k-1})) / (1 - p), one mask entry
    per image and unit, in training only; nothing left hooked after the forward pass."""
    torch.manual_seed(0)
    net = IncrementalNet(OneLayer(kind))
    net.add_head(2)
    previous = {name: torch.randn_like(p) for name, p in net.backbone.named_parameters()}
    imm = IMM(drop=0.5)
    imm.solutions = [previous]
    x = torch.randn(6, 3, 1, 1)
    with torch.no_grad():
        own = net.backbone(x)
        old = OneLayer(kind)
        old.load_state_dict(previous)
        before = old(x)
        torch.manual_seed(7)
        with imm.drop_transfer(net):
            dropped = net.backbone(x)
        torch.manual_seed(7)
        mask = torch.nn.functional.dropout(torch.ones_like(own), 0.5)  # the same draws: 0 or 1 / (1 - p)
    assert set(mask.unique().tolist()) == {0.0, 2.0}
    assert torch.allclose(dropped, before + mask * (own - before), atol=1e-6)
    assert not net.backbone.layer._forward_hooks  # the hooks live inside the forward pass only
    net.eval()
    with torch.no_grad(), imm.drop_transfer(net):
        assert torch.equal(net.backbone(x), own)  # evaluation sees the network itself


def test_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match="method.mode='median'"):
        IMM(mode="median")
    with pytest.raises(ConfigError, match="method.l2=-1"):
        IMM(l2=-1)
    with pytest.raises(ConfigError, match="method.drop=1"):
        IMM(drop=1)
