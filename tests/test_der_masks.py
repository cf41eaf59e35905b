"""DER's channel masks, their sparsity loss and the real pruning of masked channels."""

import math

import pytest
import torch
from torch import nn

from cl_runner.errors import ConfigError
from cl_runner.methods.der import mask_scale
from cl_runner.models.alexnet import alexnet
from cl_runner.models.channels import ChannelPlan, ConvLink, channel_plan
from cl_runner.models.expandable import ExpandableNet, MaskSettings
from cl_runner.models.masks import ChannelMasks
from cl_runner.models.pruning import shortcut_index
from cl_runner.models.resnet18 import resnet18
from cl_runner.models.resnet_cifar import resnet20
from cl_runner.train import build_runner

from .conftest import TINY, make_cfg
from .test_der import DER_TINY, same, states

BACKBONES = {
    "resnet20": lambda: resnet20(3),
    "resnet18_cifar": lambda: resnet18(3, stem="cifar"),
    "resnet18_imagenet": lambda: resnet18(3, stem="imagenet"),
}


def randomise(net: nn.Module) -> None:
    """Masks half on, half off, and BatchNorm far from identity, so pruning has work to do."""
    for e in net.masks.embeddings:
        e.data.copy_(torch.randn_like(e))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
                m.weight.normal_()
                m.bias.normal_()


@pytest.mark.parametrize("name", BACKBONES)
def test_pruned_extractor_gives_the_outputs_of_binarised_masks(name):
    torch.manual_seed(0)
    net = ExpandableNet(BACKBONES[name](), MaskSettings())
    net.add_head(3)
    randomise(net)
    net.masks.embeddings[net.masks.plan.feature_group].data[:] = -1.0  # all off: one channel stays
    x = torch.randn(4, 3, 32, 32)
    net.eval()
    net.masks.binary = True
    with torch.no_grad():
        before = net(x)["logits"]
    dense = net.param_counts()["params"]
    net.prune_last()
    with torch.no_grad():
        after = net(x)["logits"]
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    assert net.param_counts()["params"] < 0.6 * dense  # about half of each group is gone
    assert net.param_counts()["params_unpruned"] == dense
    assert net.extractors[0].feature_dim == 1 and net.classifier.in_features == 1
    assert not any(m._forward_hooks for m in net.modules())  # pruned: no masks left


def test_shortcut_index_maps_kept_channels_and_zero_padding():
    # input channels 0, 2, 5 kept; output channel 1 was pruned from the input, 20 is zero padding
    assert shortcut_index(torch.tensor([0, 2, 5]), torch.tensor([1, 2, 5, 20])).tolist() == [3, 1, 2, 3]


def tiny_plan() -> tuple[ChannelPlan, nn.Module, nn.Module]:
    """conv a: 3 -> 4 channels, 3x3; conv b: 4 -> 2 channels, 1x1."""
    a, b = nn.Conv2d(3, 4, 3, bias=False), nn.Conv2d(4, 2, 1, bias=False)
    links = [ConvLink(a, nn.BatchNorm2d(4), None, 0), ConvLink(b, nn.BatchNorm2d(2), 0, 1)]
    plan = ChannelPlan(sizes=[4, 2], convs=links)
    return plan, a, b


def test_sparsity_loss_is_the_share_of_conv_weights_kept():
    plan, _, _ = tiny_plan()
    masks = ChannelMasks(plan)
    with torch.no_grad():
        masks.embeddings[0].copy_(torch.tensor([1.0, 1.0, -1.0, -1.0]))
        masks.embeddings[1].copy_(torch.tensor([1.0, -1.0]))
    masks.binary = True  # masks (1, 1, 0, 0) and (1, 0)
    # sum_l K_l |m_{l-1}| |m_l| / sum_l K_l c_{l-1} c_l = (9*3*2 + 1*2*1) / (9*3*4 + 1*4*2)
    assert masks.sparsity().item() == pytest.approx(56 / 116)
    masks.binary = False
    masks.train()
    masks.set_scale(0.5)
    m0, m1 = torch.sigmoid(torch.tensor(0.5)).item(), torch.sigmoid(torch.tensor(-0.5)).item()
    soft = (9 * 3 * (2 * m0 + 2 * m1) + 1 * (2 * m0 + 2 * m1) * (m0 + m1)) / 116
    assert masks.sparsity().item() == pytest.approx(soft, rel=1e-6)


