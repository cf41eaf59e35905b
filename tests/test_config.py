"""Every config group value composes; bad values fail with one clear line."""

import pytest
from omegaconf import OmegaConf

from cl_runner.errors import ConfigError
from cl_runner.instantiate import build
from cl_runner.spec import run_choices

from .conftest import make_cfg, options, spec_of


def test_defaults():
    cfg = make_cfg()
    assert cfg.steps == 5 and cfg.class_order_seed == 1993 and cfg.init_classes is None
    assert cfg.dataset.source._target_.endswith("mnist5k")
    assert cfg.method._target_.endswith("Finetune")
    assert cfg.backbone._target_.endswith("resnet32")
    spec_of(cfg)


@pytest.mark.parametrize("group", ["method", "backbone", "dataset", "logger", "experiment"])
def test_every_group_option_composes_and_validates(group):
    assert options(group), f"configs/{group} is empty"
    for name in options(group):
        # steps=1 splits any data set (the sequence sets' 67, 196, ... classes are not all split by 5)
        cfg = make_cfg(f"{group}={name}", "device=cpu", *(["steps=1"] if group == "dataset" else []))
        OmegaConf.to_container(cfg, resolve=True)
        if cfg.dataset.get("multilabel") and not cfg.sequence:
            with pytest.raises(ConfigError, match="a multi-label data set is one task of a sequence"):
                spec_of(cfg)
            continue
        spec = spec_of(cfg)
        if cfg.sequence:  # a preset's sequence: every set's config found and resolved
            assert list(spec.sets) == list(cfg.sequence) == list(spec.protocol.sequence)


def test_dataset_sets_its_training_defaults_and_command_line_wins():
    assert make_cfg("dataset=synthetic").train.epochs == 2
    assert make_cfg("dataset=synthetic", "train.epochs=7").train.epochs == 7


def test_override_dataset_root_style_keys():
    cfg = make_cfg("dataset=synthetic", "dataset.num_classes=20", "steps=4")
    assert cfg.dataset.source.num_classes == 20
    spec_of(cfg)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["steps=ten"], "steps='ten' is invalid: expected an integer >= 1"),
        (["steps=0"], "steps=0 is invalid: expected an integer >= 1"),
        (["steps=3"], "steps=3 does not split the 10 classes evenly; steps that work: 1, 2, 5, 10"),
        (["steps=20"], "steps=20 is more than the 10 classes"),
        (["init_classes=200"], "init_classes=200 is out of range"),
        (["init_classes=1.5"], "init_classes=1.5 is invalid"),
        (["train.lr=-1"], "train.lr=-1 is invalid: expected a number > 0"),
        (["class_order_seed=abc"], "class_order_seed='abc' is invalid"),
        (["memory.per_class=0"], "memory.per_class=0 is invalid"),
        (["train.epochs=0"], "train.epochs=0 is invalid"),
        (["train.batch_size=abc"], "train.batch_size='abc' is invalid"),
        (["train.momentum=1.5"], "train.momentum=1.5 is invalid"),
        (
            ["train.scheduler=step"],
            "train.scheduler='step' is invalid: choose from multistep, cosine, constant",
        ),
        (["train.milestones=[a]"], "train.milestones=['a'] is invalid"),
        (["train.amp=maybe"], "train.amp='maybe' is invalid: expected true or false"),
        (["memory.size=-5"], "memory.size=-5 is invalid"),
        (["memory.size=10", "memory.per_class=2"], "memory.size and memory.per_class are both set"),
        (["memory.selection=best"], "memory.selection='best' is invalid: choose from herding, welling"),
        (["device=tpu"], "device='tpu' is invalid"),
        (["seed=-1"], "seed=-1 is invalid"),
        (
            ["logger.mode=sometimes"],
            "logger.mode='sometimes' is invalid: choose from auto, online, offline, disabled",
        ),
        (["method=sd", "addon.T=0"], "addon.T=0 is invalid: expected a number > 0"),
        (["method=sd", "addon.kl_weight=big"], "addon.kl_weight='big' is invalid: expected a number"),
        (["method=lwf", "method.head_epochs=-1"], "method.head_epochs=-1 is invalid: expected an integer"),
        (["method=mas", "method.lamb=x"], "method.lamb='x' is invalid: expected a number"),
        (["sequence=[]"], "sequence=[] is invalid: expected a list of data set names"),
        (["train.precise_bn=1"], "train.precise_bn=1 is invalid: expected true or false"),
    ],
)
def test_bad_values_give_one_clear_line(overrides, message):
    """Checked once: by the spec, or by the method's or add-on's own constructor."""
    with pytest.raises(ConfigError) as info:
        spec = spec_of(make_cfg(*overrides))
        build(spec.method)
        if spec.addon is not None:
            build(spec.addon)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_cuda_requested_without_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device is available"):
        spec_of(make_cfg("device=cuda"))


