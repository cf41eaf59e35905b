"""`cl-run`: compose the config with Hydra, read it into a run spec, build, fit, return the metric.

`main()` is the thin Hydra entry point; `run(cfg, out_dir)` does the work from plain values and
is what tests call. Nothing below this module reads Hydra's global state.
"""

import logging
import os
import platform
import random
import shutil
import sys
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cl_runner import checkpoint, distributed
from cl_runner.data.benchmark import Benchmark
from cl_runner.data.build import Form, load_sequence, load_splits
from cl_runner.data.images import Splits, hold_out
from cl_runner.data.loader import Augment
from cl_runner.data.memory import ExemplarMemory
from cl_runner.data.schedule import Task, make_schedule
from cl_runner.data.sequence import grey_to_rgb
from cl_runner.distributed import SINGLE, Ranks
from cl_runner.errors import ConfigError, UserError
from cl_runner.instantiate import build
from cl_runner.loggers import Loggers
from cl_runner.loggers.console import ConsoleLogger
from cl_runner.loggers.files import FileLogger
from cl_runner.loggers.plots import PlotLogger
from cl_runner.models.weights import IMAGENET_MEAN, IMAGENET_STD
from cl_runner.paths import config_dir
from cl_runner.precision import configure_backends, select_device
from cl_runner.preflight import FULL_ERROR, RANK_FOLDER_PREFIX, command_line, full_error, one_line
from cl_runner.results import Results
from cl_runner.runner import Interrupted, Runner
from cl_runner.spec import RunSpec, check_resumable, resolve_device

CONFIG_DIR = str(config_dir())
log = logging.getLogger("cl_runner")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_loggers(spec: RunSpec, out_dir: Path, choices: dict) -> Loggers:
    loggers = [ConsoleLogger(), FileLogger(out_dir, OmegaConf.to_yaml(spec.config))]
    if spec.logging.plots:
        loggers.append(PlotLogger(out_dir))
    if spec.logging.mode != "disabled":
        from cl_runner.loggers.wandb import WandbLogger

        config = {**spec.config, "recipe": asdict(spec.recipe)}
        loggers.append(WandbLogger(out_dir, config, choices, mode=spec.logging.mode, **spec.logging.options))
    return Loggers(*loggers)


def build_runner(
    cfg: DictConfig, out_dir: Path | str, choices: dict | None = None, ranks: Ranks = SINGLE, overrides=()
) -> Runner:
    """Everything a run needs, built from the composed config. With several processes
    (torchrun) this joins them; the run folder is rank 0's."""
    return runner_for(RunSpec.from_config(cfg, choices, overrides, config_dir()), out_dir, ranks)


