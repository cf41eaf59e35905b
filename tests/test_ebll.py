"""EBLL (cl_runner/methods/ebll.py, models/encoders.py): the code penalty and the autoencoder's
loss by hand on a tiny network, against the authors' code's formulas; which parameters each
stage moves; a crash inside the autoencoder's stage resumes to the uninterrupted numbers."""

import math

import pytest
import torch

from cl_runner.data.schedule import Task
from cl_runner.errors import ConfigError
from cl_runner.methods.ebll import EBLL
from cl_runner.methods.teacher import frozen_copy
from cl_runner.models.alexnet import SmallAlexNet
from cl_runner.models.encoders import EncoderNet
from cl_runner.train import build_runner, run, train

from .conftest import TINY, make_cfg
from .test_resume import METHODS, SETTING, Crash, numbers, reference
from .tiny import Scale, make_batch

TASK0, TASK1 = Task(0, (0, 1), 0), Task(1, (2, 3), 2)


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def two_task_net(w_teacher, w_student) -> tuple[EncoderNet, EncoderNet]:
    """Task 0 learnt with w_teacher and its autoencoder's encoder W = [[2, -1]], b = 0 (code size
    1); then the student, the same network with w_student and task 1's head (drawn from seed 0)."""
    torch.manual_seed(0)
    net = EncoderNet(Scale(w_teacher), code_dim=1)
    net.add_head(2)
    with torch.no_grad():
        net.heads[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        net.heads[0].bias.zero_()
        net.autoencoders[0].encoder.weight.copy_(torch.tensor([[2.0, -1.0]]))
        net.autoencoders[0].encoder.bias.zero_()
    net.encoded.append(0)
    teacher = frozen_copy(net)
    net.add_head(2)
    with torch.no_grad():
        net.backbone.w.copy_(torch.tensor(w_student))
    return net, teacher


def test_the_code_penalty_is_the_distance_of_the_old_tasks_codes():
    """x = (1, 1): the teacher's features F* = (0, 1), the student's F = (1, 0); task 0's code
    sigma(2 F_1 - F_2): sigma(-1) against sigma(2). Loss = CE + KD + 0.1 (sigma(2) - sigma(-1))^2,
    and its gradient reaches the shared layer only, 2 * 0.1 * delta * sigma'(2) * W * x."""
    net, teacher = two_task_net([0.0, 1.0], [1.0, 0.0])
    ebll = EBLL(code_alpha=0.1)
    ebll.teacher, ebll.old_heads = teacher, [2]
    batch = make_batch([[255, 255]], [2], TASK1)
    loss, parts = ebll.training_loss(batch, net)
    delta = sigmoid(2.0) - sigmoid(-1.0)
    assert parts["code"].item() == pytest.approx(delta**2, rel=1e-6)
    assert loss.item() == pytest.approx(parts["ce"].item() + parts["kd"].item() + 0.1 * delta**2, rel=1e-6)
    loss.backward()
    code_grad = 2 * 0.1 * delta * sigmoid(2.0) * (1 - sigmoid(2.0)) * torch.tensor([2.0, -1.0])
    # the other terms' gradient on w, from a copy without the code penalty
    plain, _ = two_task_net([0.0, 1.0], [1.0, 0.0])
    rest = EBLL(code_alpha=0.0)
    rest.teacher, rest.old_heads = teacher, [2]
    rest.training_loss(batch, plain)[0].backward()
    assert torch.allclose(net.backbone.w.grad - plain.backbone.w.grad, code_grad, atol=1e-6)
    assert all(p.grad is None for p in net.autoencoders.parameters())  # the encoders stay fixed


def test_no_penalty_for_tasks_without_a_trained_autoencoder():
    net, teacher = two_task_net([0.0, 1.0], [1.0, 0.0])
    net.encoded.clear()  # task 0 pretrained: no autoencoder of its own
    ebll = EBLL()
    ebll.teacher, ebll.old_heads = teacher, [2]
    _, parts = ebll.training_loss(make_batch([[255, 255]], [2], TASK1), net)
    assert parts["code"].item() == 0.0


def test_the_autoencoders_loss_is_the_task_loss_through_the_reconstruction_plus_its_mse():
    """F*(x) = (1, 0); encoder 0 -> code sigma(0) = 0.5; decoder (2, 0) 0.5 + (0, 1) = (1, 1) the
    reconstruction; task 0's head (identity) reads logits (1, 1): CE = log 2 for either label;
    MSE = mean((0, 1)^2) = 0.5; loss = CE + 0.1 MSE (L_ae)."""
    net = EncoderNet(Scale([1.0, 1.0]), code_dim=1)
    net.add_head(2)
    with torch.no_grad():
        net.heads[0].weight.copy_(torch.eye(2))
        net.heads[0].bias.zero_()
        net.autoencoders[0].encoder.weight.zero_()
        net.autoencoders[0].encoder.bias.zero_()
        net.autoencoders[0].decoder.weight.copy_(torch.tensor([[2.0], [0.0]]))
        net.autoencoders[0].decoder.bias.copy_(torch.tensor([0.0, 1.0]))
    loss, parts = EBLL(ae_alpha=0.1).autoencoder_loss(make_batch([[255, 0]], [0], TASK0), net)
    assert parts["ce"].item() == pytest.approx(math.log(2))
    assert parts["mse"].item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(math.log(2) + 0.05)


def test_the_autoencoder_reads_alexnets_pool5_and_the_fc_layers_read_its_reconstruction():
    net = EncoderNet(SmallAlexNet(3))
    net.add_head(4)
    x = torch.randn(2, 3, 8, 8)
    out = net.eval()(x)
    assert net.input_dim == 1024 and net.code_dim == 100  # the paper's 100 under 1,024 inputs
    assert out["code_input"].shape == (2, 1024)
    assert torch.equal(out["features"], net.backbone(x))  # the same network as without autoencoders
    assert torch.equal(net.heads_on(out["code_input"])[1], out["logits"])


def test_a_run_trains_each_autoencoder_after_its_task_and_then_keeps_it_fixed(tmp_path):
    runner = build_runner(
        make_cfg(*TINY, "method=ebll", "steps=2", "method.head_epochs=1", "method.ae_epochs=2"), tmp_path
    )
    initial = [p.detach().clone() for p in runner.model.autoencoders.parameters()]  # none yet
    assert initial == []
    train(runner)
    net, teacher = runner.model, runner.method.teacher  # the teacher: the network as task 0 left it
    assert net.encoded == [0, 1]
    assert net.code_dim == 16  # ResNet-20's 64 features: a quarter
    for p, q in zip(net.autoencoders[0].parameters(), teacher.autoencoders[0].parameters(), strict=True):
        assert torch.equal(p, q) and not p.requires_grad  # fixed while task 1 was learnt
    assert not torch.equal(net.backbone.conv1.weight, teacher.backbone.conv1.weight)  # task 1 learnt


def test_a_crash_inside_the_autoencoders_stage_resumes_exactly(tmp_path):
    """Adadelta's state, the stage's position and the autoencoder as it was: identical numbers."""
    expected = reference(tmp_path, "ebll")
    folder = tmp_path / "crashed"
    runner = build_runner(make_cfg(*SETTING, *METHODS["ebll"]), folder)
    crash_on = runner.logger.epoch_end

    def epoch_end(task, epoch, stats):
        crash_on(task, epoch, stats)
        if task.index == 1 and runner.checkpointer.position.stage == "autoencoder" and epoch == 1:
            raise Crash

    runner.logger.epoch_end = epoch_end
    with pytest.raises(Crash):
        runner.run()
    run(make_cfg(*SETTING, *METHODS["ebll"], "resume=true"), folder)
    assert numbers(folder) == expected


def test_bad_values_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="method.code_alpha=-1"):
        EBLL(code_alpha=-1)
    with pytest.raises(ConfigError, match="method.ae_epochs=0"):
        EBLL(ae_epochs=0)
    with pytest.raises(ConfigError, match="method.code_dim='big'"):
        EBLL(code_dim="big")
    with pytest.raises(ConfigError, match="under-complete"):
        build_runner(make_cfg(*TINY, "method=ebll", "method.code_dim=64"), tmp_path)
