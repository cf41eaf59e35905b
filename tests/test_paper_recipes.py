"""The paper presets and recipes say what the official code does: each test reads the composed
config (as `cl-run` would build it) or what the runner builds from it."""

import copy

import pytest
import torch
from omegaconf import OmegaConf

from cl_runner.data.loader import random_brightness
from cl_runner.data.schedule import make_schedule
from cl_runner.errors import ConfigError
from cl_runner.spec import RunSpec, check_resumable
from cl_runner.train import build_runner

from .conftest import CONFIGS, TINY, make_cfg, options, spec_of

DER_CIFAR = ["method=der", "dataset=cifar100", "device=cpu"]
PODNET_HEAD = [87, 0, 52, 58, 44, 91, 68, 97, 51, 15]


def test_der_cifar_lr_drops_at_110_and_130_after_10_warmup_epochs():
    """The official GradualWarmupScheduler restarts the epoch count after warm-up, so milestones
    100 and 120 drop the learning rate at epochs 110 and 130."""
    settings = spec_of(make_cfg(*DER_CIFAR)).training
    lr = {e: settings.schedule().lr_at(e) for e in (0, 9, 10, 109, 110, 129, 130, 169)}
    assert lr[0] == pytest.approx(0.01) and lr[9] == pytest.approx(0.1)  # linear warm-up
    assert lr[10] == pytest.approx(0.1) and lr[109] == pytest.approx(0.1)
    assert lr[110] == pytest.approx(0.01) and lr[129] == pytest.approx(0.01)
    assert lr[130] == pytest.approx(0.001) and lr[169] == pytest.approx(0.001)
    assert settings.epochs == 170 and settings.batch_size == 128 and not settings.precise_bn


def test_der_cifar_uses_podnets_class_order():
    cfg = make_cfg(*DER_CIFAR, "steps=10")
    order, tasks = make_schedule(100, 10, None, cfg.class_order_seed, cfg.class_order)
    assert list(tasks[0].classes) == PODNET_HEAD and sorted(order) == list(range(100))


def test_der_cifar_network_classifier_and_stages():
    cfg = make_cfg(*DER_CIFAR)
    m = cfg.method
    assert (m.reuse_classifier, m.classifier_bias, m.reset_classifiers_epoch) == (False, False, 10)
    assert (m.balanced_epochs, m.balanced_lr, list(m.balanced_milestones), m.balanced_temperature) == (
        30, 0.1, [15], 5.0,
    )  # fmt: skip
    assert cfg.dataset.augment.brightness == pytest.approx(63 / 255)
    assert (cfg.memory.size, cfg.memory.selection) == (2000, "welling")  # the official select_examplars
    assert list(cfg.dataset.mean) == [0.5071, 0.4867, 0.4408]  # the official normalisation
    assert list(cfg.dataset.std) == [0.2675, 0.2565, 0.2761]
    assert cfg.backbone.zero_init_residual and cfg.backbone.stem == "cifar"


def test_zero_init_residual_zeroes_every_branchs_last_batchnorm():
    from cl_runner.models.resnet18 import resnet18

    net = resnet18(zero_init_residual=True)
    blocks = list(net.layers)
    assert all(torch.count_nonzero(b.bn2.weight) == 0 for b in blocks)
    assert all(torch.count_nonzero(b.bn1.weight) == b.bn1.weight.numel() for b in blocks)
    assert torch.count_nonzero(resnet18().layers[0].bn2.weight) == 64


def test_brightness_jitter_is_colorjitters_factor_per_image():
    images = torch.full((400, 3, 2, 2), 0.5)
    out = random_brightness(images, 63 / 255, torch.Generator().manual_seed(0))
    factors = out[:, 0, 0, 0] / 0.5
    assert factors.min() >= 1 - 63 / 255 - 1e-6 and factors.max() <= 1 + 63 / 255 + 1e-6
    assert factors.std() > 0.1  # drawn per image, uniform over the range (std 0.1426)
    assert torch.equal(out[:, :, 0, 0], out[:, :, 1, 1])  # one factor for the whole image
    assert random_brightness(torch.ones(2, 1, 1, 1), 0.5, torch.Generator()).max() == 1.0  # clipped


def test_b50_presets_keep_20_exemplars_per_class():
    for name in ("der_cifar100_b50_2", "der_cifar100_b50_5", "der_cifar100_b50_10"):
        cfg = make_cfg(f"experiment={name}")
        assert (cfg.memory.size, cfg.memory.per_class, cfg.init_classes) == (0, 20, 50)


def test_imagenet100_preset_is_the_official_recipe():
    cfg = make_cfg("experiment=der_imagenet100_b0_10", "device=cpu")
    settings = spec_of(cfg).training
    assert (settings.epochs, settings.warmup_epochs, settings.milestones, settings.batch_size) == (
        220, 20, [60, 120, 160, 180], 256,
    )  # fmt: skip
    assert cfg.method.balanced_temperature == 1.0 and cfg.method.reset_classifiers_epoch == 20
    assert cfg.backbone._target_.endswith("preact_resnet18") and cfg.method.prune is False
    assert list(cfg.class_order[:5]) == [68, 56, 78, 8, 23]