def runner_for(spec: RunSpec, out_dir: Path | str, ranks: Ranks = SINGLE) -> Runner:
    """The runner of a checked spec: device, data, network, method, memory, loggers, checkpoint."""
    device = distributed.start(ranks, resolve_device(spec.device))
    spec = spec.on(device)
    select_device(device)
    configure_backends(device, spec.training.deterministic)
    out_dir = Path(ranks.from_leader(lambda: str(out_dir), device))
    if ranks.leader:
        check_writable(out_dir)
    seed_everything(spec.seed)
    splits, order, tasks, form = load_benchmark(spec)
    validation = None
    if spec.protocol.validation:
        train, validation = hold_out(splits.train, spec.protocol.validation)
        splits = Splits(train, splits.test)
    if spec.memory.size > len(splits.train):
        raise ConfigError(f"memory.size={spec.memory.size} exceeds the {len(splits.train)} training images")
    augment = Augment(
        form.mean,
        form.std,
        form.crop_padding,
        form.flip,
        channels_last=spec.training.channels_last,
        brightness=form.brightness,
    )
    benchmark = Benchmark.on_device(splits, order, tasks, augment, spec.seed, device, validation)
    backbone = build(spec.backbone, in_channels=form.channels, image_size=form.size)
    method = build(spec.method)
    addons = [build(spec.addon)] if spec.addon is not None else []
    model = method.network(backbone).to(device)
    pretrained_head = pretrained_classifier(tasks, backbone, model)
    share = method.exemplar_share  # BiC keeps part of the budget for its validation images
    size, per_class = (
        round(spec.memory.size * share),
        spec.memory.per_class and round(spec.memory.per_class * share),
    )
    memory = ExemplarMemory(size, per_class, spec.memory.selection, seed=spec.seed)
    name = spec.choices.get("method", type(method).__name__)
    if method.needs_memory and not memory.enabled:
        raise ConfigError(f"method={name} rehearses exemplars: set memory.size or memory.per_class")
    classes = sum(task.size for task in tasks)
    if memory.enabled and per_class is None and size < classes:  # the last tasks would keep none
        held = (
            f"{size} exemplars ({share:.0%} of memory.size={spec.memory.size})"
            if share < 1
            else f"memory.size={size}"
        )
        raise ConfigError(f"{held} cannot keep one exemplar for each of the {classes} classes")
    if method.needs_validation and validation is None:
        raise ConfigError(
            f"method={name} learns from held-out images (BiC's bias, RPSNet's choice of candidate): "
            "set validation (a share, or a count per class)"
        )
    saved = None
    # resume=auto (sweeps, SLURM requeues): continue when this folder already holds a checkpoint
    resume = (out_dir / checkpoint.CHECKPOINT).is_file() if spec.resume == "auto" else spec.resume
    if resume:
        saved = checkpoint.load(out_dir, device)
        check_resumable(saved["config"], spec)
    results = Results(len(tasks), config=spec.config, choices=spec.choices, recipe=asdict(spec.recipe))
    results.device, results.devices = device_name(device), ranks.world
    logger = build_loggers(spec, out_dir, results.choices) if ranks.leader else Loggers()
    log.info("class order: %s", order)
    checkpointer = checkpoint.Checkpointer(
        out_dir, spec.checkpoint.every_epochs, spec.checkpoint.every_minutes, ranks, device
    )
    runner = Runner(
        model, method, memory, benchmark, spec.training, device, results, logger, checkpointer, ranks, addons,
        pretrained_head, spec.search,
    )  # fmt: skip
    if saved is not None:
        runner.restore(saved)
        log.info("resumed at %s", saved["position"])
    return runner


def load_benchmark(spec: RunSpec) -> tuple[Splits, list[int], list[Task], Form]:
    """The images, the class order and the tasks: a class split of one data set, or a
    sequence of data sets (one task each, in the given order). Pretrained weights bring their
    own normalisation and read 3 channels: grey images are replicated, as in a sequence."""
    weights = OmegaConf.select(spec.backbone, "weights")
    if spec.protocol.sequence:
        weights_data = OmegaConf.select(spec.backbone, "weights_data")
        splits, tasks, form = load_sequence(spec.sets, weights_data, rgb=bool(weights))
        order = list(range(tasks[-1].end))
    else:
        p = spec.protocol
        splits, form = load_splits(spec.dataset), Form.of(spec.dataset)
        order, tasks = make_schedule(
            p.num_classes, p.steps, p.init_classes, p.class_order_seed, p.class_order
        )
        if weights and form.channels < 3:
            splits = Splits(*(part.with_images(grey_to_rgb(part.images, 3)) for part in splits))
            form = form.with_channels(3)
    if weights:
        form = form.normalized(IMAGENET_MEAN, IMAGENET_STD)
    return splits, order, tasks, form


def pretrained_classifier(tasks: list[Task], backbone, model) -> dict | None:
    """A pretrained first task's head is the weights' classifier: its classes must match."""
    if not tasks[0].pretrained:
        return None
    if not model.takes_pretrained_head:
        raise ConfigError(
            f"this method's network cannot take the weights' classifier as {tasks[0].name}'s head"
        )
    if backbone.pretrained.num_classes != tasks[0].size:
        raise ConfigError(
            f"backbone.weights classify {backbone.pretrained.num_classes} classes, "
            f"but {tasks[0].name} has {tasks[0].size}"
        )
    return backbone.pretrained.classifier


def check_writable(out_dir: Path, min_free_mb: int = 20) -> None:
    """Fail before training, not at the first checkpoint, when results could not be saved."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"cannot write to the run folder {out_dir}: {error.strerror or error}") from None
    free_mb = shutil.disk_usage(out_dir).free / 2**20
    if free_mb < min_free_mb:
        raise ConfigError(f"only {free_mb:.0f} MB free in {out_dir}; checkpoints and metrics need more")


def device_name(device: torch.device) -> str:
    """What the cost's device-hours were spent on: the GPU's model, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        try:  # Linux names the model here; platform.processor() often says only x86_64
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or platform.machine() or "cpu"
    return device.type


