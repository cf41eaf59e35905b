"""The run spec: the composed config read once into frozen, typed values. Every value a user can
set is checked here (or in its method's constructor), a bad one is one `ConfigError` line naming
the key, the value and what is allowed; `auto` values become values in `RunSpec.on(device)`.
The runner, the checkpoint and metrics.json see the spec, never the config."""

import copy
import inspect
from dataclasses import dataclass, field, replace
from numbers import Real
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from cl_runner.data.schedule import class_order, task_sizes
from cl_runner.dicts import flatten
from cl_runner.errors import ConfigError
from cl_runner.hparams import ContinualSearch
from cl_runner.precision import evaluates_faster_in_nhwc, forward_batch_size, prefers_channels_last
from cl_runner.settings import FirstTask, TrainSettings

SCHEDULERS = ("multistep", "cosine", "constant")
SELECTIONS = ("herding", "welling", "random")  # data/memory.py's selections
LOGGER_MODES = ("auto", "online", "offline", "disabled")
#: what may change between a run and its resumption: where it logs, how often it checkpoints
NOT_COMPARED = ("resume", "logger", "checkpoint", "objective")


#: what cl-run returns to a Hydra sweeper: auto = the held-out split's average incremental
#: accuracy where `validation` is set, else the test set's last accuracy (a sweep is then warned)
OBJECTIVES = ("auto", "validation.avg_incremental_acc", "validation.last_acc",
              "test.avg_incremental_acc", "test.last_acc")  # fmt: skip


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


def _number(
    cfg, key: str, minimum: float, inclusive: bool = True, maximum: float | None = None, optional=False
):
    value = _get(cfg, key)
    if value is None and optional:
        return None
    ok = isinstance(value, Real) and not isinstance(value, bool)
    ok = ok and (value >= minimum if inclusive else value > minimum)
    ok = ok and (maximum is None or value < maximum)
    if not ok:
        bound = f"{'>=' if inclusive else '>'} {minimum}" + (f" and < {maximum}" if maximum else "")
        raise ConfigError(
            f"{key}={value!r} is invalid: expected a number {bound}" + (" or null" if optional else "")
        )
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
    """`auto` (decided in `RunSpec.on`) or what `check` accepts."""
    if _get(cfg, key) == "auto":
        return "auto"
    try:
        return check(cfg, key, *args)
    except ConfigError as error:
        raise ConfigError(f"{error} or auto") from None


def _epochs(cfg, key: str, optional: bool = False) -> tuple[int, ...] | None:
    value = _get(cfg, key)
    if value is None and optional:
        return None
    if not OmegaConf.is_list(value) or not all(_is_int(m) and m >= 0 for m in value):
        raise ConfigError(f"{key}={value!r} is invalid: expected a list of epochs, e.g. [30,40]")
    return tuple(value)


@dataclass(frozen=True)
class Protocol:
    """What is learnt in which order: a class split of one data set, or data sets in turn."""

    dataset: str  # the data set's config name; a sequence: the names joined by "+"
    num_classes: int
    steps: int
    init_classes: int | None
    class_order_seed: int | None
    class_order: tuple[int, ...] | None
    sequence: tuple[str, ...] = ()
    validation: float | int = 0  # held out of each class's training images: a share, or a count


@dataclass(frozen=True)
class Memory:
    size: int = 0
    per_class: int | None = None
    selection: str = "herding"


@dataclass(frozen=True)
class Checkpointing:
    every_epochs: int = 0
    every_minutes: float = 10.0


@dataclass(frozen=True)
class Logging:
    mode: str = "auto"
    plots: bool = True
    options: dict = field(default_factory=dict)  # the logger node's other keys (W&B's project, ...)


