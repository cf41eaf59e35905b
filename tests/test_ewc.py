"""EWC (Kirkpatrick et al. 2017): the Fisher of a linear model in closed form, the penalty of
eq. 3, and the two ways its penalties add up over tasks."""

import pytest
import torch

from cl_runner.data.batch import TaskData
from cl_runner.data.loader import DeviceLoader
from cl_runner.data.schedule import Task
from cl_runner.errors import ConfigError
from cl_runner.methods.ewc import EWC
from cl_runner.methods.penalty import QuadraticPenalty
from cl_runner.methods.si import SI

from .tiny import identity_augment, linear_net, make_batch

W, B = [[1.0, -2.0], [0.5, 1.0], [-1.0, 0.0]], [0.1, -0.3, 0.2]
TASK0 = Task(0, (0, 1, 2), 0)


def task_data(pixels: list[list[int]], labels: list[int], batch_size: int, seed: int = 0) -> TaskData:
    images = torch.tensor(pixels, dtype=torch.uint8).view(len(pixels), -1, 1, 1)
    loader = DeviceLoader(images, torch.tensor(labels), batch_size, shuffle=False)
    return TaskData(loader, TASK0, identity_augment(images.shape[1]), torch.Generator().manual_seed(seed))


def fisher_true_labels(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z = W x + b, p = softmax(z): d log p_y / dW_ij = (1[i=y] - p_i) x_j, d/db_i = 1[i=y] - p_i;
    the Fisher is the mean of their squares over the samples."""
    p = torch.softmax(x @ torch.tensor(W).T + torch.tensor(B), 1)
    e = torch.nn.functional.one_hot(y, 3).float() - p  # N, C
    return (e[:, :, None] * x[:, None, :]).pow(2).mean(0), e.pow(2).mean(0)


def fisher_of_the_model(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The expectation over y ~ p(y|x): E[(1[i=y] - p_i)^2] = p_i (1 - p_i), so
    F_W,ij = mean over samples of p_i (1 - p_i) x_j^2 and F_b,i = mean of p_i (1 - p_i)."""
    p = torch.softmax(x @ torch.tensor(W).T + torch.tensor(B), 1)
    v = p * (1 - p)
    return (v[:, :, None] * x[:, None, :].pow(2)).mean(0), v.mean(0)


def test_empirical_fisher_of_a_linear_model_matches_the_closed_form():
    pixels, labels = [[255, 0], [51, 204], [102, 153], [0, 255]], [0, 2, 1, 1]
    fisher = EWC(fisher_labels="true").task_fisher(linear_net(W, biases=[B]), task_data(pixels, labels, 3))
    x = torch.tensor(pixels).float() / 255
    want_W, want_b = fisher_true_labels(x, torch.tensor(labels))
    assert torch.allclose(fisher["heads.0.weight"], want_W, atol=1e-6)
    assert torch.allclose(fisher["heads.0.bias"], want_b, atol=1e-6)


def test_sampled_fisher_converges_to_the_fisher_of_the_model():
    """The paper's Fisher takes y from the model: the estimate's expectation is p(1 - p) x^2.
    n = 4,000 draws for each of two inputs: every entry within 4 standard errors, the error of
    one draw of (1[i=y] - p_i)^2 x_j^2 being known in closed form."""
    n, inputs = 4000, [[255, 0], [51, 204]]
    pixels = inputs * n
    fisher = EWC(fisher_labels="sample", sample_chunk=None).task_fisher(
        linear_net(W, biases=[B]), task_data(pixels, [0] * len(pixels), 1000)
    )
    x = torch.tensor(inputs).float() / 255
    want_W, want_b = fisher_of_the_model(x)
    p = torch.softmax(x @ torch.tensor(W).T + torch.tensor(B), 1)
    fourth = p * (1 - p).pow(4) + (1 - p) * p.pow(4)  # E[(1[i=y] - p_i)^4]
    var_b = fourth - (p * (1 - p)).pow(2)  # one draw's variance, per input
    var_W = var_b[:, :, None] * x[:, None, :].pow(4)
    se_W, se_b = (var_W.sum(0) / (4 * n)).sqrt(), (var_b.sum(0) / (4 * n)).sqrt()
    assert ((fisher["heads.0.weight"] - want_W).abs() <= 4 * se_W + 1e-7).all()
    assert ((fisher["heads.0.bias"] - want_b).abs() <= 4 * se_b + 1e-7).all()
    again = EWC(fisher_labels="sample", sample_chunk=None).task_fisher(
        linear_net(W, biases=[B]), task_data(pixels, [0] * len(pixels), 1000)
    )
    assert torch.equal(fisher["heads.0.weight"], again["heads.0.weight"])  # the draws are the run's
    true_labels = EWC(fisher_labels="true").task_fisher(
        linear_net(W, biases=[B]), task_data(pixels, [0] * len(pixels), 1000)
    )
    assert not torch.allclose(true_labels["heads.0.weight"], want_W, rtol=0.1)  # the switch matters


def test_argmax_labels_use_the_predicted_class():
    pixels = [[255, 0], [51, 204]]
    x = torch.tensor(pixels).float() / 255
    predicted = (x @ torch.tensor(W).T + torch.tensor(B)).argmax(1)
    fisher = EWC(fisher_labels="argmax").task_fisher(linear_net(W, biases=[B]), task_data(pixels, [0, 0], 2))
    want_W, _ = fisher_true_labels(x, predicted)
    assert torch.allclose(fisher["heads.0.weight"], want_W, atol=1e-6)


def test_fisher_of_a_later_task_uses_its_own_head_and_rows():
    """output=task: log p over the task's own head, on the task's own images (exemplars of
    other classes in the data are left out); the old head gets no Fisher."""
    net = linear_net([[1.0, 0.0]], [[0.5, -1.0], [2.0, 1.0]])
    task = Task(1, (1, 2), 1)
    images = torch.tensor([[255, 0], [0, 255], [51, 204]], dtype=torch.uint8).view(3, 2, 1, 1)
    loader = DeviceLoader(images, torch.tensor([1, 0, 2]), 3, shuffle=False)  # label 0: an exemplar
    data = TaskData(loader, task, identity_augment(2), torch.Generator())
    fisher = EWC(fisher_labels="true").task_fisher(net, data)
    x = torch.tensor([[1.0, 0.0], [0.2, 0.8]])
    p = torch.softmax(x @ torch.tensor([[0.5, -1.0], [2.0, 1.0]]).T, 1)
    e = torch.nn.functional.one_hot(torch.tensor([0, 1]), 2).float() - p
    assert torch.allclose(fisher["heads.1.weight"], (e[:, :, None] * x[:, None, :]).pow(2).mean(0), atol=1e-6)
    assert torch.count_nonzero(fisher["heads.0.weight"]) == 0


def test_training_loss_adds_half_lambda_times_the_fisher_weighted_distance():
    net = linear_net([[1.0, 2.0]], [[0.0, 1.0]])
    ewc = EWC(lamb=4.0, update="gradient")
    omega = {name: torch.full_like(p, 0.5) for name, p in net.named_parameters()}
    ewc.penalty.set(omega, net)
    with torch.no_grad():
        net.heads[0].weight += torch.tensor([[1.0, -2.0]])  # moved by (1, -2) from the anchor
    batch = make_batch([[255, 0]], [1], Task(1, (1,), 1))
    loss, parts = ewc.training_loss(batch, net)
    penalty = 0.5 * (1**2 + 2**2)
    assert parts["ewc"].item() == pytest.approx(penalty)
    assert loss.item() == pytest.approx(parts["ce"].item() + 4.0 / 2 * penalty)  # eq. 3


class Pair(torch.nn.Module):
    def __init__(self, values):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor(values))


