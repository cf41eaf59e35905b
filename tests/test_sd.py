import json
import math
from dataclasses import dataclass, field, fields

import pytest
import torch

from cl_runner.data.batch import Batch
from cl_runner.data.loader import Augment
from cl_runner.data.schedule import Task
from cl_runner.methods.finetune import Finetune
from cl_runner.methods.lwf import LwF
from cl_runner.methods.mas import MAS
from cl_runner.methods.sd import SelfDistillation
from cl_runner.models import IncrementalNet
from cl_runner.train import build_runner, run

from .tiny import Pixels, linear_net, make_batch

TASK = Task(0, (0, 1), 0)


@dataclass
class GivenViews(Batch):
    """A batch whose successive views are given vectors (view a first, then view b)."""

    given: list = field(default_factory=list)

    def view(self) -> torch.Tensor:
        x = torch.tensor([self.given[self.drawn]])
        self.drawn += 1
        return x


def given_views(x_a, x_b, labels=(0,), task=TASK) -> GivenViews:
    batch = make_batch([[0] * len(x_a)], list(labels), task)
    return GivenViews(**{f.name: getattr(batch, f.name) for f in fields(Batch)}, given=[x_a, x_b])


def sd_loss(method, sd: SelfDistillation, batch: Batch, net):
    """What the runner does with a batch: the method's loss, then the add-on's."""
    loss, parts = method.training_loss(batch, net)
    return sd.training_loss(loss, parts, batch, net, method)


def test_sd_loss_by_hand():
    net = linear_net([[1.0, 0.0], [0.0, 1.0]])  # logits = features = the view itself
    loss, parts = sd_loss(Finetune(), SelfDistillation(), given_views([1.0, 0.0], [0.0, 1.0]), net)
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
    sd = SelfDistillation(T=2.0, kl_weight=0.5, mmd_weight=0.25)
    loss, parts = sd_loss(Finetune(), sd, given_views([1.0, 0.0], [0.0, 1.0]), net)
    p, q = 1 / (1 + math.exp(-0.5)), 1 / (1 + math.exp(0.5))  # softmax((1, 0) / 2)
    kl = 2 * (p * math.log(p / q) + q * math.log(q / p))  # both directions, no T^2 factor
    assert parts["sd_kl"].item() == pytest.approx(kl, abs=1e-6)
    expected = parts["ce"].item() + parts["sd_ce_b"].item() + 0.5 * kl + 0.25 * 2.0
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_kl_and_mmd_vanish_for_equal_views():
    net = linear_net([[1.0, -1.0], [0.5, 2.0]])
    loss, parts = sd_loss(Finetune(), SelfDistillation(), given_views([0.3, 0.7], [0.3, 0.7], [1]), net)
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
    net = IncrementalNet(Pixels(3 * 8 * 8))
    net.add_head(2)
    views = []
    net.register_forward_hook(lambda module, args, out: views.append(args[0]))
    sd_loss(Finetune(), SelfDistillation(), batch, net)
    assert len(views) == 2 and views[0].shape == views[1].shape == (8, 3, 8, 8)
    assert not torch.equal(views[0], views[1])


def test_reuses_the_methods_forward_on_the_first_view():
    """One forward pass per view: BatchNorm statistics see each view once."""
    net = linear_net([[1.0, 0.0], [0.0, 1.0]])
    calls = []
    net.register_forward_hook(lambda module, args, out: calls.append(args[0]))
    sd_loss(Finetune(), SelfDistillation(), given_views([1.0, 0.0], [0.0, 1.0]), net)
    assert [c.tolist() for c in calls] == [[[1.0, 0.0]], [[0.0, 1.0]]]


def test_addon_adds_to_lwf_and_mas_losses():
    net = linear_net([[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, -1.0]])
    new_task = Task(1, (2, 3), 2)
    lwf = LwF()
    lwf.before_task(new_task, net, None)
    loss, parts = sd_loss(lwf, SelfDistillation(), make_batch([[255, 0]], [2], new_task), net)
    assert {"ce", "kd", "sd_ce_b", "sd_kl", "sd_mmd"} <= parts.keys()
    terms = parts["ce"] + parts["kd"] + parts["sd_ce_b"] + parts["sd_kl"] + parts["sd_mmd"]
    assert loss.item() == pytest.approx(terms.item(), abs=1e-6)
    mas = MAS()
    mas.penalty.omega = {"heads.0.weight": torch.ones(2, 2)}
    mas.penalty.anchor = {"heads.0.weight": torch.zeros(2, 2)}
    mas.penalty.cache = None
    _, parts = sd_loss(mas, SelfDistillation(), make_batch([[255, 0]], [2], new_task), net)
    assert {"ce", "mas", "sd_kl"} <= parts.keys()


def _numbers(path):
    m = json.loads(path.read_text())
    return m["accuracy_matrix"], m["summary"]


def test_sd_without_its_addon_is_finetuning_and_the_addon_changes_lwf(tiny_cfg, tmp_path):
    run(tiny_cfg("method=finetune", "steps=2"), tmp_path / "finetune")
    run(tiny_cfg("method=sd", "~addon", "steps=2"), tmp_path / "off")
    assert _numbers(tmp_path / "finetune" / "metrics.json") == _numbers(tmp_path / "off" / "metrics.json")
    run(tiny_cfg("method=lwf", "steps=2"), tmp_path / "lwf")
    run(tiny_cfg("method=lwf", "addon=sd", "steps=2"), tmp_path / "lwf_sd")
    assert _numbers(tmp_path / "lwf" / "metrics.json") != _numbers(tmp_path / "lwf_sd" / "metrics.json")


@pytest.mark.parametrize("method, base", [("sd", Finetune), ("lwf", LwF), ("mas", MAS)])
def test_sd_runs_standalone_and_as_addon(method, base, tiny_cfg, tmp_path):
    extra = [] if method == "sd" else ["addon=sd"]
    runner = build_runner(tiny_cfg(f"method={method}", "steps=2", *extra), tmp_path)
    assert type(runner.method) is base and [type(a) for a in runner.addons] == [SelfDistillation]
    seen = []
    runner.logger.epoch_end = lambda task, epoch, stats: seen.append(set(stats))
    assert runner.run().finished
    assert all({"sd_ce_b", "sd_kl", "sd_mmd"} <= keys for keys in seen)