@dataclass(frozen=True)
class Recipe:
    """The paper recipe (`method_dataset/`) and preset (`experiment/`) the run picked, and every
    key they set with the value it has (a command-line override wins over both)."""

    recipe: str | None = None
    preset: str | None = None
    sets: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RunSpec:
    protocol: Protocol
    training: TrainSettings
    memory: Memory
    checkpoint: Checkpointing
    logging: Logging
    recipe: Recipe
    seed: int
    device: str
    resume: bool | str  # false | true | "auto"
    choices: dict  # the config picked in each group (method, dataset, backbone, addon, ...)
    method: DictConfig
    backbone: DictConfig
    dataset: DictConfig  # a sequence: its first learnt set
    addon: DictConfig | None
    sets: dict  # a sequence: each set's resolved config, in order
    config: dict  # the resolved config: config.yaml, metrics.json, and what resume compares
    objective: str = "auto"  # what cl-run returns to a sweeper (`OBJECTIVES`)
    search: ContinualSearch | None = None  # hparams_search=continual: chosen per task (hparams.py)

    @classmethod
    def from_config(
        cls, cfg: DictConfig, choices: dict | None = None, overrides=(), config_root=None
    ) -> "RunSpec":
        """Check every value of a composed config and read it into a spec. `choices`: Hydra's
        group picks; `overrides`: the command line's (a recipe's backbone asked against)."""
        cfg = copy.deepcopy(cfg)  # the caller's config stays as composed
        for group in ("method", "backbone", "dataset"):
            if not isinstance(_get(cfg, group), DictConfig):
                raise ConfigError(f"no {group} is configured; pick one, e.g. {group}=<name>")
        sequence = _get(cfg, "sequence")
        sets = expand_sequence(cfg, Path(config_root)) if sequence is not None else {}
        if sequence is not None:
            keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
            if "steps" in keys or "init_classes" in keys:
                raise ConfigError(
                    "sequence sets one task per data set: drop steps/init_classes (they split one data set)"
                )
        protocol = read_protocol(cfg, choices or {})
        for node in ("method", "addon"):
            if isinstance(_get(cfg, node), DictConfig):
                check_types(cfg, node)
        if "head_epochs" in cfg.method:  # the method parameter the runner reads: checked once here
            _int(cfg, "method.head_epochs", 0)
        if _get(cfg, "dataset.augment.brightness") is not None:
            _number(cfg, "dataset.augment.brightness", 0)
        resume = _get(cfg, "resume")
        if resume != "auto":
            resume = _bool(cfg, "resume")
        per_class = _int(cfg, "memory.per_class", 1, optional=True)
        memory = Memory(_int(cfg, "memory.size", 0), per_class, _choice(cfg, "memory.selection", SELECTIONS))
        if memory.per_class and memory.size:
            raise ConfigError(
                "memory.size and memory.per_class are both set; use one (set the other to 0/null)"
            )
        logger = OmegaConf.to_container(cfg.logger, resolve=True)
        logging = Logging(
            _choice(cfg, "logger.mode", LOGGER_MODES),
            _bool(cfg, "logger.plots"),
            {k: v for k, v in logger.items() if k not in ("mode", "plots")},
        )
        config = OmegaConf.to_container(cfg, resolve=True)
        objective = _choice(cfg, "objective", OBJECTIVES) if _get(cfg, "objective") is not None else "auto"
        if objective.startswith("validation.") and not protocol.validation:
            raise ConfigError(f"objective={objective} needs a held-out split: set validation (e.g. 0.1)")
        search = read_search(cfg, protocol)
        return cls(
            protocol=protocol,
            training=read_training(cfg),
            memory=memory,
            checkpoint=Checkpointing(
                _int(cfg, "checkpoint.every_epochs", 0), _number(cfg, "checkpoint.every_minutes", 0)
            ),
            logging=logging,
            recipe=read_recipe(cfg, choices or {}, config_root),
            seed=_int(cfg, "seed", 0),
            device=str(_get(cfg, "device")),
            resume=resume,
            choices=run_choices(cfg, choices or {}, overrides),
            method=cfg.method,
            backbone=cfg.backbone,
            dataset=cfg.dataset,
            addon=cfg.addon if isinstance(_get(cfg, "addon"), DictConfig) else None,
            sets=sets,
            config=config,
            objective=objective,
            search=search,
        )

    def on(self, device: torch.device) -> "RunSpec":
        """Every `auto` decided for the device and the protocol: the one place that reads them."""
        t = self.training
        channels_last = prefers_channels_last(device) if t.channels_last == "auto" else t.channels_last
        pretrained = bool(_get(self.backbone, "weights"))
        sequence = bool(self.protocol.sequence)
        training = replace(
            t,
            eval_batch_size=forward_batch_size(device) if t.eval_batch_size == "auto" else t.eval_batch_size,
            channels_last=channels_last,
            eval_channels_last=channels_last or evaluates_faster_in_nhwc(device),
            later_lr_factor=(0.1 if sequence and not pretrained else 1.0)
            if t.later_lr_factor == "auto"
            else t.later_lr_factor,
            fix_bn=sequence if t.fix_bn == "auto" else t.fix_bn,
        )
        return replace(self, training=training)

    def comparable(self) -> dict:
        """What a resumed run must share with its checkpoint: everything that changes results."""
        return {k: v for k, v in flatten(self.config).items() if k.split(".")[0] not in NOT_COMPARED}


