"""Validation of a composed config in one place: every value a user can set is checked here,
and a bad one becomes a single `ConfigError` line naming the key, the value and what is allowed."""

from numbers import Real
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from cl_runner.data.schedule import class_order, task_sizes
from cl_runner.errors import ConfigError
from cl_runner.precision import evaluates_faster_in_nhwc, forward_batch_size, prefers_channels_last
from cl_runner.settings import TrainSettings

SCHEDULERS = ("multistep", "cosine", "constant")
SELECTIONS = ("herding", "welling", "random")
LOGGER_MODES = ("auto", "online", "offline", "disabled")


def _get(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, throw_on_missing=False)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(cfg, key: str, minimum: int, optional: bool = False) -> int | None:
    value = _get(cfg, key)
    if value is None and optional:
        return None
    if not _is_int(value) or value < minimum:
        what = f"an integer >= {minimum}" + (" or null" if optional else "")
        raise ConfigError(f"{key}={value!r} is invalid: expected {what}")
    return value


def _number(cfg, key: str, minimum: float, inclusive: bool = True, maximum: float | None = None) -> float:
    value = _get(cfg, key)
    ok = isinstance(value, Real) and not isinstance(value, bool)
    ok = ok and (value >= minimum if inclusive else value > minimum)
    ok = ok and (maximum is None or value < maximum)
    if not ok:
        bound = f"{'>=' if inclusive else '>'} {minimum}" + (f" and < {maximum}" if maximum else "")
        raise ConfigError(f"{key}={value!r} is invalid: expected a number {bound}")
    return float(value)


