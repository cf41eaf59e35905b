import json
import math

import pytest
import torch

from cl_runner.data.loader import Augment
from cl_runner.data.schedule import Task
from cl_runner.methods.base import Batch
from cl_runner.methods.finetune import Finetune
from cl_runner.methods.lwf import LwF
from cl_runner.methods.mas import MAS
from cl_runner.methods.sd import SelfDistillation
from cl_runner.train import build_runner, run

from .tiny import linear_net, make_batch

TASK = Task(0, (0, 1), 0)


def with_views(sd: SelfDistillation, x_a, x_b) -> SelfDistillation:
    sd.two_views = lambda batch: (torch.tensor([x_a]), torch.tensor([x_b]))
    return sd


def test_sd_loss_by_hand():
    net = linear_net([[1.0, 0.0], [0.0, 1.0]])  # logits = features = the view itself
    sd = with_views(SelfDistillation(Finetune()), [1.0, 0.0], [0.0, 1.0])
    loss, parts = sd.training_loss(make_batch([[0, 0]], [0], TASK), net)
    ce_a = math.log(1 + math.exp(-1))  # logits (1, 0), label 0
    ce_b = math.log(1 + math.exp(1))  # logits (0, 1), label 0
    p, q = 1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))  # p_a = (p, q), p_b = (q, p)
    kl_one_way = p * math.log(p / q) + q * math.log(q / p)
    mmd = (1 - 0) ** 2 + (0 - 1) ** 2
    assert parts["ce"].item() == pytest.approx(ce_a, abs=1e-6)
    assert parts["sd_ce_b"].item() == pytest.approx(ce_b, abs=1e-6)
    assert parts["sd_kl"].item() == pytest.approx(2 * kl_one_way, abs=1e-6)
    assert parts["sd_mmd"].item() == pytest.approx(mmd, abs=1e-6)
    assert loss.item() == pytest.approx(ce_a + ce_b + 2 * kl_one_way + mmd, abs=1e-5)


def test_weights_and_temperature():
    net = linear_net([[1.0, 0.0], [0.0, 1.0]])
    sd = with_views(
        SelfDistillation(Finetune(), T=2.0, kl_weight=0.5, mmd_weight=0.25), [1.0, 0.0], [0.0, 1.0]
    )
    loss, parts = sd.training_loss(make_batch([[0, 0]], [0], TASK), net)
    p, q = 1 / (1 + math.exp(-0.5)), 1 / (1 + math.exp(0.5))  # softmax((1, 0) / 2)
    kl = 2 * (p * math.log(p / q) + q * math.log(q / p))  # both directions, no T^2 factor
    assert parts["sd_kl"].item() == pytest.approx(kl, abs=1e-6)
    expected = parts["ce"].item() + parts["sd_ce_b"].item() + 0.5 * kl + 0.25 * 2.0
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_kl_and_mmd_vanish_for_equal_views():
    net = linear_net([[1.0, -1.0], [0.5, 2.0]])
    sd = with_views(SelfDistillation(Finetune()), [0.3, 0.7], [0.3, 0.7])
    loss, parts = sd.training_loss(make_batch([[0, 0]], [1], TASK), net)
    assert parts["sd_kl"].item() == 0.0 and parts["sd_mmd"].item() == 0.0
    assert loss.item() == pytest.approx(2 * parts["ce"].item(), abs=1e-6)


def test_two_views_differ():
    images = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
    batch = Batch(
        images,
        torch.zeros(8, dtype=torch.long),
        TASK,
        Augment([0.5] * 3, [0.25] * 3, 2, True),
        torch.Generator(),
    )
    x_a, x_b = SelfDistillation(Finetune()).two_views(batch)
    assert x_a.shape == x_b.shape == (8, 3, 8, 8)
    assert not torch.equal(x_a, x_b)


def test_reuses_the_wrapped_methods_forward_on_the_first_view():
    net = linear_net([[1.0, 0.0], [0.0, 1.0]])
    calls = []
    net.register_forward_hook(lambda module, args, out: calls.append(args[0]))
    sd = with_views(SelfDistillation(Finetune()), [1.0, 0.0], [0.0, 1.0])
    sd.training_loss(make_batch([[0, 0]], [0], TASK), net)
    assert [c.tolist() for c in calls] == [[[1.0, 0.0]], [[0.0, 1.0]]]  # one forward per view


def test_addon_adds_to_lwf_and_mas_losses():
    net = linear_net([[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, -1.0]])
    new_task = Task(1, (2, 3), 2)
    batch = make_batch([[255, 0]], [2], new_task)
    lwf = LwF()
    sd = SelfDistillation(lwf)
    sd.before_task(new_task, net, type("M", (), {"__len__": lambda self: 0})())
    assert lwf.teacher is not None  # the hook reached the wrapped method
    _, parts = sd.training_loss(batch, net)
    assert {"ce", "kd", "sd_ce_b", "sd_kl", "sd_mmd"} <= parts.keys()
    mas = MAS()
    mas.omega = {"heads.0.weight": torch.ones(2, 2)}
    mas.anchor = {"heads.0.weight": torch.zeros(2, 2)}
    _, parts = SelfDistillation(mas).training_loss(batch, net)
    assert {"ce", "mas", "sd_kl"} <= parts.keys()


def _numbers(path):
    m = json.loads(path.read_text())
    return m["accuracy_matrix"], m["summary"]


def test_disabled_addon_changes_nothing(tiny_cfg, tmp_path):
    run(tiny_cfg("method=lwf", "steps=2"), tmp_path / "plain")
    run(tiny_cfg("method=lwf", "steps=2", "sd.enabled=false", "sd.kl_weight=5"), tmp_path / "off")
    run(tiny_cfg("method=lwf", "steps=2", "sd.enabled=true"), tmp_path / "on")
    assert _numbers(tmp_path / "plain" / "metrics.json") == _numbers(tmp_path / "off" / "metrics.json")
    assert _numbers(tmp_path / "plain" / "metrics.json") != _numbers(tmp_path / "on" / "metrics.json")


@pytest.mark.parametrize("method, base", [("sd", Finetune), ("lwf", LwF), ("mas", MAS)])
def test_sd_runs_standalone_and_as_addon(method, base, tiny_cfg, tmp_path):
    extra = [] if method == "sd" else ["sd.enabled=true"]
    runner = build_runner(tiny_cfg(f"method={method}", "steps=2", *extra), tmp_path)
    assert isinstance(runner.method, SelfDistillation) and type(runner.method.base) is base
    seen = []
    runner.logger.epoch_end = lambda task, epoch, stats: seen.append(set(stats))
    assert runner.run().finished
    assert all({"sd_ce_b", "sd_kl", "sd_mmd"} <= keys for keys in seen)