# method: (epochs, batch, lr, milestones or the cosine schedule, weight decay, per task) from the
# authors' ImageNet code (docs/fidelity.md, "The DER table's other rows")
IMAGENET_RECIPES = {
    "icarl": (60, 128, 0.02, [20, 30, 40, 50], 1e-3, "same"),
    "ucir": (90, 128, 0.1, [30, 60], 1e-4, "same"),
    "podnet": (90, 64, 0.05, "cosine", 5e-4, "same"),
    "bic": (100, 256, 0.1, [30, 60, 80, 90], 1e-3, "inverse"),
    "wa": (100, 256, 0.1, [30, 60, 80, 90], 1e-4, "inverse"),
    "rpsnet": (100, 64, 0.001, [20, 40, 60, 80], 0.0, "same"),
}


@pytest.mark.parametrize("preset", ["der_imagenet100_b0_10", "der_imagenet100_b50_10"])
@pytest.mark.parametrize("method", list(IMAGENET_RECIPES))
def test_der_imagenet_rows_take_their_own_imagenet_recipe_on_the_tables_protocol(preset, method):
    """The overrides `reproduce.sh der_imagenet100` gives each row: the method's recipe, the
    table's protocol (steps, class order, 2,000 exemplars) and the standard ResNet-18 (RPSNet:
    its ImageNet network); nothing of DER's own recipe leaks into another method's run."""
    backbone = ["backbone=rpsnet"] if method == "rpsnet" else ["backbone=resnet18", "backbone.stem=imagenet"]
    cfg = make_cfg(f"experiment={preset}", f"method={method}", *backbone, "device=cpu")
    spec = spec_of(cfg)
    epochs, batch, lr, schedule, decay, per_task = IMAGENET_RECIPES[method]
    t = spec.training
    milestones = t.scheduler if schedule == "cosine" else t.milestones
    assert (t.epochs, t.batch_size, t.lr, milestones, t.weight_decay) == (epochs, batch, lr, schedule, decay)
    assert t.weight_decay_per_task == per_task and t.warmup_epochs == 0 and t.precise_bn is False
    assert (cfg.memory.size, cfg.memory.per_class, cfg.steps) == (2000, None, 10)
    assert list(cfg.class_order[:3]) == [68, 56, 78] and cfg.backbone.stem == "imagenet"
    assert "prune" not in cfg.method and "balanced_epochs" not in cfg.method
    own = {"ucir": ("lambda_base", 10.0), "podnet": ("flat_weight", 10.0), "rpsnet": ("rigidness", 10.0)}
    if method in own:
        assert cfg.method[own[method][0]] == own[method][1]
    assert cfg.validation == {"icarl": 50, "bic": 20, "rpsnet": 0.1}.get(method, 0)


def test_der_imagenet_b50_runs_the_official_b50_network():
    cfg = make_cfg("experiment=der_imagenet100_b50_10", "device=cpu")
    assert (cfg.backbone.stem, cfg.backbone.zero_init_residual, cfg.init_classes) == ("podnet", True, 50)
    assert cfg.method.prune is False and spec_of(cfg).training.epochs == 220  # der_womask, as B0


@pytest.mark.parametrize("name", options("experiment"))
def test_every_paper_preset_turns_batchnorm_recalibration_off_and_holds_no_paper_numbers(name):
    for prune in (["method.prune=true"], ["method.prune=false"]) if name.startswith("der") else ([],):
        cfg = make_cfg(f"experiment={name}", "device=cpu", *prune)
        spec_of(cfg)
        assert cfg.train.precise_bn is False
        assert not any(key.startswith("paper") for key in cfg)  # the registry holds them (test_papers.py)


@pytest.mark.parametrize(
    "dataset, recalibrates",
    [("mnist5k", True), ("digits", True), ("synthetic", True), ("mnist", False), ("cifar100", False)],
)
def test_only_the_embedded_sets_recalibrate_batchnorm_by_default(dataset, recalibrates):
    assert make_cfg(f"dataset={dataset}").train.precise_bn is recalibrates
    switched = make_cfg(f"dataset={dataset}", f"train.precise_bn={not recalibrates}")
    assert switched.train.precise_bn is not recalibrates


@pytest.mark.parametrize("dataset", ["mnist5k", "cifar100"])
def test_a_run_from_before_the_per_data_set_default_resumes_with_the_documented_overrides(dataset):
    """docs/recovering.md: such a run's config recalibrated and had no dataset.train.precise_bn."""
    resolved = OmegaConf.to_container(make_cfg(f"dataset={dataset}"), resolve=True)
    old = copy.deepcopy(resolved)
    old["train"]["precise_bn"] = True
    old["dataset"]["train"].pop("precise_bn", None)
    with pytest.raises(ConfigError, match="precise_bn"):
        check_resumable(old, RunSpec.from_config(make_cfg(f"dataset={dataset}"), config_root=CONFIGS))
    extra = ["~dataset.train.precise_bn"] if dataset == "mnist5k" else []
    again = make_cfg(f"dataset={dataset}", "train.precise_bn=true", *extra)
    check_resumable(old, RunSpec.from_config(again, config_root=CONFIGS))


