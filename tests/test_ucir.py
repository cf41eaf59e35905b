"""UCIR (Hou et al. 2019) by hand: the cosine classifier with its shared scale, the margin
ranking loss and the adaptive less-forget weight, imprinted new weights, frozen old ones, and the
class-balanced fine-tuning that moves every class's weights and nothing else."""

import math

import pytest
import torch

from cl_runner.data.schedule import Task
from cl_runner.methods.ucir import UCIR, adaptive_weight, less_forget, margin_ranking
from cl_runner.models.cosine import CosineNet
from cl_runner.train import build_runner

from .conftest import TINY, make_cfg
from .tiny import Pixels, make_batch


def cosine_net(*heads: list[list[float]], sigma: float = 1.0) -> CosineNet:
    net = CosineNet(Pixels(len(heads[0][0])))
    for weight in heads:
        net.add_head(len(weight))
        with torch.no_grad():
            net.heads[-1].copy_(torch.tensor(weight))
    with torch.no_grad():
        net.sigma.fill_(sigma)
    return net


def test_logits_are_sigma_times_the_cosines_of_features_and_weights():
    net = cosine_net([[2.0, 0.0], [1.0, 1.0]], [[0.0, -3.0]], sigma=4.0)
    out = net(torch.tensor([[3.0, 4.0]]))  # features (3, 4), |f| = 5
    cosines = [3 / 5, (3 + 4) / (5 * math.sqrt(2)), -4 / 5]
    assert out["cosine"].flatten().tolist() == pytest.approx(cosines)
    assert out["logits"].flatten().tolist() == pytest.approx([4 * c for c in cosines])
    assert net.task_sizes == [2, 1] and net.classifier_parameters() == list(net.heads)


def test_adaptive_weight_and_less_forget_by_hand():
    assert adaptive_weight(5.0, 50, 10) == pytest.approx(5 * math.sqrt(5))  # 11.18, B50 10 steps
    assert adaptive_weight(5.0, 98, 2) == pytest.approx(35.0)
    f, old = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert less_forget(f, old).item() == pytest.approx(((1 - 1 / math.sqrt(2)) + 0) / 2)


def test_margin_ranking_takes_the_k_hardest_new_classes_of_old_class_images_only():
    """Two old classes (0, 1) and three new: row 0 (label 0) and row 2 (label 1) are anchors,
    row 1 (a new class) is not. K = 2, m = 0.5: max(0, m - cos_y + cos_k) over the 4 pairs."""
    cosine = torch.tensor([[0.9, 0.1, 0.7, 0.2, 0.5],
                           [0.0, 0.0, 0.9, 0.9, 0.9],
                           [0.3, 0.2, 0.1, 0.6, -0.2]])  # fmt: skip
    labels = torch.tensor([0, 3, 1])
    pairs = [0.5 - 0.9 + 0.7, 0.5 - 0.9 + 0.5, 0.5 - 0.2 + 0.6, 0.5 - 0.2 + 0.1]
    want = sum(max(0.0, p) for p in pairs) / 4
    assert margin_ranking(cosine, labels, 2, 0.5, 2).item() == pytest.approx(want)
    assert margin_ranking(cosine[1:2], labels[1:2], 2, 0.5, 2).item() == 0.0  # no old class: 0


class Linear2(torch.nn.Linear):
    feature_dim = 2

    def __init__(self):
        super().__init__(2, 2, bias=False)
        with torch.no_grad():
            self.weight.copy_(torch.eye(2))

    def forward(self, x):
        return super().forward(x.flatten(1))


def test_loss_is_ce_plus_adaptive_less_forget_plus_margin_ranking():
    """One old class (weights (1, 0)), two new; the extractor moves after the snapshot, so the
    features (1, 0) and (0, 1) of the old network become (1, 1) and (0, 1)."""
    net = CosineNet(Linear2())
    for weight in ([[1.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]):
        net.add_head(len(weight))
        with torch.no_grad():
            net.heads[-1].copy_(torch.tensor(weight))
    with torch.no_grad():
        net.sigma.fill_(2.0)
    task1 = Task(1, (1, 2), 1)
    ucir = UCIR(lambda_base=5.0)
    ucir.before_task(task1, net, None)
    assert not net.heads[0].requires_grad and net.heads[1].requires_grad  # old weights frozen
    with torch.no_grad():
        net.backbone.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))  # f = (x0, x0 + x1)
    batch = make_batch([[255, 0], [0, 255]], [0, 1], task1)
    loss, parts = ucir.training_loss(batch, net)
    r = 1 / math.sqrt(2)
    cos = torch.tensor([[r, r, 1.0], [0.0, 1.0, r]])  # f = (1, 1) and (0, 1) against the weights
    ce = torch.nn.functional.cross_entropy(2 * cos, torch.tensor([0, 1])).item()
    lf = ((1 - r) + 0.0) / 2  # cos((1, 1), (1, 0)) and cos((0, 1), (0, 1))
    mr = (max(0, 0.5 - r + 1.0) + max(0, 0.5 - r + r)) / 2  # row 0 the only anchor, K = 2
    lamb = 5.0 * math.sqrt(1 / 2)  # one old class, two new
    assert (parts["ce"].item(), parts["lf"].item(), parts["mr"].item()) == pytest.approx((ce, lf, mr))
    assert loss.item() == pytest.approx(ce + lamb * lf + mr)


@pytest.fixture
def ucir_runner(tmp_path):
    settings = ["method=ucir", "steps=2", "memory.per_class=5", "method.cbf_epochs=2", "train.epochs=1"]
    cfg = make_cfg(*TINY, *settings)
    return build_runner(cfg, tmp_path)


def test_new_weights_are_imprinted_from_the_previous_networks_features(ucir_runner):
    runner = ucir_runner
    runner.learn(runner.benchmark.tasks[0])
    task = runner.benchmark.tasks[1]
    data = runner.training_data(task)
    runner.model.add_head(task.size)
    runner.method.before_task(task, runner.model, runner.memory)
    old_norm = runner.model.heads[0].norm(dim=1).mean()
    runner.method.stage_start(runner.method.stages(task, True)[0], runner.model, data)
    new = runner.model.heads[1]
    runner.model.eval()
    with torch.no_grad():
        for j, c in enumerate(task.labels):
            images = runner.benchmark.train.images[runner.benchmark.train.labels == c]
            f = runner.model.backbone(runner.benchmark.augment.normalize(images))
            mean = torch.nn.functional.normalize(f, dim=1).mean(0)
            torch.testing.assert_close(new[j], torch.nn.functional.normalize(mean, dim=0) * old_norm)


def test_class_balanced_fine_tuning_moves_every_class_weight_and_nothing_else(ucir_runner):
    runner = ucir_runner
    runner.learn(runner.benchmark.tasks[0])
    original, seen = runner.run_stage, {}

    def spy(task, data, stage):
        if stage.name == "balanced":
            seen["before"] = {k: v.clone() for k, v in runner.model.state_dict().items()}
            seen["counts"] = None
        original(task, data, stage)
        if stage.name == "balanced":
            seen["after"] = {k: v.clone() for k, v in runner.model.state_dict().items()}

    runner.run_stage = spy
    runner.learn(runner.benchmark.tasks[1])
    before, after = seen["before"], seen["after"]
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == {"heads.0", "heads.1"}  # old and new classes' weights; sigma, backbone, BN fixed
    assert not runner.model.heads[0].requires_grad  # frozen again after the stage
