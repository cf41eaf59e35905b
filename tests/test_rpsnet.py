"""RPSNet (cl_runner/methods/rpsnet.py, models/rpsnet.py): path selection and freezing as the
official code schedules them, the merge of a layer's modules, the hybrid distillation by hand
against learner.py's formula, and the candidate stage keeping the best of its runs."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cl_runner.data.schedule import Task
from cl_runner.errors import ConfigError
from cl_runner.methods.rpsnet import RPSNetMethod
from cl_runner.models.rpsnet import ALWAYS_FIRST, SKIPS, RPSBank, RPSNet
from cl_runner.train import build_runner, run

from .conftest import TINY, make_cfg
from .tiny import make_batch

SMALL = ["method=rpsnet", "backbone=rpsnet", "backbone.width=16", "backbone.modules=3", "memory.size=40"]


def test_paths_follow_the_official_schedule():
    """Task 0: module 0; a new random path every `jump` (2) tasks, else the last one's; a path is
    frozen once its two tasks are over; what learns is the path minus the frozen modules."""
    method = RPSNetMethod(total_classes=12, jump=2, seed=3)
    net = RPSNet(RPSBank(modules=4, width=16), 12)
    paths, infers, learning = [], [], []
    for t in range(5):
        task = Task(t, (2 * t, 2 * t + 1), 2 * t)
        net.add_head(2)
        method.before_task(task, net, None)
        paths.append(method.paths[t])
        infers.append([list(row) for row in net.infer])
        learning.append(
            [
                [int(m.weight.requires_grad) for m in (row[i][0] for i in range(4))]
                for row in net.backbone.layers
            ]
        )
    column0 = [[1, 0, 0, 0]] * 9
    assert paths[0] == paths[1] == column0
    assert paths[3] == paths[2] and paths[4] != paths[2]  # drawn at 2 and 4, kept at 3
    assert all(sum(row) == 1 for row in paths[2] + paths[4])  # one module per layer (N = 1)
    assert learning[0] == learning[1] == column0  # nothing frozen during the first path's two tasks
    for t in (2, 3):  # module 0 frozen, the new path's other modules learn
        assert infers[t] == [[int(p or m == 0) for m, p in enumerate(row)] for row in paths[2]]
        assert learning[t] == [[int(p and m != 0) for m, p in enumerate(row)] for row in paths[2]]
    frozen4 = [
        [int(a or b) for a, b in zip(r0, r2, strict=True)] for r0, r2 in zip(column0, paths[2], strict=True)
    ]
    assert method.frozen(4) == frozen4


def test_a_layers_modules_on_the_path_are_what_runs():
    """Module 0 always runs in layers 1, 2, 3, 5, 7, 9; layers 4, 6, 8 run their projection and
    only the path's modules; modules off the path never run."""
    bank = RPSBank(modules=3, width=16)
    ran = []
    for layer, row in enumerate(bank.layers):
        for m, module in enumerate(row):
            module.register_forward_hook(lambda *_, key=(layer, m): ran.append(key))
    path = [[0, 0, 1]] * 9
    bank(torch.randn(2, 3, 8, 8), path)
    expected = [(layer, m) for layer in range(9) for m in (0, 2) if m == 2 or layer in ALWAYS_FIRST]
    assert sorted(ran) == expected
    assert all((layer, 0) not in ran for layer in SKIPS)
    net = RPSNet(bank, 10)
    net.infer = path
    used = sum(p.numel() for layer in range(9) for m in (0, 2) if m == 2 or layer in ALWAYS_FIRST
               for p in bank.layers[layer][m].parameters())  # fmt: skip
    skips = sum(p.numel() for p in bank.skips.parameters())
    assert net.param_counts()["params"] == used + skips + 10 * (bank.feature_dim + 1)


