import math

import pytest
import torch

from cl_runner.data.memory import ExemplarMemory
from cl_runner.data.schedule import Task
from cl_runner.errors import ConfigError
from cl_runner.methods.base import Stage
from cl_runner.methods.losses import modified_cross_entropy
from cl_runner.methods.lwf import LwF
from cl_runner.train import build_runner, run

from .tiny import linear_net, make_batch

TASK0, TASK1 = Task(0, (0, 1), 0), Task(1, (2, 3), 2)


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def paper_old_task_loss(student: torch.Tensor, teacher: torch.Tensor, T: float) -> torch.Tensor:
    """Li & Hoiem eq. 3-4 as printed: y' = y^(1/T) / sum_j y_j^(1/T) for both recorded and current
    probabilities, then -sum y'_o log yhat'_o, averaged over the batch. No T^2."""
    y = torch.softmax(teacher, 1).pow(1 / T)
    y = y / y.sum(1, keepdim=True)
    y_hat = torch.softmax(student, 1).pow(1 / T)
    y_hat = y_hat / y_hat.sum(1, keepdim=True)
    return -(y * y_hat.log()).sum(1).mean()


def test_lwf_loss_by_hand():
    # Features of the one sample: pixels (255, 0) / 255 = (1, 0). Label 2 = class 0 of the new head.
    net = linear_net([[1, 0], [0, 1]], [[1, 1], [0, -1]])
    lwf = LwF(lamb=1.0, T=2.0)
    lwf.before_task(TASK1, net, ExemplarMemory())
    with torch.no_grad():
        net.heads[0].weight[0, 0] = 2.0  # the student's old head drifts after the snapshot
    loss, parts = lwf.training_loss(make_batch([[255, 0]], [2], TASK1), net)
    # Student logits: old head (2, 0), new head (1, 0). Teacher old logits: (1, 0).
    ce = math.log(1 + math.exp(-1))  # -log softmax((1, 0))[0]
    p_t = [sigmoid(0.5), 1 - sigmoid(0.5)]  # softmax((1, 0) / 2)
    p_s = [sigmoid(1.0), 1 - sigmoid(1.0)]  # softmax((2, 0) / 2)
    kd = -sum(t * math.log(s) for t, s in zip(p_t, p_s, strict=True))  # eq. 3, no T^2 factor
    assert parts["ce"].item() == pytest.approx(ce, abs=1e-6)
    assert parts["kd"].item() == pytest.approx(kd, abs=1e-6)
    assert loss.item() == pytest.approx(ce + kd, abs=1e-6)


def test_lambda_scales_distillation_only():
    net = linear_net([[1, 0], [0, 1]], [[1, 1], [0, -1]])
    batch = make_batch([[255, 0], [0, 255]], [2, 3], TASK1)
    losses = {}
    for lamb in (0.0, 3.0):
        lwf = LwF(lamb=lamb)
        lwf.before_task(TASK1, net, ExemplarMemory())
        with torch.no_grad():
            lwf.teacher.heads[0].weight.mul_(-1)  # make the teacher disagree
        losses[lamb], parts = lwf.training_loss(batch, net)
    assert losses[3.0].item() == pytest.approx(losses[0.0].item() + 3 * parts["kd"].item(), rel=1e-6)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_old_task_gradient_is_the_papers_modified_cross_entropy(T):
    """Through LwF itself: the gradient the old-task term sends into the network equals the
    gradient of the paper's eq. 3-4 (softmax^(1/T), renormalised) on the same logits."""
    torch.manual_seed(int(T))
    old, new = torch.randn(3, 4).tolist(), torch.randn(2, 4).tolist()
    net = linear_net(old, new)
    pixels = torch.randint(0, 256, (5, 4)).tolist()
    batch = make_batch(pixels, [3, 4, 3, 4, 3], TASK1)
    teacher_old = torch.tensor(pixels, dtype=torch.float) / 255 @ torch.tensor(old).T
    lwf = LwF(lamb=1.0, T=T)
    lwf.before_task(Task(1, (3, 4), 3), net, ExemplarMemory())
    with torch.no_grad():  # the student drifts away from the teacher
        net.heads[0].weight.add_(torch.randn(3, 4))
    params = list(net.parameters())
    with_kd, _ = lwf.training_loss(make_batch(pixels, [3, 4, 3, 4, 3], Task(1, (3, 4), 3)), net)
    lwf.lamb = 0.0
    without_kd, _ = lwf.training_loss(make_batch(pixels, [3, 4, 3, 4, 3], Task(1, (3, 4), 3)), net)
    ours = torch.autograd.grad(with_kd - without_kd, params, allow_unused=True)
    student_old = net(batch.view())["logits"][:, :3]
    paper = torch.autograd.grad(paper_old_task_loss(student_old, teacher_old, T), params, allow_unused=True)
    for a, b in zip(ours, paper, strict=True):
        if b is None:
            assert a is None or torch.count_nonzero(a) == 0
        else:
            assert torch.allclose(a, b, atol=1e-6), (a, b)


def test_modified_cross_entropy_value_is_the_papers():
    student, teacher = torch.randn(6, 5), torch.randn(6, 5)
    for T in (1.0, 2.0, 4.0):
        want = paper_old_task_loss(student, teacher, T)
        assert modified_cross_entropy(student, teacher, T).item() == pytest.approx(want.item(), abs=1e-6)


