"""SI (Zenke et al. 2017): omega on a two-step trajectory by hand (eq. 3), Omega (eq. 5), the
surrogate loss (eq. 4), and the task loss's own gradient under the surrogate term."""

import pytest
import torch

from cl_runner.data.schedule import Task
from cl_runner.methods.si import SI

TASK0, TASK1 = Task(0, (0,), 0), Task(1, (1,), 1)


class Scalars(torch.nn.Module):
    def __init__(self, values):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor(values))


def sgd_steps(model, si, loss_fn, lr: float, steps: int, momentum: float = 0.0):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    for _ in range(steps):
        loss = loss_fn(model.theta)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        si.after_step(model, lr, momentum)


def test_omega_on_a_two_step_trajectory_by_hand():
    """L = 0.5 a (theta - c)^2 per coordinate, plain SGD with lr 0.1, two steps from theta0:
    g0 = a (theta0 - c), theta1 = theta0 - 0.1 g0; g1 = a (theta1 - c), theta2 = theta1 - 0.1 g1.
    omega = -(g0 (theta1 - theta0) + g1 (theta2 - theta1)) and
    Omega = omega / ((theta2 - theta0)^2 + xi)."""
    a, c, xi = torch.tensor([2.0, 0.5]), torch.tensor([1.0, -3.0]), 1e-3
    theta0 = torch.tensor([3.0, 1.0])
    model, si = Scalars(theta0.tolist()), SI(c=0.1, xi=xi)
    si.before_task(TASK0, model, None)
    sgd_steps(model, si, lambda t: (0.5 * a * (t - c).pow(2)).sum(), lr=0.1, steps=2)
    g0 = a * (theta0 - c)
    theta1 = theta0 - 0.1 * g0
    g1 = a * (theta1 - c)
    theta2 = theta1 - 0.1 * g1
    omega = -(g0 * (theta1 - theta0) + g1 * (theta2 - theta1))  # eq. 3
    assert torch.allclose(si.path["theta"], omega, rtol=1e-6)
    si.after_task(TASK0, model, None, None)
    want = omega / ((theta2 - theta0).pow(2) + xi)  # eq. 5
    assert torch.allclose(si.penalty.omega["theta"], want, rtol=1e-6)
    assert torch.equal(si.penalty.anchor["theta"], theta2)


def test_the_path_uses_the_step_momentum_really_took():
    """With momentum the update is not -lr * g: the path integral takes the actual change."""
    model, si = Scalars([2.0]), SI()
    si.before_task(TASK0, model, None)
    sgd_steps(model, si, lambda t: (t**2).sum(), lr=0.1, steps=2, momentum=0.9)
    # theta0 = 2, g0 = 4, v1 = 4, theta1 = 1.6; g1 = 3.2, v2 = 0.9*4 + 3.2 = 6.8, theta2 = 0.92
    want = -(4 * (1.6 - 2.0) + 3.2 * (0.92 - 1.6))
    assert si.path["theta"].item() == pytest.approx(want, rel=1e-6)