def test_the_imagenet_network_is_rps_nets():
    """`RPS_net` (rps_net.py): layer 1's modules a 7x7 stride-2 conv with bias, BatchNorm and ReLU
    (3 x 64 x 49 + 64 + 2 x 64 = 9,600 parameters, as the official Conv2d(3, 64, 7, 2, 3)), no
    max-pool after it, max-pools after layers 3, 5, 7, 9: 224 -> 112 -> 56 -> 28 -> 14 -> 7."""
    assert sum(p.numel() for p in RPSBank(modules=1, stem="imagenet").layers[0][0].parameters()) == 9600
    bank = RPSBank(modules=2, width=16, stem="imagenet")
    sizes = {}
    for layer, row in enumerate(bank.layers):
        row[1].register_forward_hook(lambda _m, _i, out, layer=layer: sizes.setdefault(layer, out.shape[-1]))
    features = bank(torch.randn(2, 3, 224, 224), [[0, 1]] * 9)
    assert features.shape == (2, 512 // 16)
    assert sizes == {0: 112, 1: 112, 2: 112, 3: 56, 4: 56, 5: 28, 6: 28, 7: 14, 8: 14}
    cifar, sizes = RPSBank(modules=2, width=16), {}  # RPS_net_cifar: max-pools after layers 5 and 7 only
    for layer, row in enumerate(cifar.layers):
        row[1].register_forward_hook(lambda _m, _i, out, layer=layer: sizes.setdefault(layer, out.shape[-1]))
    cifar(torch.randn(2, 3, 32, 32), [[0, 1]] * 9)
    assert sizes == {0: 32, 1: 32, 2: 32, 3: 32, 4: 32, 5: 16, 6: 16, 7: 8, 8: 8}
    with pytest.raises(ConfigError, match="backbone.stem=podnet: rpsnet has the stems cifar, imagenet"):
        RPSBank(stem="podnet")


class Fixed(nn.Module):
    """A network whose logits over all 4 classes are given."""

    def __init__(self, logits: list[float]):
        super().__init__()
        self.every = torch.tensor([logits])

    def forward(self, x):
        return {"logits": self.every[:, :4], "all_logits": self.every}


@pytest.mark.parametrize("index, phi", [(1, 1.0), (4, 5.0)])
def test_the_hybrid_distillation_is_learner_pys(index, phi):
    """u = one-hot(y) with the teacher's old logits; p = softmax(u / 2), q = softmax(z / 2) over
    all 6 classes; KD = sum max(0, p (log p - log q)) / B; phi = 1 up to `jump`, then 2.5 (s - 2)."""
    z, z_old = [2.0, -1.0, 0.5, 1.0, 0.3, -0.2], [1.5, 0.0, 9.0, 9.0, 9.0, 9.0]
    method = RPSNetMethod(total_classes=6, jump=2, rigidness=2.5)
    method.teacher = Fixed(z_old)
    task = Task(index, (2, 3), 2)
    loss, parts = method.training_loss(make_batch([[0]], [3], task), Fixed(z))
    u = [1.5, 0.0, 0.0, 1.0, 0.0, 0.0]
    p = [math.exp(v / 2) / sum(math.exp(w / 2) for w in u) for v in u]
    q = [math.exp(v / 2) / sum(math.exp(w / 2) for w in z) for v in z]
    kd = sum(max(0.0, pi * (math.log(pi) - math.log(qi))) for pi, qi in zip(p, q, strict=True))
    ce = -math.log(math.exp(z[3]) / sum(math.exp(v) for v in z[:4]))
    assert parts["kd"].item() == pytest.approx(kd, rel=1e-6)
    assert loss.item() == pytest.approx(ce + phi * kd, rel=1e-6)
    assert (
        F.kl_div(torch.tensor([q]).log(), torch.tensor([p]), reduction="none").min() < 0
    )  # the clamp matters


def test_the_candidate_stage_keeps_the_best_candidate(tmp_path):
    """Each task's kept network is the candidate with the best held-out accuracy: the held-out
    split's seen-class accuracy the run reports equals that candidate's score."""
    cfg = make_cfg(*TINY, *SMALL, "steps=2", "method.candidates=2", "validation=0.2")
    run(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    chosen = metrics["candidates"]
    assert [c["task"] for c in chosen] == [0, 1]
    for c in chosen:
        assert len(c["scores"]) == 2 and c["scores"][c["chosen"]] == max(c["scores"])
    held = metrics["validation"]["summary"]["class_il"]
    assert held["last_acc"] == pytest.approx(chosen[-1]["scores"][chosen[-1]["chosen"]], abs=1e-4)
    assert metrics["steps"][-1]["params"] < metrics["steps"][-1]["allocated"]  # the path, not the bank


def test_candidates_differ_in_their_draws(tmp_path):
    runner = build_runner(
        make_cfg(*TINY, *SMALL, "steps=2", "method.candidates=1", "validation=0.2"), tmp_path / "a"
    )
    runner.run()
    one = runner.results.candidates
    assert one == []  # a single run needs no candidate stage
    runner = build_runner(
        make_cfg(*TINY, *SMALL, "steps=2", "method.candidates=3", "validation=0.2"), tmp_path / "b"
    )
    runner.run()
    scores = [c["scores"] for c in runner.results.candidates]
    assert len({tuple(s) for s in scores}) > 0 and any(
        len(set(s)) > 1 for s in scores
    )  # not three copies of one run


def test_bad_values_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="set backbone=rpsnet"):
        build_runner(make_cfg(*TINY, "method=rpsnet", "memory.size=40"), tmp_path)
    with pytest.raises(ConfigError, match="method.select_on='train'"):
        RPSNetMethod(total_classes=10, select_on="train")
    with pytest.raises(ConfigError, match="learns from held-out images"):
        build_runner(make_cfg(*TINY, *SMALL, "validation=0"), tmp_path)
    with pytest.raises(ConfigError, match="use it with method=rpsnet"):
        run(make_cfg(*TINY, "method=finetune", "backbone=rpsnet", "backbone.width=16"), tmp_path / "other")