def test_first_task_is_plain_cross_entropy():
    net = linear_net([[1, 0], [0, 1]])
    lwf = LwF()
    lwf.before_task(TASK0, net, ExemplarMemory())
    loss, parts = lwf.training_loss(make_batch([[255, 0]], [0], TASK0), net)
    assert lwf.teacher is None and "kd" not in parts
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_with_exemplars_ce_covers_all_seen_classes():
    net = linear_net([[1, 0], [0, 1]], [[1, 1], [0, -1]])
    memory = ExemplarMemory(size=2)
    memory.by_class = {0: torch.tensor([0]), 1: torch.tensor([1])}
    lwf = LwF(lamb=0.0)
    lwf.before_task(TASK1, net, memory)
    batch = make_batch([[255, 0]], [0], TASK1)
    batch.rehearsal = True  # the runner's flag: exemplars of old classes are in the training data
    _, parts = lwf.training_loss(batch, net)
    # logits (1, 0, 1, 0), label 0: -log(e / (2e + 2))
    assert parts["ce"].item() == pytest.approx(-math.log(math.e / (2 * math.e + 2)), abs=1e-6)


def test_teacher_is_frozen_and_never_changes(tiny_cfg, tmp_path):
    runner = build_runner(tiny_cfg("method=lwf", "steps=2", "train.epochs=2"), tmp_path)
    runner.learn(runner.benchmark.tasks[0])
    task = runner.benchmark.tasks[1]
    runner.model.add_head(task.size)
    runner.method.before_task(task, runner.model, runner.memory)
    teacher = runner.method.teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = [p.clone() for p in runner.model.backbone.parameters()]
    runner.checkpointer.begin_task(task.index, "main")
    runner.run_stage(task, runner.training_data(task), Stage("main"))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    for key, value in teacher.state_dict().items():  # weights and BatchNorm statistics
        assert torch.equal(value, before[key]), key
    assert any(
        not torch.equal(a, b) for a, b in zip(student_before, runner.model.backbone.parameters(), strict=True)
    )


def test_head_epochs_train_only_the_new_head_with_frozen_extractor(tiny_cfg, tmp_path):
    runner = build_runner(tiny_cfg("method=lwf", "method.head_epochs=2", "steps=2"), tmp_path)
    runner.learn(runner.benchmark.tasks[0])
    extractor = lambda: [t.clone() for t in runner.model.backbone.state_dict().values()]  # noqa: E731
    calls, original = [], runner.run_stage

    backbone = list(runner.model.backbone.parameters())
    old_head = list(runner.model.heads[0].parameters())

    seen_in_epoch = []
    original_epoch = runner.run_epoch

    def epoch_spy(batches, stage, optimizer, *rest):
        params = {id(p) for group in optimizer.param_groups for p in group["params"]}
        trainable = any(p.requires_grad for p in backbone + old_head)
        seen_in_epoch.append((params, runner.model.training, trainable))
        return original_epoch(batches, stage, optimizer, *rest)

    def spy(task, data, stage):
        before = extractor()
        for p in backbone + old_head:
            p.grad = None
        seen_in_epoch.clear()
        original(task, data, stage)
        unchanged = all(torch.equal(a, b) for a, b in zip(before, extractor(), strict=True))
        # no gradient reached the frozen parameters: nothing flowed back through the extractor
        untouched = all(p.grad is None for p in backbone + old_head)
        params, training, trainable = seen_in_epoch[0]
        calls.append((len(seen_in_epoch), params, training, stage.name, unchanged, trainable, untouched))

    runner.run_epoch = epoch_spy
    runner.run_stage = spy
    runner.learn(runner.benchmark.tasks[1])
    head_ids = {id(p) for p in runner.model.heads[-1].parameters()}
    # Stage 1: 2 epochs, new head only, extractor in eval mode and frozen (requires_grad off, no
    # gradient computed for it), weights and BN statistics untouched.
    assert calls[0] == (2, head_ids, False, "head", True, False, True)
    # Stage 2: the configured epochs, every parameter, train mode, extractor moves.
    epochs, params, training, _, unchanged, trainable, untouched = calls[1]
    assert epochs == 1 and training and params > head_ids and not unchanged and trainable and not untouched
    assert all(p.requires_grad for p in backbone)  # unfrozen after the head-only stage


def test_lwf_runs_with_exemplars(tiny_cfg, tmp_path):
    results = run(tiny_cfg("method=lwf", "memory.size=20", "steps=2"), tmp_path)
    assert [s["train_images"] for s in results.steps] == [100, 120]


def test_bad_parameters():
    with pytest.raises(ConfigError, match="method.T=0 is invalid"):
        LwF(T=0)


def test_in_a_sequence_each_old_task_is_distilled_with_its_own_softmax():
    """The paper's L_old is one term per old task: two old heads of a sequence, two softmaxes."""
    net = linear_net([[1, 0], [0, 1]], [[1, 1], [0, -1]], [[2, 0], [0, 2]])
    third = Task(2, (4, 5), 4, name="digits")
    lwf = LwF(lamb=1.0, T=2.0)
    lwf.before_task(third, net, ExemplarMemory())
    with torch.no_grad():
        net.heads[0].weight[0, 0] = 2.0  # the student's first old head drifts
    _, parts = lwf.training_loss(make_batch([[255, 0]], [4], third), net)
    # features (1, 0): each head's logits are its weights' first column
    teacher = [torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])]  # heads 0 and 1 before the drift
    student = [torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]])]
    per_head = sum(paper_old_task_loss(s, t, 2.0) for s, t in zip(student, teacher, strict=True))
    assert parts["kd"].item() == pytest.approx(per_head.item(), abs=1e-6)
    joint = paper_old_task_loss(torch.cat(student, 1), torch.cat(teacher, 1), 2.0)
    assert abs(per_head.item() - joint.item()) > 1e-3  # not the class-IL form