def check_types(cfg: DictConfig, node: str) -> None:
    """Each parameter of a method or add-on node has the type its constructor declares (the
    constructor checks ranges): `addon.kl_weight=big` is one line, not a TypeError later."""
    from hydra.utils import get_method

    target = _get(cfg, f"{node}._target_")
    try:
        parameters = inspect.signature(get_method(target)).parameters
    except Exception:  # an unimportable target: instantiating it says why
        return
    checks = {float: lambda k: _number(cfg, k, float("-inf")), int: lambda k: _int(cfg, k, -(2**62)),
              bool: lambda k: _bool(cfg, k)}  # fmt: skip
    for name in cfg[node]:
        parameter = parameters.get(name)
        if parameter is None or parameter.annotation not in checks:
            continue
        if _get(cfg, f"{node}.{name}") is None and parameter.default is None:
            continue
        try:
            checks[parameter.annotation](f"{node}.{name}")
        except ConfigError:
            kind = {float: "a number", int: "an integer", bool: "true or false"}[parameter.annotation]
            raise ConfigError(
                f"{node}.{name}={_get(cfg, f'{node}.{name}')!r} is invalid: expected {kind}"
            ) from None


def read_protocol(cfg: DictConfig, choices: dict) -> Protocol:
    num_classes = _int(cfg, "dataset.num_classes", 1)
    sequence = tuple(_get(cfg, "sequence") or ())
    steps, init_classes = _get(cfg, "steps"), _get(cfg, "init_classes")
    if not sequence:
        if cfg.dataset.get("multilabel"):
            raise ConfigError(
                "a multi-label data set is one task of a sequence, e.g. sequence=[imagenet,voc2012]"
            )
        steps = _int(cfg, "steps", 1)
        init_classes = _int(cfg, "init_classes", 1, optional=True)
        if steps > num_classes:
            raise ConfigError(f"steps={steps} is more than the {num_classes} classes of the data set")
        task_sizes(num_classes, steps, init_classes)  # raises with the values that work
    seed = _int(cfg, "class_order_seed", 0, optional=True)
    explicit = _get(cfg, "class_order")
    if explicit is not None:
        if not OmegaConf.is_list(explicit) or not all(_is_int(c) for c in explicit):
            raise ConfigError(f"class_order={explicit!r} is invalid: expected a list of class ids or null")
        class_order(num_classes, None, list(explicit))  # raises unless it is a permutation
    name = "+".join(sequence) if sequence else choices.get("dataset", "dataset")
    order = tuple(explicit) if explicit is not None else None
    validation = _get(cfg, "validation") or 0
    if isinstance(validation, bool) or not isinstance(validation, Real) or validation < 0:
        raise ConfigError(
            f"validation={validation!r} is invalid: expected a share in [0, 1) or a count per class"
        )
    if not _is_int(validation) and validation >= 1:
        raise ConfigError(f"validation={validation!r} is invalid: a share is below 1; a count is an integer")
    if validation and sequence:
        raise ConfigError("validation holds out images of a class split; sequences have none yet")
    return Protocol(name, num_classes, steps, init_classes, seed, order, sequence, validation)


def read_search(cfg: DictConfig, protocol: Protocol) -> ContinualSearch | None:
    """`search` (hparams_search=continual): FACIL's continual framework, which scores each trial
    on the task's held-out images and so needs `validation`."""
    if not isinstance(_get(cfg, "search"), DictConfig):
        return None
    for key in ("lr_first", "lr"):
        values = _get(cfg, f"search.{key}")
        if not values or any(isinstance(v, bool) or not isinstance(v, Real) or v <= 0 for v in values):
            raise ConfigError(f"search.{key}={values!r} is invalid: expected a list of learning rates > 0")
    search = ContinualSearch(
        lr_first=tuple(_get(cfg, "search.lr_first")),
        lr=tuple(_get(cfg, "search.lr")),
        lr_searches=_int(cfg, "search.lr_searches", 1),
        acc_drop=_number(cfg, "search.acc_drop", 0),
        decay=_number(cfg, "search.decay", 0),
        max_searches=_int(cfg, "search.max_searches", 1),
        start=_number(cfg, "search.start", 0, inclusive=False, optional=True),
    )
    if not 0 <= search.acc_drop < 1 or not 0 < search.decay < 1:
        raise ConfigError("search.acc_drop must be in [0, 1) and search.decay in (0, 1)")
    if not protocol.validation:
        raise ConfigError(
            "hparams_search=continual scores each trial on held-out images: set validation (e.g. 0.1)"
        )
    return search