def _choice(cfg, key: str, allowed) -> str:
    value = _get(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is invalid: choose from {', '.join(allowed)}")
    return value


def _bool(cfg, key: str) -> bool:
    value = _get(cfg, key)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is invalid: expected true or false")
    return value


def _auto_or(check, cfg, key: str, *args):
    """`auto` (decided for the device in `validate`) or what `check` accepts."""
    if _get(cfg, key) == "auto":
        return "auto"
    try:
        return check(cfg, key, *args)
    except ConfigError as error:
        raise ConfigError(f"{error} or auto") from None


def resolve_device(value) -> torch.device:
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={value!r} is invalid: choose from auto, cpu, cuda, cuda:N, mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={value} but no CUDA device is available; use device=auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={value} but MPS is not available; use device=auto or cpu")
    return device


def train_settings(cfg: DictConfig) -> TrainSettings:
    milestones = _get(cfg, "train.milestones")
    if milestones is None or not all(_is_int(m) and m >= 0 for m in milestones):
        raise ConfigError(
            f"train.milestones={milestones!r} is invalid: expected a list of epochs, e.g. [30,40]"
        )
    return TrainSettings(
        epochs=_int(cfg, "train.epochs", 1),
        batch_size=_int(cfg, "train.batch_size", 1),
        lr=_number(cfg, "train.lr", 0, inclusive=False),
        momentum=_number(cfg, "train.momentum", 0, maximum=1),
        weight_decay=_number(cfg, "train.weight_decay", 0),
        scheduler=_choice(cfg, "train.scheduler", SCHEDULERS),
        milestones=list(milestones),
        gamma=_number(cfg, "train.gamma", 0, inclusive=False),
        warmup_epochs=_int(cfg, "train.warmup_epochs", 0),
        eval_batch_size=_auto_or(_int, cfg, "train.eval_batch_size", 1),
        amp=_bool(cfg, "train.amp"),
        channels_last=_auto_or(_bool, cfg, "train.channels_last"),
        compile=_bool(cfg, "train.compile"),
        precise_bn=_bool(cfg, "train.precise_bn"),
        deterministic=_bool(cfg, "train.deterministic"),
        later_lr_factor=_auto_or(_number, cfg, "train.later_lr_factor", 0, False),
        fix_bn=_auto_or(_bool, cfg, "train.fix_bn"),
    )


def pretrained_data(backbone: DictConfig) -> str | None:
    """The data set the backbone's weights were trained on: named, or ImageNet for torchvision's."""
    if _get(backbone, "weights_data"):
        return str(_get(backbone, "weights_data"))
    return "imagenet" if _get(backbone, "weights") == "imagenet" else None


def expand_sequence(cfg: DictConfig, config_root: Path) -> None:
    """`sequence=[a,b,...]`: each name's data set config, resolved as if it were `dataset` and
    with the user's `sets.<name>.*` overrides, goes to `sequence_sets`; `dataset` becomes the
    first set that is learnt (its schedule is train.*'s default); the backbone's weights data set
    is written out, so the first set is the pretrained task when it is that data set."""
    names = _get(cfg, "sequence")
    if not OmegaConf.is_list(names) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(
            f"sequence={names!r} is invalid: expected a list of data set names, e.g. [cub200,scenes67]"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"sequence={list(names)} names a data set twice")
    if _get(cfg, "init_classes") is not None or _get(cfg, "class_order") is not None:
        raise ConfigError("sequence is one task per data set: init_classes and class_order do not apply")
    known = sorted(p.stem for p in (config_root / "dataset").glob("*.yaml"))
    nodes = []
    for name in names:
        if name not in known:
            raise ConfigError(f"sequence: no data set {name!r}; choose from {', '.join(known)}")
        node = OmegaConf.load(config_root / "dataset" / f"{name}.yaml")
        overrides = _get(cfg, f"sets.{name}")
        if overrides is not None:
            node = OmegaConf.merge(node, overrides)
        with open_dict(cfg):
            cfg.dataset = node  # resolved where it will stand: ${dataset.root} and the like
            nodes.append(OmegaConf.create(OmegaConf.to_container(cfg.dataset, resolve=True)))
    pretrained = pretrained_data(cfg.backbone)
    with open_dict(cfg):
        if "weights" in cfg.backbone:  # backbones that can load weights
            cfg.backbone.weights_data = pretrained
        learnt = [n for name, n in zip(names, nodes, strict=True) if name != pretrained]
        if not learnt:
            raise ConfigError(f"sequence={list(names)} has no task to learn after the pretrained one")
        cfg.dataset = learnt[0]
        cfg.sequence_sets = {name: node for name, node in zip(names, nodes, strict=True)}


def validate(cfg: DictConfig) -> tuple[TrainSettings, torch.device]:
    """Check every user-settable value; return the plain training settings and the device."""
    for group in ("method", "backbone", "dataset"):
        if not isinstance(_get(cfg, group), DictConfig):
            raise ConfigError(f"no {group} is configured; pick one, e.g. {group}=<name>")
    num_classes = _int(cfg, "dataset.num_classes", 1)
    if not _get(cfg, "sequence"):
        steps = _int(cfg, "steps", 1)
        init_classes = _int(cfg, "init_classes", 1, optional=True)
        if steps > num_classes:
            raise ConfigError(f"steps={steps} is more than the {num_classes} classes of the data set")
        task_sizes(num_classes, steps, init_classes)  # raises with the values that work
    _int(cfg, "class_order_seed", 0, optional=True)
    explicit = _get(cfg, "class_order")
    if explicit is not None:
        if not OmegaConf.is_list(explicit) or not all(_is_int(c) for c in explicit):
            raise ConfigError(f"class_order={explicit!r} is invalid: expected a list of class ids or null")
        class_order(num_classes, None, list(explicit))  # raises unless it is a permutation
    if _get(cfg, "dataset.augment.brightness") is not None:
        _number(cfg, "dataset.augment.brightness", 0)
    _int(cfg, "seed", 0)
    _int(cfg, "checkpoint.every_epochs", 0)
    _number(cfg, "checkpoint.every_minutes", 0)
    if _get(cfg, "resume") != "auto":
        _bool(cfg, "resume")
    _int(cfg, "memory.size", 0)
    per_class = _int(cfg, "memory.per_class", 1, optional=True)
    if per_class and _get(cfg, "memory.size"):
        raise ConfigError("memory.size and memory.per_class are both set; use one (set the other to 0/null)")
    _choice(cfg, "memory.selection", SELECTIONS)
    if isinstance(_get(cfg, "addon"), DictConfig):  # SD's settings
        _number(cfg, "addon.T", 0, inclusive=False)
        for key in ("kl_weight", "mmd_weight", "noise_std"):
            _number(cfg, f"addon.{key}", 0)
    _bool(cfg, "logger.plots")
    _choice(cfg, "logger.mode", LOGGER_MODES)
    settings = train_settings(cfg)
    if settings.warmup_epochs > settings.epochs:
        raise ConfigError(
            f"train.warmup_epochs={settings.warmup_epochs} exceeds train.epochs={settings.epochs}"
        )
    device = resolve_device(_get(cfg, "device"))
    if settings.eval_batch_size == "auto":
        settings.eval_batch_size = forward_batch_size(device)
    if settings.channels_last == "auto":
        settings.channels_last = prefers_channels_last(device)
    settings.eval_channels_last = settings.channels_last or evaluates_faster_in_nhwc(device)
    sequence = bool(_get(cfg, "sequence"))
    if settings.later_lr_factor == "auto":
        settings.later_lr_factor = 0.1 if sequence and not _get(cfg, "backbone.weights") else 1.0
    if settings.fix_bn == "auto":
        settings.fix_bn = sequence
    return settings, device


def run_choices(cfg: DictConfig, choices: dict, user_overrides: list[str]) -> dict:
    """The config-group picks to record for a run. A method_dataset recipe may pin its own
    backbone (DER on CIFAR-100: ResNet-18), so the backbone is named by what will be built;
    a different backbone asked for on the command line would be silently replaced: refuse it."""
    choices = {k: v for k, v in choices.items() if not k.startswith("hydra/")}
    if _get(cfg, "sequence"):
        split_keys = [o.split("=", 1)[0].lstrip("+~") for o in user_overrides]
        if "steps" in split_keys or "init_classes" in split_keys:
            raise ConfigError(
                "sequence sets one task per data set: drop steps/init_classes (they split one data set)"
            )
        choices["dataset"] = "+".join(_get(cfg, "sequence"))
    if _get(cfg, "addon") is None:  # `optional addon: ${method}` names the method when no add-on exists
        choices.pop("addon", None)
    built = str(cfg.backbone._target_).rsplit(".", 1)[-1]
    asked = [o.split("=", 1)[1] for o in user_overrides if o.split("=", 1)[0].lstrip("+") == "backbone"]
    if asked and asked[-1] != built:
        recipe = choices.get("method_dataset")
        raise ConfigError(
            f"method_dataset/{recipe} pins backbone={built} (the recipe's); add ~method_dataset "
            f"to run backbone={asked[-1]} without the recipe"
        )
    choices["backbone"] = built
    return choices