@pytest.mark.parametrize(
    "sequence, recalibrates",
    [("[flowers102,scenes67]", False), ("[digits,mnist5k]", True)],
)
def test_a_sequence_recalibrates_as_its_first_learnt_set(sequence, recalibrates):
    assert spec_of(make_cfg(f"sequence={sequence}")).training.precise_bn is recalibrates


def test_explicit_class_order_must_be_a_permutation():
    with pytest.raises(ConfigError, match="class_order must list each of the 10 classes 0..9 once"):
        spec_of(make_cfg(*TINY, "class_order=[0,1,2,3,4,5,6,7,8,8]"))
    with pytest.raises(ConfigError, match="class_order must list each of the 10 classes"):
        spec_of(make_cfg(*TINY, "class_order=[0,1]"))
    cfg = make_cfg(*TINY, "class_order=[9,8,7,6,5,4,3,2,1,0]")
    spec_of(cfg)
    assert list(make_schedule(10, 5, None, 1993, cfg.class_order)[1][0].classes) == [9, 8]


def _head0_after_second_task(tmp_path, *overrides):
    runner = build_runner(make_cfg(*TINY, "steps=2", *overrides), tmp_path)
    runner.learn(runner.benchmark.tasks[0])
    before = [p.detach().clone() for p in runner.model.heads[0].parameters()]
    runner.learn(runner.benchmark.tasks[1])
    return all(torch.equal(a, b) for a, b in zip(before, runner.model.heads[0].parameters(), strict=True))


def test_finetune_without_exemplars_trains_the_new_heads_logits_only(tmp_path):
    """FACIL, PyCIL and the LwF paper: the old head gets no gradient without exemplars (weight
    decay off here: it still shrinks old heads, as it shrinks PyCIL's single classifier)."""
    no_decay = "train.weight_decay=0"
    assert _head0_after_second_task(tmp_path / "a", "method=finetune", no_decay)
    assert not _head0_after_second_task(tmp_path / "b", "method=finetune", no_decay, "method.all_logits=true")
    assert not _head0_after_second_task(tmp_path / "c", "method=finetune", no_decay, "memory.size=20")


def test_the_first_task_trains_with_its_own_schedule_and_the_later_ones_with_the_main_one(tmp_path):
    """train.first_task (PyCIL's WA: 200 epochs at weight decay 5e-4, then 170 at 2e-4): each
    value it sets replaces the main schedule's on the first learnt task only."""
    runner = build_runner(make_cfg(*TINY, "steps=2", "train.epochs=2", "train.weight_decay=2e-4",
                                   "train.first_task.epochs=3", "train.first_task.weight_decay=5e-4",
                                   "train.first_task.milestones=[1]"), tmp_path)  # fmt: skip
    seen = []
    run_epoch = runner.run_epoch

    def spy(batches, stage, optimizer, *rest):
        group = optimizer.param_groups[0]
        seen.append((runner.checkpointer.position.task, group["lr"], group["weight_decay"]))
        return run_epoch(batches, stage, optimizer, *rest)

    runner.run_epoch = spy
    runner.run()
    assert seen == [(0, 0.05, 5e-4), (0, pytest.approx(0.005), 5e-4), (0, pytest.approx(0.005), 5e-4),
                    (1, 0.05, 2e-4), (1, 0.05, 2e-4)]  # fmt: skip
    wa = spec_of(make_cfg("method=wa", "dataset=cifar100", "device=cpu")).training
    assert (wa.schedule(first=True).epochs, wa.schedule(first=True).milestones) == (200, (60, 120, 170))
    assert (wa.schedule().epochs, wa.schedule().weight_decay, wa.schedule(first=True).weight_decay) == (
        170, 2e-4, 5e-4,
    )  # fmt: skip


def test_inverse_weight_decay_divides_by_the_learnt_tasks_position(tmp_path):
    """BiC's official ImageNet code: weight decay 1e-4 x nb_groups / (itera + 1), i.e. 1e-3 / (t + 1)
    with 10 groups; WA's: 1e-4 / (t + 1). The optimizer of each task gets exactly that."""
    runner = build_runner(make_cfg(*TINY, "steps=5", "train.weight_decay=1e-3",
                                   "train.weight_decay_per_task=inverse"), tmp_path)  # fmt: skip
    seen = []
    run_epoch = runner.run_epoch

    def spy(batches, stage, optimizer, *rest):
        seen.append((runner.checkpointer.position.task, optimizer.param_groups[0]["weight_decay"]))
        return run_epoch(batches, stage, optimizer, *rest)

    runner.run_epoch = spy
    runner.run()
    assert [wd for _, wd in seen] == pytest.approx([1e-3 / (t + 1) for t in range(5)])
    assert [task for task, _ in seen] == list(range(5))
    same = spec_of(make_cfg(*TINY, "train.weight_decay=1e-3")).training
    assert [same.schedule(learnt=t).weight_decay for t in (0, 2)] == [1e-3, 1e-3]
