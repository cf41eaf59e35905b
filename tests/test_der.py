import math

import pytest
import torch

from cl_runner.data.schedule import Task
from cl_runner.methods.der import DER
from cl_runner.models.expandable import ExpandableNet
from cl_runner.train import build_runner, run

from .conftest import TINY, make_cfg
from .tiny import Pixels, make_batch

DER_TINY = [*TINY, "method=der", "memory.size=40", "steps=5", "train.epochs=2"]


def states(module) -> dict:
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in module.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    equal = lambda x, y: torch.equal(x, y) if torch.is_tensor(x) else x == y  # noqa: E731
    return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)


def test_old_extractors_stay_bit_identical(tmp_path):
    runner = build_runner(make_cfg(*DER_TINY), tmp_path)
    runner.learn(runner.benchmark.tasks[0])
    first = states(runner.model.extractors[0])
    runner.learn(runner.benchmark.tasks[1])
    second = states(runner.model.extractors[1])
    assert same(states(runner.model.extractors[0]), first)  # weights and BatchNorm statistics
    runner.learn(runner.benchmark.tasks[2])
    assert same(states(runner.model.extractors[0]), first)
    assert same(states(runner.model.extractors[1]), second)
    assert not same(states(runner.model.extractors[2]), second)  # the new one learnt
    assert len(runner.model.extractors) == 3


@pytest.mark.parametrize("reuse", [False, True])
def test_growth_copies_extractor_adds_aux_and_makes_a_fresh_bias_free_classifier(reuse):
    torch.manual_seed(0)
    from cl_runner.models.resnet_cifar import resnet20

    net = ExpandableNet(resnet20(1), reuse_classifier=reuse)
    net.add_head(2)
    assert net.aux_classifier is None and net.classifier.weight.shape == (2, 64)
    assert net.classifier.bias is None  # official use_bias: False
    old_w = net.classifier.weight.detach().clone()
    net.add_head(3)
    assert same(states(net.extractors[1]), states(net.extractors[0]))  # initialised from the previous
    assert net.classifier.weight.shape == (5, 128) and net.feature_dim == 128
    # official reuse_oldfc: False, a new classifier each task; reuse_classifier=true copies
    assert torch.equal(net.classifier.weight[:2, :64], old_w) == reuse
    assert net.aux_classifier.out_features == 3 + 1 and net.aux_classifier.in_features == 64
    assert net.aux_classifier.bias is None
    assert not any(p.requires_grad for p in net.extractors[0].parameters())
    assert all(p.requires_grad for p in net.extractors[1].parameters())
    net.train()
    assert not net.extractors[0].training and net.extractors[1].training


def test_old_extractors_run_forward_only():
    from cl_runner.models.resnet_cifar import resnet20

    net = ExpandableNet(resnet20(1))
    net.add_head(2)
    net.add_head(2)
    out = net.train()(torch.randn(4, 1, 8, 8))
    out["logits"].sum().backward()
    assert all(p.grad is None for p in net.extractors[0].parameters())
    assert all(p.grad is not None for p in net.extractors[1].parameters())


def test_loss_by_hand_with_auxiliary_labels():
    net = ExpandableNet(Pixels(2))
    net.add_head(2)
    net.add_head(1)  # features (x, x): classifier 3 x 4, aux 2 x 2
    with torch.no_grad():
        net.classifier.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]]))
        net.aux_classifier.weight.copy_(torch.tensor([[0.0, 0], [2, 0]]))
    task = Task(1, (5,), 2)
    # One old-class sample (label 1) and one new-class sample (label 2), pixels (255, 0) and (0, 255).
    loss, parts = DER(aux_weight=0.5).training_loss(make_batch([[255, 0], [0, 255]], [1, 2], task), net)
    # logits: (1, 0, 1) for label 1 and (0, 1, 1) for label 2
    ce = (-math.log(math.exp(0) / (2 * math.e + 1)) - math.log(math.e / (1 + 2 * math.e))) / 2
    # aux logits: (0, 2) with aux label 0 (old class), (0, 0) with aux label 1 (first new class)
    aux = (-math.log(1 / (1 + math.exp(2))) - math.log(0.5)) / 2
    assert parts["ce"].item() == pytest.approx(ce, abs=1e-6)
    assert parts["aux"].item() == pytest.approx(aux, abs=1e-6)
    assert loss.item() == pytest.approx(ce + 0.5 * aux, abs=1e-6)