def test_separate_penalties_are_held_as_one_with_the_same_value_and_gradient():
    """F_A (t - a)^2 + F_B (t - b)^2, the paper's one penalty per task: the merged quadratic has
    the same value and gradient everywhere."""
    model = Pair([1.0, -2.0, 3.0])
    f_a, f_b = torch.tensor([2.0, 0.0, 0.5]), torch.tensor([1.0, 3.0, 0.0])
    a = model.theta.detach().clone()
    penalty = QuadraticPenalty()
    penalty.merge({"theta": f_a}, model)
    with torch.no_grad():
        model.theta.copy_(torch.tensor([0.0, 1.0, -1.0]))
    b = model.theta.detach().clone()
    penalty.merge({"theta": f_b}, model)
    for point in ([0.3, -0.7, 2.0], [5.0, 1.0, -4.0]):
        with torch.no_grad():
            model.theta.copy_(torch.tensor(point))
        t = torch.tensor(point, requires_grad=True)
        separate = (f_a * (t - a).pow(2)).sum() + (f_b * (t - b).pow(2)).sum()
        (want,) = torch.autograd.grad(separate, t)
        merged = penalty(model)
        (got,) = torch.autograd.grad(merged, model.theta)
        assert merged.item() == pytest.approx(separate.item(), rel=1e-6)
        assert penalty.value(model).item() == pytest.approx(separate.item(), rel=1e-5)
        assert torch.allclose(got, want, atol=1e-5)


def test_online_ewc_decays_the_old_fisher_and_anchors_at_the_latest_parameters():
    model = Pair([1.0, 2.0])
    ewc = EWC(accumulate="online", gamma=0.5)
    ewc.task_fisher = lambda model, data: {"theta": torch.tensor([2.0, 4.0])}
    ewc.after_task(TASK0, model, None, None)
    with torch.no_grad():
        model.theta.copy_(torch.tensor([3.0, -1.0]))
    ewc.task_fisher = lambda model, data: {"theta": torch.tensor([1.0, 1.0])}
    ewc.after_task(Task(1, (3,), 3), model, None, None)
    assert torch.equal(ewc.penalty.omega["theta"], torch.tensor([0.5 * 2 + 1, 0.5 * 4 + 1]))
    assert torch.equal(ewc.penalty.anchor["theta"], torch.tensor([3.0, -1.0]))
    assert ewc.penalty.constant == 0.0


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: EWC(fisher_labels="model"), "method.fisher_labels='model': choose sample, true, argmax"),
        (lambda: EWC(accumulate="sum"), "method.accumulate='sum': choose separate, online"),
        (lambda: EWC(gamma=2.0), "method.gamma=2.0 is invalid: expected a number in [0, 1]"),
        (lambda: SI(xi=0.0), "method.xi=0.0 is invalid: expected a number > 0"),
        (lambda: SI(c=-1.0), "method.c=-1.0 is invalid: expected a number >= 0"),
    ],
)
def test_bad_parameters_are_config_errors(build, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        build()