def run(cfg: DictConfig, out_dir: Path | str, choices: dict | None = None, ranks: Ranks = SINGLE) -> Results:
    """One experiment from a composed config. `choices` names the picked config of each group."""
    return train(build_runner(cfg, out_dir, choices, ranks))


def train(runner: Runner) -> Results:
    results = runner.run()
    runner.logger.run_end(results)
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    runtime = hydra_cfg.runtime
    if os.environ.get("CL_RUNNER_RESUME") == "auto" and cfg.resume is False:
        cfg.resume = "auto"  # set by the SLURM launcher: a requeued job continues its checkpoint
    ranks = distributed.from_environment()
    overrides = list(hydra_cfg.overrides.task)
    try:
        with reported_errors(ranks):
            runner = build_runner(cfg, runtime.output_dir, dict(runtime.choices), ranks, overrides)
        with reported_errors(ranks, own=True):
            results = train(runner)
    finally:
        distributed.stop()
        rank_folder = Path(runtime.output_dir)
        if not ranks.leader and rank_folder.name.startswith(RANK_FOLDER_PREFIX):
            shutil.rmtree(rank_folder, ignore_errors=True)  # the throw-away folder Hydra made
    # The return value is what Hydra sweepers (e.g. Optuna) optimise.
    # A grid of seeds or presets (the basic sweeper) optimises nothing: only a search is warned.
    sweeper = str(hydra_cfg.sweeper.get("_target_"))
    searching = hydra_cfg.mode == RunMode.MULTIRUN and "BasicSweeper" not in sweeper
    return objective_value(results, cfg.get("objective") or "auto", searching)


def objective_value(results: Results, objective: str, sweeping: bool) -> float | None:
    """The class-IL number a sweeper optimises: the held-out split's where the run has one
    (`auto`), else the test set's last accuracy, and a sweep is told that it tunes on the test set."""
    if objective == "auto":
        objective = "validation.avg_incremental_acc" if results.validation else "test.last_acc"
    split, metric = objective.split(".")
    if split == "test" and sweeping:
        log.warning(
            "this sweep optimises the test set's %s (objective=%s): hold images out with validation=0.1 "
            "to choose hyper-parameters without the test set",
            metric,
            objective,
        )
    summary = results.validation_summary() if split == "validation" else results.summary()
    return summary["class_il"][metric]


@contextmanager
def reported_errors(ranks: Ranks, own: bool = False):
    """Every mistake a user can make, and a stop signal: one line on stderr and the exit code
    (2, or 128 + the signal); HYDRA_FULL_ERROR=1 raises instead, with the traceback. Used around
    what happens before Hydra's job (the command line, composing) and around the job's two parts
    (inside it, so Hydra adds no report of its own). Building fails alike on every rank (config,
    shared files): rank 0 says it; while training an error may be one rank's `own`."""
    try:
        yield
    except (UserError, HydraException, OmegaConfBaseException) as error:
        if full_error():
            raise
        if ranks.leader:
            print(f"cl-run: error: {one_line(error)}", file=sys.stderr)
        elif own:
            print(f"cl-run (rank {ranks.rank}): error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as stop:
        if ranks.leader:
            how = "the same torchrun command with" if ranks.active else "cl-run"
            print(
                f"cl-run: {stop} received; checkpoint written. Continue with: {how} resume={stop.folder}",
                file=sys.stderr,
            )
        sys.exit(128 + stop.signum)
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once
        if ranks.leader:
            print(
                "cl-run: stopped at once; the last checkpoint stands (resume=PATH continues it)",
                file=sys.stderr,
            )
        sys.exit(130)


def main() -> None:
    ranks = distributed.from_environment()
    with reported_errors(ranks):
        sys.argv[1:] = command_line(sys.argv[1:], Path(CONFIG_DIR), ranks)
        with hydra_raises():
            _hydra_main()


@contextmanager
def hydra_raises():
    """Hydra is asked to raise rather than print its own report, so that `reported_errors`
    says every error the same way; the user's own choice is kept for `full_error()`."""
    saved = {key: os.environ.get(key) for key in (FULL_ERROR, "HYDRA_FULL_ERROR")}
    os.environ[FULL_ERROR] = "1" if full_error() else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


if __name__ == "__main__":
    main()