def test_masks_anneal_within_the_epoch_and_are_sharp_at_test_time():
    assert mask_scale(0, 11, 400.0) == pytest.approx(1 / 400)
    assert mask_scale(10, 11, 400.0) == pytest.approx(400)
    assert mask_scale(5, 11, 400.0) == pytest.approx(1 / 400 + (400 - 1 / 400) / 2)
    assert mask_scale(0, 1, 400.0) == 400.0  # a one-batch epoch trains at s_max
    plan, _, _ = tiny_plan()
    masks = ChannelMasks(plan, s_max=400.0, init=0.01)
    masks.train()
    masks.set_scale(1 / 400)
    assert masks.mask(0)[0].item() == pytest.approx(torch.sigmoid(torch.tensor(0.01 / 400)).item())
    masks.eval()
    assert masks.mask(0)[0].item() == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item())


@pytest.mark.parametrize("compensate", [True, False])
def test_mask_gradient_compensation(compensate):
    plan, _, _ = tiny_plan()
    masks = ChannelMasks(plan, s_max=400.0, init=0.3, compensate=compensate)
    masks.train()
    s, e = 2.0, 0.3
    masks.set_scale(s)
    w = torch.tensor([1.0, -2.0, 3.0, 0.5])
    (masks.mask(0) * w).sum().backward()  # dL/dm = w
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    if compensate:  # eq. 9: s_max * sigmoid'(e) * dL/dm
        expected = 400.0 * sig(e) * (1 - sig(e)) * w
    else:  # the plain chain rule: s * sigmoid'(s e) * dL/dm
        expected = s * sig(s * e) * (1 - sig(s * e)) * w
    torch.testing.assert_close(masks.embeddings[0].grad, expected, rtol=1e-5, atol=1e-6)


def test_next_extractor_starts_from_the_unpruned_weights():
    torch.manual_seed(0)
    net = ExpandableNet(resnet20(3), MaskSettings())
    net.add_head(2)
    randomise(net)
    dense = states(net.extractors[0])
    net.prune_last()
    assert same(states(net.template), dense)
    net.add_head(2)
    assert same(states(net.extractors[1]), dense) and net.template is None
    assert all(p.requires_grad for p in net.extractors[1].parameters())
    assert not any(p.requires_grad for p in net.extractors[0].parameters())
    assert net.masks is not None and net.masks.plan.convs[0].conv is net.extractors[1].conv1
    assert not any(m._forward_hooks for m in net.extractors[0].modules())  # masks sit on the new one only
    assert net.classifier.in_features == net.extractors[0].feature_dim + 64
    assert net.aux_classifier.in_features == 64


@pytest.mark.parametrize("end_of_task", [True, False])
def test_pruned_network_survives_a_checkpoint(end_of_task):
    torch.manual_seed(0)
    x = torch.randn(3, 3, 16, 16)

    def grown() -> ExpandableNet:
        net = ExpandableNet(resnet20(3), MaskSettings())
        net.add_head(2)
        net.add_head(2)
        return net

    net = grown()
    # extractor 0 pruned (as after task 0); the last pruned too when the checkpoint ends a task
    randomise(net)
    net.extractors = net.extractors[:1]
    net.sizes, net.kept = [2], [None]
    net.classifier = nn.Linear(64, 2)
    net.aux_classifier = None
    net.prune_last()
    net.add_head(2)
    randomise(net)
    if end_of_task:
        net.prune_last()
    restored = grown()
    restored.load_state_dict(net.state_dict())
    assert (restored.masks is None) == end_of_task and (restored.template is None) != end_of_task
    net.eval(), restored.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(x)["logits"], net(x)["logits"], rtol=0, atol=0)
    assert same(states(restored), states(net))


def test_masks_need_a_backbone_with_a_channel_plan(tmp_path):
    with pytest.raises(ConfigError, match="method.prune=false"):
        channel_plan(alexnet(3, 32))
    with pytest.raises(ConfigError, match="method.prune=false"):
        build_runner(make_cfg(*DER_TINY, "backbone=alexnet"), tmp_path)
    without_pruning = [*TINY, "method=der", "memory.size=40", "backbone=alexnet", "method.prune=false"]
    assert build_runner(make_cfg(*without_pruning), tmp_path).model.masks is None


def test_sparsity_weight_controls_how_much_is_pruned(tmp_path):
    def pruned_params(weight: float) -> int:
        runner = build_runner(make_cfg(*DER_TINY, f"method.sparsity_weight={weight}"), tmp_path / str(weight))
        runner.learn(runner.benchmark.tasks[0])
        return runner.results.steps[0]["params"]

    unpruned = sum(p.numel() for p in resnet20(3).parameters())
    assert pruned_params(10.0) < pruned_params(0.0) <= unpruned + 64 * 2 + 2
