import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cl_runner.data.batch import Batch, TaskData
from cl_runner.data.loader import DeviceLoader
from cl_runner.data.schedule import Task
from cl_runner.errors import ConfigError
from cl_runner.methods.ewc import EWC
from cl_runner.methods.mas import MAS
from cl_runner.models import IncrementalNet
from cl_runner.models.resnet_cifar import resnet20
from cl_runner.train import build_runner

from .tiny import identity_augment, linear_net, make_batch

TASK0 = Task(0, (0, 1, 2), 0)
ONE_CLASS = Task(0, (0,), 0)


def task_data(images: torch.Tensor, batch_size: int, task: Task = TASK0) -> TaskData:
    labels = torch.zeros(len(images), dtype=torch.long)
    loader = DeviceLoader(images, labels, batch_size, shuffle=False)
    return TaskData(loader, task, identity_augment(images.shape[1]), torch.Generator())


def closed_form(W, b, x, per_sample: bool):
    """F = W x + b; d||F||^2/dW_ij = 2 F_i x_j, d||F||^2/db_i = 2 F_i."""
    F = x @ W.T + b  # N, C
    gW = 2 * F[:, :, None] * x[:, None, :]  # N, C, D
    gb = 2 * F
    if per_sample:
        return gW.abs().mean(0), gb.abs().mean(0)
    return gW.sum(0).abs() / len(x), gb.sum(0).abs() / len(x)


@pytest.mark.parametrize("importance", ["sample", "batch"])
def test_importance_of_linear_model_matches_closed_form(importance):
    W, b = [[1.0, -2.0], [0.5, 1.0], [-1.0, 0.0]], [0.1, -0.3, 0.2]
    net = linear_net(W, biases=[b])
    images = torch.tensor([[255, 0], [51, 204], [102, 153], [0, 255]], dtype=torch.uint8).view(4, 2, 1, 1)
    x = images.view(4, 2).float() / 255
    mas = MAS(importance=importance)
    omega = mas.task_importance(net, task_data(images, batch_size=4))
    want_W, want_b = closed_form(torch.tensor(W), torch.tensor(b), x, per_sample=importance == "sample")
    assert torch.allclose(omega["heads.0.weight"], want_W, atol=1e-6)
    assert torch.allclose(omega["heads.0.bias"], want_b, atol=1e-6)
    # Signs cancel across samples in the batch sum, so the two estimates differ here.
    sample_W, _ = closed_form(torch.tensor(W), torch.tensor(b), x, per_sample=True)
    assert importance == "sample" or not torch.allclose(omega["heads.0.weight"], sample_W)


@pytest.mark.parametrize("output", ["task", "all"])
def test_importance_uses_the_tasks_own_head_like_the_official_code(output):
    """The official code computes a task's Omega with that task's head only; `output=all` takes
    every seen logit (FACIL)."""
    W0, W1 = [[1.0, -2.0], [0.5, 1.0]], [[-1.0, 0.5]]
    net = linear_net(W0, W1)
    images = torch.tensor([[255, 0], [51, 204], [0, 255]], dtype=torch.uint8).view(3, 2, 1, 1)
    x = images.view(3, 2).float() / 255
    omega = MAS(importance="sample", output=output).task_importance(
        net, task_data(images, 3, Task(1, (2,), 2))
    )
    want_W1, _ = closed_form(torch.tensor(W1), torch.zeros(1), x, per_sample=True)
    assert torch.allclose(omega["heads.1.weight"], want_W1, atol=1e-6)
    head0 = omega["heads.0.weight"]
    if output == "task":
        assert torch.count_nonzero(head0) == 0  # the old head is not part of F
    else:
        want_W0, _ = closed_form(torch.tensor(W0), torch.zeros(2), x, per_sample=True)
        assert torch.allclose(head0, want_W0, atol=1e-6)


class Scalar(torch.nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor([value]))


@pytest.mark.parametrize("omega", [1.0, 300.0])
def test_momentum_sgd_reaches_the_papers_fixed_point(omega):
    """0.5 a (theta - c)^2 + lambda Omega (theta - theta*)^2 under SGD with momentum 0.9: the
    minimiser is (a c + 2 lambda Omega theta*) / (a + 2 lambda Omega). The proximal update must
    land on it for Omega = 1 and 300 (a step shrunk with lr alone stops where the penalty is
    (1 - momentum) times weaker), and the literal gradient update too where it is stable."""
    a, c, anchor, lamb, lr, momentum = 1.0, 2.0, -1.0, 1.0, 0.1, 0.9
    minimiser = (a * c + 2 * lamb * omega * anchor) / (a + 2 * lamb * omega)
    for update in ("proximal", "gradient"):
        stable = lr * 2 * (a + 2 * lamb * omega) < 2 * (1 + momentum)  # heavy-ball stability
        if update == "gradient" and not stable:
            continue
        model = Scalar(0.5)
        mas = MAS(lamb=lamb, update=update)
        mas.penalty.omega, mas.penalty.anchor = (
            {"theta": torch.tensor([omega])},
            {"theta": torch.tensor([anchor])},
        )
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        for _ in range(3000):
            loss = 0.5 * a * (model.theta - c).pow(2).sum()
            if update == "gradient":
                loss = loss + mas.lamb * mas.penalty(model)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            mas.after_step(model, lr, momentum)
        assert model.theta.item() == pytest.approx(minimiser, abs=1e-5), update