def test_balanced_stage_uses_new_data_plus_the_old_memory_and_moves_only_the_classifier(
    tmp_path, monkeypatch
):
    """Official `_after_task`: the classifier is reset and re-trained on the class-balanced
    union of the new task's data and the memory as it was *before* this task, every class cut
    to the smallest count; the extractors do not move. The runner runs it as a stage of its own,
    after the memory update, with its own phase time."""
    import cl_runner.runner as runner_module

    runner = build_runner(make_cfg(*DER_TINY, "memory.size=20"), tmp_path)
    runner.learn(runner.benchmark.tasks[0])
    memory_before = sorted(runner.memory.indices().tolist())  # 20 exemplars of 2 classes
    drawn, calls = [], []
    original_subset, original_stage = runner_module.balanced_subset, runner.run_stage
    monkeypatch.setattr(
        runner_module, "balanced_subset", lambda labels, g: drawn.append(labels) or original_subset(labels, g)
    )
    resets = []
    monkeypatch.setattr(runner.model, "reset_classifiers", lambda *a, **k: resets.append(k) or
                        type(runner.model).reset_classifiers(runner.model, *a, **k))  # fmt: skip

    def spy(task, data, stage):
        if stage.name != "balanced":
            return original_stage(task, data, stage)
        extractors, before = states(runner.model.extractors), states(runner.model.classifier)
        memory_now = sorted(runner.memory.indices().tolist())
        original_stage(task, data, stage)
        calls.append((torch.bincount(data.labels).tolist(), same(states(runner.model.extractors), extractors),
                      same(states(runner.model.classifier), before), memory_now))  # fmt: skip

    runner.run_stage = spy
    runner.learn(runner.benchmark.tasks[1])
    ((counts, extractors_unchanged, classifier_unchanged, memory_during),) = calls
    assert counts == [10, 10, 20, 20]  # memory of task 0 (2 x 10) + task 1's data (2 x 20)
    (labels,) = drawn
    assert torch.equal(labels.sort().values, torch.tensor([0] * 10 + [1] * 10 + [2] * 20 + [3] * 20))
    assert memory_before != memory_during  # the stage runs after the memory update ...
    assert resets == [{"aux": False}]  # ... and resets the classifier, not the auxiliary one
    assert extractors_unchanged and not classifier_unchanged
    assert list(runner.results.steps[1]["phase_seconds"])[:6] == [
        "train", "recalibrate", "memory", "after_task", "balanced", "evaluate"
    ]  # fmt: skip


def test_balanced_subset_cuts_every_class_to_the_smallest_count():
    from cl_runner.data.batch import balanced_subset

    labels = torch.tensor([0] * 7 + [1] * 3 + [2] * 5)
    picked = balanced_subset(labels, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[picked]).tolist() == [3, 3, 3] and len(set(picked.tolist())) == 9


def test_classifiers_are_reset_when_the_warmup_ends_and_not_otherwise():
    from cl_runner.models.resnet_cifar import resnet20

    net = ExpandableNet(resnet20(1))
    net.add_head(2)
    net.add_head(2)
    der = DER(reset_classifiers_epoch=10)
    data = type("Data", (), {"generator": torch.Generator().manual_seed(0)})()
    snapshot = lambda: (net.classifier.weight.clone(), net.aux_classifier.weight.clone())  # noqa: E731
    before = snapshot()
    der.epoch_start(9, net, data)
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(), strict=True))
    der.epoch_start(10, net, data)
    assert not any(torch.equal(a, b) for a, b in zip(before, snapshot(), strict=True))
    again = snapshot()
    DER(reset_classifiers_epoch=0).epoch_start(0, net, data)  # no warm-up: never
    assert all(torch.equal(a, b) for a, b in zip(again, snapshot(), strict=True))


def test_der_beats_finetune_on_synthetic(tmp_path):
    der = run(make_cfg(*DER_TINY), tmp_path / "der").summary()["class_il"]["last_acc"]
    finetune = run(make_cfg(*TINY, "steps=5", "train.epochs=2"), tmp_path / "ft").summary()["class_il"][
        "last_acc"
    ]
    assert der > finetune + 20


def test_params_grow_by_one_extractor_per_task_and_pruning_keeps_fewer(tmp_path):
    results = run(make_cfg(*DER_TINY), tmp_path)
    unpruned = [s["params_unpruned"] for s in results.steps]
    pruned = [s["params"] for s in results.steps]
    extractor = sum(p.numel() for p in build_runner(make_cfg(*DER_TINY), tmp_path / "x").model.parameters())
    assert unpruned[1] - unpruned[0] > 0.9 * extractor
    assert all(p < u for p, u in zip(pruned, unpruned, strict=True))


def test_without_pruning_there_are_no_masks(tmp_path):
    runner = build_runner(make_cfg(*DER_TINY, "method.prune=false"), tmp_path)
    assert runner.model.masks is None
    runner.learn(runner.benchmark.tasks[0])
    runner.learn(runner.benchmark.tasks[1])
    step = runner.results.steps[-1]
    assert step["params"] == step["params_unpruned"]
    assert runner.model.extractors[0].feature_dim == runner.model.dense_dim
