import math

import pytest
import torch

from cl_runner.data.schedule import Task
from cl_runner.methods.der import DER
from cl_runner.models.expandable import ExpandableNet
from cl_runner.train import build_runner, run

from .conftest import TINY, make_cfg
from .tiny import Pixels, make_batch

DER_TINY = [*TINY, "method=der", "memory.size=40", "steps=5", "train.epochs=2", "method.balanced_epochs=3"]


def states(module) -> dict:
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in module.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    equal = lambda x, y: torch.equal(x, y) if torch.is_tensor(x) else x == y  # noqa: E731
    return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)


def test_old_extractors_stay_bit_identical(tmp_path):
    runner = build_runner(make_cfg(*DER_TINY), tmp_path)
    runner.learn(runner.tasks[0])
    first = states(runner.model.extractors[0])
    runner.learn(runner.tasks[1])
    second = states(runner.model.extractors[1])
    assert same(states(runner.model.extractors[0]), first)  # weights and BatchNorm statistics
    runner.learn(runner.tasks[2])
    assert same(states(runner.model.extractors[0]), first)
    assert same(states(runner.model.extractors[1]), second)
    assert not same(states(runner.model.extractors[2]), second)  # the new one learnt
    assert len(runner.model.extractors) == 3


def test_growth_copies_extractor_and_classifier_and_adds_aux():
    torch.manual_seed(0)
    from cl_runner.models.resnet_cifar import resnet20

    net = ExpandableNet(resnet20(1))
    net.add_head(2)
    assert net.aux_classifier is None and net.classifier.weight.shape == (2, 64)
    old_w, old_b = net.classifier.weight.detach().clone(), net.classifier.bias.detach().clone()
    net.add_head(3)
    assert same(states(net.extractors[1]), states(net.extractors[0]))  # initialised from the previous
    assert net.classifier.weight.shape == (5, 128) and net.feature_dim == 128
    assert torch.equal(net.classifier.weight[:2, :64], old_w) and torch.equal(net.classifier.bias[:2], old_b)
    assert net.aux_classifier.out_features == 3 + 1 and net.aux_classifier.in_features == 64
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
        net.classifier.bias.zero_()
        net.aux_classifier.weight.copy_(torch.tensor([[0.0, 0], [2, 0]]))
        net.aux_classifier.bias.zero_()
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


def test_balanced_classifier_learning_moves_only_the_classifier(tmp_path):
    runner = build_runner(make_cfg(*DER_TINY), tmp_path)
    runner.learn(runner.tasks[0])
    calls = []
    original = runner.method.retrain_classifier

    def spy(classifier, features, labels):
        extractors = states(runner.model.extractors)
        before = states(classifier)
        original(classifier, features, labels)
        calls.append((torch.bincount(labels).tolist(), same(states(runner.model.extractors), extractors),
                      same(states(classifier), before)))  # fmt: skip

    runner.method.retrain_classifier = spy
    runner.learn(runner.tasks[1])
    ((counts, extractors_unchanged, classifier_unchanged),) = calls
    assert counts == [10, 10, 10, 10]  # 40 exemplars, 4 seen classes: balanced
    assert extractors_unchanged and not classifier_unchanged


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
    runner.learn(runner.tasks[0])
    runner.learn(runner.tasks[1])
    step = runner.results.steps[-1]
    assert step["params"] == step["params_unpruned"]
    assert runner.model.extractors[0].feature_dim == runner.model.dense_dim