@pytest.mark.parametrize("measure", ["mas batch", "mas sample", "ewc sample"])
def test_importance_runs_the_trained_network_in_eval_mode_and_leaves_its_mode(measure):
    net = linear_net([[1.0, -2.0], [0.5, 1.0], [-1.0, 0.0]])
    modes = []
    net.register_forward_pre_hook(lambda module, inputs: modes.append(module.training))
    net.train()
    data = task_data(torch.tensor([[255, 0], [51, 204]], dtype=torch.uint8).view(2, 2, 1, 1), batch_size=2)
    method, kind = measure.split()
    if method == "mas":
        MAS(importance=kind).task_importance(net, data)
    else:
        EWC(fisher_labels="sample").task_fisher(net, data)  # its label draw runs the network too
    assert modes and not any(modes)
    assert net.training


def test_sample_and_batch_importance_agree_for_batch_size_one():
    torch.manual_seed(0)
    net = IncrementalNet(resnet20(1))
    net.add_head(3)
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    for m in net.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    data = task_data(images, batch_size=1)
    sample = MAS(importance="sample").task_importance(net, data)
    batch = MAS(importance="batch").task_importance(net, data)
    assert sample.keys() == batch.keys()
    for name in sample:
        assert torch.allclose(sample[name], batch[name], rtol=1e-4, atol=1e-7), name


def test_penalty_is_zero_at_anchor_and_its_gradient_is_2_lambda_omega_delta():
    net = linear_net([[1.0, 2.0], [3.0, 4.0]])
    mas = MAS(lamb=0.7)
    params = dict(net.named_parameters())
    mas.penalty.omega = {name: torch.rand_like(p) for name, p in params.items()}
    mas.penalty.anchor = {name: p.detach().clone() for name, p in params.items()}
    assert mas.penalty(net).item() == 0.0
    delta = {name: torch.randn_like(p) for name, p in params.items()}
    with torch.no_grad():
        for name, p in params.items():
            p.add_(delta[name])
    (mas.lamb * mas.penalty(net)).backward()
    for name, p in params.items():
        assert torch.allclose(p.grad, 2 * 0.7 * mas.penalty.omega[name] * delta[name], atol=1e-6)


@pytest.mark.parametrize("accumulate, expected", [("sum", 1.0 + 3.0), ("alpha", 0.25 * 1.0 + 0.75 * 3.0)])
def test_importance_accumulates_over_tasks(accumulate, expected, monkeypatch):
    net = linear_net([[1.0, 2.0]])
    mas = MAS(accumulate=accumulate, alpha=0.25)
    values = iter([1.0, 3.0])
    monkeypatch.setattr(
        mas,
        "task_importance",
        lambda model, data: {
            n: torch.full_like(p, next(values)) for n, p in [("heads.0.weight", model.heads[0].weight)]
        },
    )
    mas.after_task(TASK0, net, None, None)
    net.add_head(1)  # a later head: no importance yet
    mas.after_task(TASK0, net, None, None)
    assert torch.allclose(mas.penalty.omega["heads.0.weight"], torch.full((1, 2), expected))
    assert set(mas.penalty.anchor) == {
        "backbone.anchor",
        "heads.0.weight",
        "heads.0.bias",
        "heads.1.weight",
        "heads.1.bias",
    }


def test_anchor_is_a_copy():
    net = linear_net([[1.0, 2.0]])
    mas = MAS()
    mas.after_task(TASK0, net, None, task_data(torch.zeros(2, 2, 1, 1, dtype=torch.uint8), 2))
    with torch.no_grad():
        net.heads[0].weight.add_(1.0)
    assert torch.equal(mas.penalty.anchor["heads.0.weight"], torch.tensor([[1.0, 2.0]]))


def _drift_on_second_task(tiny_cfg, tmp_path, lamb: float) -> float:
    runner = build_runner(
        tiny_cfg("method=mas", "steps=2", "train.epochs=2", f"method.lamb={lamb}"), tmp_path
    )
    runner.learn(runner.benchmark.tasks[0])
    anchor = {n: p.detach().clone() for n, p in runner.model.backbone.named_parameters()}
    runner.learn(runner.benchmark.tasks[1])
    assert set(runner.method.penalty.omega) >= {f"backbone.{n}" for n in anchor}
    return sum((p - anchor[n]).pow(2).sum().item() for n, p in runner.model.backbone.named_parameters())