def test_omegas_add_up_over_tasks_and_the_surrogate_gradient_is_left_out():
    """Task 2 trains L + c Omega (theta - theta~)^2; omega must take the task loss's gradient
    alone (the official code's unregularised gradient), and Omega adds task 2's share to task 1's."""
    model, si = Scalars([1.0]), SI(c=0.5, xi=0.1, update="gradient")
    si.before_task(TASK0, model, None)
    sgd_steps(model, si, lambda t: (t - 3.0).pow(2).sum(), lr=0.1, steps=1)  # theta 1 -> 1.4
    si.after_task(TASK0, model, None, None)
    first = si.penalty.omega["theta"].clone()  # -(-4)(0.4) / (0.16 + 0.1)
    assert first.item() == pytest.approx(1.6 / 0.26, rel=1e-6)

    si.before_task(TASK1, model, None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.zero_grad()
    ce = model.theta.pow(2).sum()  # the task loss: gradient 2 theta = 2.8
    (ce + si.c * si.penalty(model)).backward()  # at the anchor: the penalty's gradient is 0
    optimizer.step()
    si.after_step(model, 0.1, 0.0)  # theta 1.4 -> 1.12
    optimizer.zero_grad()
    ce = model.theta.pow(2).sum()
    (ce + si.c * si.penalty(model)).backward()  # penalty gradient 2 c Omega (1.12 - 1.4) != 0
    task_grad = 2 * 1.12
    before = model.theta.item()
    optimizer.step()
    si.after_step(model, 0.1, 0.0)
    after = model.theta.item()
    want_path = -(2.8 * (1.12 - 1.4)) - task_grad * (after - before)
    assert si.path["theta"].item() == pytest.approx(want_path, rel=1e-5)
    si.after_task(TASK1, model, None, None)
    want = first.item() + want_path / ((after - 1.4) ** 2 + 0.1)
    assert si.penalty.omega["theta"].item() == pytest.approx(want, rel=1e-5)


def test_surrogate_loss_is_c_times_the_weighted_distance():
    from .tiny import linear_net, make_batch

    net = linear_net([[1.0, 2.0]], [[0.0, 1.0]])
    si = SI(c=0.25, update="gradient")
    si.penalty.set({name: torch.full_like(p, 2.0) for name, p in net.named_parameters()}, net)
    with torch.no_grad():
        net.heads[0].bias += 3.0
    loss, parts = si.training_loss(make_batch([[255, 0]], [1], TASK1), net)
    assert parts["si"].item() == pytest.approx(2.0 * 9.0)
    assert loss.item() == pytest.approx(parts["ce"].item() + 0.25 * 18.0)  # eq. 4


def test_state_survives_a_round_trip_and_continues_from_the_model():
    model, si = Scalars([1.0, 2.0]), SI()
    si.before_task(TASK0, model, None)
    sgd_steps(model, si, lambda t: t.pow(2).sum(), lr=0.1, steps=1)
    state = si.state_dict()
    restored = SI()
    restored.load_state_dict(state, model)
    assert torch.equal(restored.path["theta"], si.path["theta"])
    assert torch.equal(restored.previous["theta"], model.theta.detach())


def test_proximal_update_pulls_toward_the_anchor_and_the_path_takes_the_whole_step():
    """update=proximal: after the SGD step theta <- theta~ + (theta - theta~) / (1 + 2 eta c Omega),
    and the path integral takes the task loss's gradient times that whole change."""
    model, si = Scalars([1.0]), SI(c=0.5, xi=0.1)
    si.penalty.omega, si.penalty.anchor = {"theta": torch.tensor([2.0])}, {"theta": torch.tensor([0.0])}
    si.before_task(TASK1, model, None)
    sgd_steps(model, si, lambda t: (t - 3.0).pow(2).sum(), lr=0.1, steps=1)
    sgd = 1.0 - 0.1 * 2 * (1.0 - 3.0)  # 1.4
    want = sgd / (1 + 2 * 0.1 * 0.5 * 2.0)
    assert model.theta.item() == pytest.approx(want, rel=1e-6)
    gradient = 2 * (1.0 - 3.0)  # the task loss's, at theta = 1
    assert si.path["theta"].item() == pytest.approx(-gradient * (want - 1.0), rel=1e-6)


def test_the_logged_surrogate_is_finite_when_a_path_integral_is_negative():
    """A parameter the task loss pushed uphill has omega < 0, so Omega < 0 (eq. 5): the logged
    value is still c's sum of Omega (theta - theta~)^2, not the NaN of a square root."""
    from cl_runner.methods.penalty import QuadraticPenalty

    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    penalty = QuadraticPenalty()
    penalty.set({"weight": torch.tensor([[3.0, -0.5]])}, model)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, 4.0]]))
    expected = 3.0 * 1.0**2 - 0.5 * 2.0**2  # 1.0
    assert penalty.value(model).item() == pytest.approx(expected)
    assert penalty(model).item() == pytest.approx(expected)