def read_training(cfg: DictConfig) -> TrainSettings:
    settings = TrainSettings(
        epochs=_int(cfg, "train.epochs", 1),
        batch_size=_int(cfg, "train.batch_size", 1),
        lr=_number(cfg, "train.lr", 0, inclusive=False),
        momentum=_number(cfg, "train.momentum", 0, maximum=1),
        weight_decay=_number(cfg, "train.weight_decay", 0),
        scheduler=_choice(cfg, "train.scheduler", SCHEDULERS),
        milestones=list(_epochs(cfg, "train.milestones")),
        gamma=_number(cfg, "train.gamma", 0, inclusive=False),
        warmup_epochs=_int(cfg, "train.warmup_epochs", 0),
        first_task=FirstTask(
            epochs=_int(cfg, "train.first_task.epochs", 1, optional=True),
            lr=_number(cfg, "train.first_task.lr", 0, inclusive=False, optional=True),
            milestones=_epochs(cfg, "train.first_task.milestones", optional=True),
            weight_decay=_number(cfg, "train.first_task.weight_decay", 0, optional=True),
        ),
        weight_decay_per_task=_choice(cfg, "train.weight_decay_per_task", ("same", "inverse")),
        eval_batch_size=_auto_or(_int, cfg, "train.eval_batch_size", 1),
        amp=_bool(cfg, "train.amp"),
        channels_last=_auto_or(_bool, cfg, "train.channels_last"),
        compile=_bool(cfg, "train.compile"),
        precise_bn=_bool(cfg, "train.precise_bn"),
        deterministic=_bool(cfg, "train.deterministic"),
        later_lr_factor=_auto_or(_number, cfg, "train.later_lr_factor", 0, False),
        fix_bn=_auto_or(_bool, cfg, "train.fix_bn"),
    )
    first = settings.schedule(first=True)
    for schedule, where in ((settings.schedule(), "train"), (first, "train.first_task")):
        if schedule.warmup_epochs > schedule.epochs:
            raise ConfigError(
                f"train.warmup_epochs={schedule.warmup_epochs} exceeds {where}.epochs={schedule.epochs}"
            )
    return settings


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


def pretrained_data(backbone: DictConfig) -> str | None:
    """The data set the backbone's weights were trained on: named, or ImageNet for torchvision's."""
    if _get(backbone, "weights_data"):
        return str(_get(backbone, "weights_data"))
    return "imagenet" if _get(backbone, "weights") == "imagenet" else None


def expand_sequence(cfg: DictConfig, config_root: Path) -> dict[str, DictConfig]:
    """`sequence=[a,b,...]` in a config the spec owns: each name's data set config, resolved as
    if it were `dataset` and with the user's `sets.<name>.*` overrides, in order; `dataset`
    becomes the first set that is learnt (train.*'s defaults read it); the backbone's weights
    data set is written out, so the first set is the pretrained task when it is that data set."""
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
    nodes = {}
    for name in names:
        if name not in known:
            raise ConfigError(f"sequence: no data set {name!r}; choose from {', '.join(known)}")
        node = OmegaConf.load(config_root / "dataset" / f"{name}.yaml")
        overrides = _get(cfg, f"sets.{name}")
        if overrides is not None:
            node = OmegaConf.merge(node, overrides)
        with open_dict(cfg):
            cfg.dataset = node  # resolved where it will stand: ${dataset.root} and the like
            nodes[name] = OmegaConf.create(OmegaConf.to_container(cfg.dataset, resolve=True))
    pretrained = pretrained_data(cfg.backbone)
    with open_dict(cfg):
        if "weights" in cfg.backbone:  # backbones that can load weights
            cfg.backbone.weights_data = pretrained
        learnt = [node for name, node in nodes.items() if name != pretrained]
        if not learnt:
            raise ConfigError(f"sequence={list(names)} has no task to learn after the pretrained one")
        cfg.dataset = learnt[0]
        cfg.sequence_sets = nodes
    return nodes