def test_penalty_holds_parameters_near_the_anchor(tiny_cfg, tmp_path):
    free = _drift_on_second_task(tiny_cfg, tmp_path / "free", lamb=0.0)
    held = _drift_on_second_task(tiny_cfg, tmp_path / "held", lamb=1000.0)
    assert held < 0.1 * free


def test_proximal_step_is_the_exact_minimiser():
    net = linear_net([[1.0, 2.0]])
    mas = MAS(lamb=2.0)
    weight = net.heads[0].weight
    mas.penalty.omega = {"heads.0.weight": torch.tensor([[0.5, 3.0]])}
    mas.penalty.anchor = {"heads.0.weight": torch.tensor([[0.0, 1.0]])}
    mas.after_step(net, lr=0.1, momentum=0.0)
    # theta* + (theta - theta*) / (1 + 2 lr lambda Omega): 0 + 1/1.2 and 1 + 1/2.2
    assert torch.allclose(weight.detach(), torch.tensor([[1 / 1.2, 1 + 1 / 2.2]]))
    # It minimises lambda*Omega*(t - t*)^2 + (t - theta)^2 / (2 lr): the gradient there is zero.
    t = weight.detach().clone().requires_grad_(True)
    objective = (
        2.0 * (mas.penalty.omega["heads.0.weight"] * (t - mas.penalty.anchor["heads.0.weight"]).pow(2)).sum()
    )
    objective = objective + ((t - torch.tensor([[1.0, 2.0]])).pow(2) / 0.2).sum()
    objective.backward()
    assert torch.allclose(t.grad, torch.zeros(1, 2), atol=1e-5)


def test_gradient_update_backpropagates_the_penalty_and_proximal_does_not():
    net = linear_net([[1.0, 2.0]])
    batch = make_batch([[255, 0]], [0], ONE_CLASS)
    for update, expect_penalty_grad in (("gradient", True), ("proximal", False)):
        mas = MAS(lamb=1.0, update=update)
        mas.penalty.omega = {"heads.0.weight": torch.ones(1, 2)}
        mas.penalty.anchor = {"heads.0.weight": torch.zeros(1, 2)}
        net.zero_grad()
        loss, parts = mas.training_loss(batch, net)
        assert parts["mas"].item() == pytest.approx(5.0)  # 1^2 + 2^2
        loss.backward()
        # One class: CE is 0 with zero gradient, so any gradient comes from the penalty 2*Omega*theta.
        grad = net.heads[0].weight.grad
        assert torch.allclose(grad, torch.tensor([[2.0, 4.0]])) == expect_penalty_grad


def test_bad_parameters():
    with pytest.raises(ConfigError, match="method.importance='exact'"):
        MAS(importance="exact")


class CountOps(TorchDispatchMode):
    """Every tensor operation dispatched inside the block."""

    def __init__(self):
        super().__init__()
        self.ops: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def _resnet_with_importance() -> tuple[IncrementalNet, MAS]:
    torch.manual_seed(0)
    net = IncrementalNet(resnet20(1))
    net.add_head(3)
    mas = MAS(lamb=1.0)
    mas.penalty.omega = {n: torch.rand_like(p) for n, p in net.named_parameters()}
    mas.penalty.anchor = {n: p.detach() + 0.1 for n, p in net.named_parameters()}
    return net, mas


def test_proximal_step_is_three_multi_tensor_kernels_whatever_the_number_of_tensors():
    net, mas = _resnet_with_importance()
    assert len(mas.penalty.omega) > 50  # 65 parameter tensors: ~200 kernels one at a time
    omega, anchor = mas.penalty.omega, mas.penalty.anchor
    reference = {n: (anchor[n] + (p - anchor[n]) / (1 + 2 * 1.0 * omega[n])).detach()
                 for n, p in net.named_parameters()}  # fmt: skip
    mas.after_step(net, lr=0.1, momentum=0.9)  # eta = 1; builds the per-epoch terms
    for n, p in net.named_parameters():
        assert torch.allclose(p, reference[n], atol=1e-6), n
    with CountOps() as counted:
        mas.after_step(net, lr=0.1, momentum=0.9)
    assert len(counted.ops) == 3 and all("_foreach_" in op for op in counted.ops), counted.ops


def test_penalty_is_reported_once_an_epoch_and_equals_the_plain_sum():
    net, mas = _resnet_with_importance()
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    batch = Batch(images, torch.zeros(4, dtype=torch.long), TASK0, identity_augment(1), torch.Generator())
    batch.index, batch.count = 0, 5
    _, parts = mas.training_loss(batch, net)
    assert "mas" not in parts  # not at every batch
    batch.index = 4
    _, parts = mas.training_loss(batch, net)
    # weighted by the batch count, so the epoch's average of the parts reads as the penalty
    assert parts["mas"].item() / 5 == pytest.approx(mas.penalty(net).item(), rel=1e-5)