def test_der_on_cifar100_picks_the_official_recipe():
    cfg = make_cfg("method=der", "dataset=cifar100")
    assert cfg.backbone._target_.endswith("resnet18.resnet18") and cfg.backbone.stem == "cifar"
    t = cfg.train
    assert (t.epochs, t.batch_size, t.lr, t.momentum, t.weight_decay) == (170, 128, 0.1, 0.9, 5e-4)
    assert (t.scheduler, list(t.milestones), t.gamma, t.warmup_epochs) == ("multistep", [100, 120], 0.1, 10)
    assert (cfg.memory.size, cfg.memory.per_class, cfg.memory.selection) == (2000, None, "welling")
    m = cfg.method
    assert (m.balanced_epochs, m.balanced_lr, list(m.balanced_milestones), m.balanced_temperature) == (
        30, 0.1, [15], 5.0,
    )  # fmt: skip
    assert m.prune is True
    # only for that pair, and the command line still wins
    assert make_cfg("method=lwf", "dataset=cifar100").backbone._target_.endswith("resnet32")
    assert make_cfg("method=der", "dataset=cifar100", "train.epochs=3").train.epochs == 3
    assert make_cfg("method=der", "dataset=cifar100", "~method_dataset").train.epochs == 160


def test_recorded_backbone_is_the_one_built():
    cfg = make_cfg("method=der", "dataset=cifar100")
    choices = {"method": "der", "dataset": "cifar100", "backbone": "resnet32", "hydra/launcher": "basic"}
    assert run_choices(cfg, {**choices, "method_dataset": "der_cifar100"}, ["method=der"]) == {
        "method": "der", "dataset": "cifar100", "backbone": "resnet18", "method_dataset": "der_cifar100",
    }  # fmt: skip
    with pytest.raises(ConfigError, match="add ~method_dataset"):
        run_choices(cfg, choices, ["backbone=resnet32"])
    picked = run_choices(make_cfg("backbone=resnet20"), choices, ["backbone=resnet20"])
    assert picked["backbone"] == "resnet20"


def test_der_cifar100_presets_follow_the_protocols():
    expected = {"b0_5": (None, 5), "b0_10": (None, 10), "b0_20": (None, 20), "b0_50": (None, 50),
                "b50_2": (50, 2), "b50_5": (50, 5), "b50_10": (50, 10)}  # fmt: skip
    for name, (base, steps) in expected.items():
        cfg = make_cfg(f"experiment=der_cifar100_{name}")
        assert (cfg.init_classes, cfg.steps) == (base, steps)
        assert list(cfg.class_order[:3]) == [87, 0, 52]  # the official configs' trial 2 (PODNet)
        assert cfg.train.epochs == 170 and cfg.backbone._target_.endswith("resnet18")


def test_an_optional_recipe_without_a_file_is_not_reported_as_applied():
    """`method_dataset: ${method}_${dataset}` is optional: Hydra records the choice (lwf_synthetic)
    even with no such file; the run then reports no recipe, and the console prints no line."""
    from dataclasses import asdict

    from cl_runner.loggers.console import recipe_lines

    none = spec_of(make_cfg("method=lwf", "dataset=synthetic"), {"method_dataset": "lwf_synthetic"})
    assert none.recipe.recipe is None and recipe_lines(asdict(none.recipe)) == []
    wa = spec_of(make_cfg("method=wa", "dataset=cifar100"), {"method_dataset": "wa_cifar100"})
    assert wa.recipe.recipe == "wa_cifar100" and recipe_lines(asdict(wa.recipe))[0].startswith(
        "recipe wa_cifar100 sets: "
    )
