"""PODNet (Douillard et al. 2020) by hand: the local similarity classifier's merged proxies, the
NCA loss as the official code computes it (and as the paper writes it), POD-spatial and POD-flat
on tiny maps, the sqrt(N/T) weighting, k-means proxies for new classes and the gradient clamp."""

import math

import pytest
import torch

from cl_runner.data.schedule import Task
from cl_runner.methods.podnet import PODNet, nca_loss, pod_flat, pod_spatial
from cl_runner.models.proxies import ProxyNet
from cl_runner.models.resnet_cifar import resnet20
from cl_runner.train import build_runner

from .conftest import TINY, make_cfg


def test_a_class_similarity_is_the_softmax_weighted_mean_of_its_proxies():
    net = ProxyNet(resnet20(1), proxies=2)
    net.add_head(1)
    with torch.no_grad():
        net.heads[0].copy_(torch.zeros(2, 64))
        net.heads[0][0, 0], net.heads[0][1, 1] = 1.0, 1.0  # proxies e0 and e1
    f = torch.zeros(1, 64)
    f[0, 0] = 1.0  # along e0: distances 0 and 2, so s = (0, -2)
    s = torch.tensor([0.0, -2.0])
    want = (torch.softmax(s, 0) * s).sum().item()
    assert net.similarities(f).item() == pytest.approx(want)
    assert net.task_sizes == [1]


def test_nca_as_the_official_code_computes_it_and_as_the_paper_writes_it():
    c = torch.tensor([[-0.2, -1.0, -0.5]])
    y, eta = torch.tensor([1]), torch.tensor(3.0)
    e = [math.exp(3 * v) for v in (-0.2, -1.0, -0.5)]
    code = -math.log(e[1] / (math.exp(3 * -0.2) + e[0] + e[2]))  # the largest in the denominator again
    assert nca_loss(c, y, eta, 0.6, "code").item() == pytest.approx(code)
    assert nca_loss(c, y, eta, 5.0, "code").item() == pytest.approx(code)  # the margin cancels
    paper = max(0.0, -math.log(math.exp(3 * (-1.0 - 0.6)) / (e[0] + e[2])))
    assert nca_loss(c, y, eta, 0.6, "paper").item() == pytest.approx(paper)


def test_pod_spatial_and_flat_by_hand():
    """One 1x1-channel 2x2 map: squares (1, 4, 9, 16); pooled over width (1+4, 9+16) and height
    (1+9, 4+16), normalised; the old map 2x2 of ones gives (2, 2, 2, 2)/4."""
    new = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    old = torch.ones(1, 1, 2, 2)
    a = torch.tensor([5.0, 25.0, 10.0, 20.0])
    b = torch.tensor([2.0, 2.0, 2.0, 2.0])
    want = (a / a.norm() - b / b.norm()).norm().item()
    assert pod_spatial([new, old], [old, old]).item() == pytest.approx(want / 2)  # mean over 2 layers
    f, g = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    assert pod_flat(f, g).item() == pytest.approx(1 - 1 / math.sqrt(2))


def test_the_loss_weights_pod_by_sqrt_seen_over_new_classes(tmp_path):
    runner = build_runner(make_cfg(*TINY, "method=podnet", "steps=5", "memory.per_class=3"), tmp_path)
    runner.learn(runner.benchmark.tasks[0])
    task = runner.benchmark.tasks[1]
    runner.model.add_head(task.size)
    runner.method.before_task(task, runner.model, runner.memory)
    with torch.no_grad():  # the student drifts from its teacher
        for p in runner.model.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))
    batch = next(iter(runner.training_data(task)))
    loss, parts = runner.method.training_loss(batch, runner.model)
    factor = math.sqrt(4 / 2)  # 4 seen classes, 2 new
    want = parts["nca"] + factor * (1.0 * parts["pod_flat"] + 3.0 * parts["pod_spatial"])
    assert parts["pod_spatial"] > 0 and parts["pod_flat"] > 0
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_new_proxies_are_k_means_centres_and_old_ones_stay_out_of_the_main_stage(tmp_path):
    cfg = make_cfg(*TINY, "method=podnet", "steps=2", "memory.per_class=3", "method.proxies=3")
    runner = build_runner(cfg, tmp_path)
    runner.learn(runner.benchmark.tasks[0])
    task = runner.benchmark.tasks[1]
    runner.model.add_head(task.size)
    runner.method.before_task(task, runner.model, runner.memory)
    assert not runner.model.heads[0].requires_grad and runner.model.heads[1].requires_grad
    norm = runner.model.heads[0].norm(dim=1).mean()
    runner.method.stage_start(runner.method.stages(task, True)[0], runner.model, runner.training_data(task))
    new = runner.model.heads[1].detach()
    assert new.shape == (5 * 3, 64)
    # each class's three centres lie among its normalised features, scaled to the old proxies' norm
    runner.model.eval()
    with torch.no_grad():
        c = task.labels[0]
        images = runner.benchmark.train.images[runner.benchmark.train.labels == c]
        f = torch.nn.functional.normalize(
            runner.model.backbone(runner.benchmark.augment.normalize(images)), dim=1
        )
    centres = new[:3] / norm
    assert torch.allclose(centres.norm(dim=1), torch.ones(3), atol=0.2)  # means of unit vectors: <= 1
    nearest = torch.cdist(centres.float(), f).argmin(1)  # every centre is the mean of its cluster
    assert len(set(nearest.tolist())) == 3


def test_gradients_are_clamped_before_the_step(tmp_path):
    runner = build_runner(make_cfg(*TINY, "method=podnet", "steps=2", "memory.per_class=3"), tmp_path)
    assert runner.method.grad_clamp == 5.0
    loss_of = runner.method.training_loss
    runner.method.training_loss = lambda batch, model: tuple(  # gradients far above the bound
        (loss * 1e4 if i == 0 else loss) for i, loss in enumerate(loss_of(batch, model))
    )
    seen, clamp = [], runner.clamp_gradients

    def largest(optimizer) -> float:
        return max(p.grad.abs().max().item() for g in optimizer.param_groups for p in g["params"]
                   if p.grad is not None)  # fmt: skip

    def spy(optimizer, scaler, bound):
        before = largest(optimizer)
        clamp(optimizer, scaler, bound)
        seen.append((before, largest(optimizer)))

    runner.clamp_gradients = spy
    runner.learn(runner.benchmark.tasks[0])
    assert seen and max(b for b, _ in seen) > 5.0 and max(a for _, a in seen) == 5.0


def test_first_task_has_no_distillation():
    podnet = PODNet()
    net = ProxyNet(resnet20(3), proxies=2)
    net.add_head(2)
    podnet.before_task(Task(0, (0, 1), 0), net, None)
    assert podnet.teacher is None