def run_choices(cfg: DictConfig, choices: dict, overrides) -> dict:
    """The config-group picks a run records. A method_dataset recipe may pin its own backbone
    (DER on CIFAR-100: ResNet-18), so the backbone is named by what will be built; a different
    backbone asked for on the command line would be silently replaced: refuse it."""
    choices = {k: v for k, v in choices.items() if not k.startswith("hydra/") and v is not None}
    if _get(cfg, "sequence"):
        choices["dataset"] = "+".join(_get(cfg, "sequence"))
    if _get(cfg, "addon") is None:  # `optional addon: ${method}` names the method when no add-on exists
        choices.pop("addon", None)
    built = str(cfg.backbone._target_).rsplit(".", 1)[-1]
    asked = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+") == "backbone"]
    if asked and asked[-1] != built:
        recipe = choices.get("method_dataset")
        raise ConfigError(
            f"method_dataset/{recipe} pins backbone={built} (the recipe's); add ~method_dataset "
            f"to run backbone={asked[-1]} without the recipe"
        )
    choices["backbone"] = built
    return choices


def read_recipe(cfg: DictConfig, choices: dict, config_root) -> Recipe:
    """The keys the picked recipe and preset files set, with the values the run has."""
    if config_root is None:
        return Recipe()
    root, sets = Path(config_root), {}
    picked = {"method_dataset": choices.get("method_dataset"), "experiment": choices.get("experiment")}
    for group, name in picked.items():
        if not name:
            continue
        paths = files_of(root / group, name)
        if not paths:  # an optional recipe (`${method}_${dataset}`) with no file: none applied
            picked[group] = None
            continue
        keys = {}
        for path in paths:
            node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
            node.pop("defaults", None)
            keys.update(flatten(node))
        sets[name] = {
            k: _plain(OmegaConf.select(cfg, k)) for k in keys if OmegaConf.select(cfg, k) is not None
        }
    return Recipe(picked["method_dataset"], picked["experiment"], sets)


def files_of(folder: Path, name: str) -> list[Path]:
    """A group file and the files of its own group it builds on (`defaults: [lwf_table_recipe]`)."""
    path = folder / f"{name}.yaml"
    if not path.is_file():
        return []
    defaults = OmegaConf.load(path).get("defaults") or []
    inherited = [d for d in defaults if isinstance(d, str) and d != "_self_"]
    return [p for d in inherited for p in files_of(folder, d)] + [path]


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def check_resumable(saved_config: dict, spec: RunSpec) -> None:
    """Resuming with another config would silently mix two experiments: name the keys that
    differ. Keys the checkpoint's config lacks (added since) count as equal where the value now
    is their default: off (null, 0, false), or the default of the constructor the node builds."""
    saved = {k: v for k, v in flatten(saved_config).items() if k.split(".")[0] not in NOT_COMPARED}
    now = spec.comparable()
    saved = {k: v for k, v in saved.items() if not k.startswith("paper")}  # paper numbers moved out of runs
    changed = []
    for key in sorted(saved.keys() | now.keys()):
        if key in saved and key in now:
            if saved[key] != now[key]:
                changed.append(key)
        elif key in now and not is_default(spec, key, now[key]):
            changed.append(key)
        elif key in saved and key not in now:
            changed.append(key)
    if changed:
        details = ", ".join(f"{k} ({saved.get(k)!r} -> {now.get(k)!r})" for k in changed[:6])
        more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        raise ConfigError(f"resume: the config differs from the checkpoint's in {details}{more}")


def is_default(spec: RunSpec, key: str, value) -> bool:
    """A key added since is switched off (null, 0, false: how new keys keep the old behaviour) or
    has its constructor's default."""
    if value is None or value is False or (isinstance(value, int | float) and value == 0):
        return True
    node, _, name = key.partition(".")
    target = {"method": spec.method, "addon": spec.addon, "backbone": spec.backbone}.get(node)
    if target is None or "." in name or "_target_" not in target:
        return False
    from hydra.utils import get_method

    try:
        parameter = inspect.signature(get_method(target._target_)).parameters.get(name)
    except Exception:  # a target that cannot be imported: nothing to compare with
        return False
    return parameter is not None and parameter.default == value
