"""`cl-run`: compose the config with Hydra, then run one class-incremental experiment.

`main()` is the thin Hydra entry point; `run(cfg, out_dir)` does the work from plain values and
is what tests call. Nothing below this module reads Hydra's global state.
"""

import logging
import os
import random
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from cl_runner import checkpoint, distributed
from cl_runner.config import expand_sequence, run_choices, validate
from cl_runner.data.benchmark import Benchmark
from cl_runner.data.build import Form, load_sequence, load_splits
from cl_runner.data.images import Splits
from cl_runner.data.loader import Augment
from cl_runner.data.memory import ExemplarMemory
from cl_runner.data.schedule import Task, make_schedule
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
from cl_runner.preflight import RANK_FOLDER_PREFIX, command_line, full_error, hydra_errors
from cl_runner.results import Results
from cl_runner.runner import Interrupted, Runner

CONFIG_DIR = str(config_dir())
log = logging.getLogger("cl_runner")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_loggers(cfg: DictConfig, out_dir: Path, resolved: dict, choices: dict) -> Loggers:
    loggers = [ConsoleLogger(), FileLogger(out_dir, OmegaConf.to_yaml(resolved))]
    if cfg.plots:
        loggers.append(PlotLogger(out_dir))
    if cfg.mode != "disabled":
        from cl_runner.loggers.wandb import WandbLogger

        options = {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "plots"}
        loggers.append(WandbLogger(out_dir, resolved, choices, **options))
    return Loggers(*loggers)


def build_runner(
    cfg: DictConfig, out_dir: Path | str, choices: dict | None = None, ranks: Ranks = SINGLE
) -> Runner:
    """Everything a run needs, built from the composed config's plain values. With several
    processes (torchrun) this joins them; the run folder is rank 0's."""
    if cfg.get("sequence"):
        expand_sequence(cfg, Path(CONFIG_DIR))
    settings, device = validate(cfg)
    device = distributed.start(ranks, device)
    select_device(device)
    configure_backends(device, settings.deterministic)
    out_dir = Path(ranks.from_leader(lambda: str(out_dir), device))
    if ranks.leader:
        check_writable(out_dir)
    seed_everything(cfg.seed)
    splits, order, tasks, form = load_benchmark(cfg)
    if cfg.memory.size > len(splits.train):
        raise ConfigError(f"memory.size={cfg.memory.size} exceeds the {len(splits.train)} training images")
    # Pretrained weights bring their own normalisation, for every task.
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if cfg.backbone.get("weights") else (form.mean, form.std)
    augment = Augment(
        mean,
        std,
        form.crop_padding,
        form.flip,
        channels_last=settings.channels_last,
        brightness=form.brightness,
    )
    benchmark = Benchmark.on_device(splits, order, tasks, augment, cfg.seed, device)

    backbone = build(cfg.backbone, in_channels=form.channels, image_size=form.size)
    method = build(cfg.method)
    addons = [build(cfg.addon)] if cfg.get("addon") else []
    model = method.network(backbone).to(device)
    check_pretrained_task(tasks, backbone, model)
    memory = ExemplarMemory(cfg.memory.size, cfg.memory.per_class, cfg.memory.selection, seed=cfg.seed)
    if method.needs_memory and not memory.enabled:
        name = (choices or {}).get("method", type(method).__name__)
        raise ConfigError(f"method={name} rehearses exemplars: set memory.size or memory.per_class")

    resolved = OmegaConf.to_container(cfg, resolve=True)
    saved = None
    # resume=auto (sweeps, SLURM requeues): continue when this folder already holds a checkpoint
    resume = (out_dir / checkpoint.CHECKPOINT).is_file() if cfg.resume == "auto" else cfg.resume
    if resume:
        saved = checkpoint.load(out_dir, device)
        checkpoint.check_same_config(saved["config"], resolved)
    results = Results(len(tasks), config=resolved, choices=dict(choices or {}))
    logger = build_loggers(cfg.logger, out_dir, resolved, results.choices) if ranks.leader else Loggers()
    log.info("class order: %s", order)
    progress = checkpoint.Progress(
        out_dir, cfg.checkpoint.every_epochs, cfg.checkpoint.every_minutes, ranks, device
    )
    runner = Runner(
        model, method, memory, benchmark, settings, device, results, logger, progress, ranks, addons
    )
    if saved is not None:
        runner.restore(saved)
        log.info("resumed at %s", saved["position"])
    return runner


def load_benchmark(cfg: DictConfig) -> tuple[Splits, list[int], list[Task], Form]:
    """The images, the class order and the tasks: a class split of one data set, or a
    sequence of data sets (one task each, in the given order)."""
    if cfg.get("sequence"):
        rgb = bool(cfg.backbone.get("weights"))
        splits, tasks, form = load_sequence(cfg.sequence_sets, cfg.backbone.get("weights_data"), rgb)
        return splits, list(range(tasks[-1].end)), tasks, form
    if cfg.dataset.get("multilabel"):
        raise ConfigError(
            "a multi-label data set is one task of a sequence, e.g. sequence=[imagenet,voc2012]"
        )
    splits = load_splits(cfg.dataset)
    order, tasks = make_schedule(
        cfg.dataset.num_classes, cfg.steps, cfg.init_classes, cfg.class_order_seed, cfg.get("class_order")
    )
    return splits, order, tasks, Form.of(cfg.dataset)


def check_pretrained_task(tasks: list[Task], backbone, model) -> None:
    """A pretrained first task's head is the weights' classifier: its classes must match."""
    if not tasks[0].pretrained:
        return
    if not hasattr(model, "load_pretrained_head"):
        raise ConfigError(
            f"this method's network cannot take the weights' classifier as {tasks[0].name}'s head"
        )
    if backbone.pretrained.num_classes != tasks[0].size:
        raise ConfigError(
            f"backbone.weights classify {backbone.pretrained.num_classes} classes, "
            f"but {tasks[0].name} has {tasks[0].size}"
        )


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


def run(cfg: DictConfig, out_dir: Path | str, choices: dict | None = None, ranks: Ranks = SINGLE) -> Results:
    """One experiment from a composed config. `choices` names the picked config of each group."""
    runner = build_runner(cfg, out_dir, choices, ranks)
    return train(runner)


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
    try:
        # Errors while building are the same on every rank (config, shared files): rank 0 says them.
        with reported_errors(ranks, building=True):
            choices = run_choices(cfg, runtime.choices, list(hydra_cfg.overrides.task))
            runner = build_runner(cfg, runtime.output_dir, choices, ranks)
        # Errors while training may be one rank's own (an unreadable image): each says its own.
        with reported_errors(ranks, building=False):
            results = train(runner)
    finally:
        distributed.stop()
        rank_folder = Path(runtime.output_dir)
        if not ranks.leader and rank_folder.name.startswith(RANK_FOLDER_PREFIX):
            shutil.rmtree(rank_folder, ignore_errors=True)  # the throw-away folder Hydra made
    # The return value is what Hydra sweepers (e.g. Optuna) optimise.
    return results.summary()["class_il"]["last_acc"]


@contextmanager
def reported_errors(ranks: Ranks, building: bool):
    """A user's mistake or a stop signal: one line on stderr and the exit code, no traceback."""
    try:
        yield
    except UserError as error:
        if full_error():
            raise
        if ranks.leader:
            print(f"cl-run: error: {error}", file=sys.stderr)
        elif not building:
            print(f"cl-run (rank {ranks.rank}): error: {error}", file=sys.stderr)
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
    sys.argv[1:] = command_line(sys.argv[1:], Path(CONFIG_DIR), distributed.from_environment())
    with hydra_errors():
        _hydra_main()


if __name__ == "__main__":
    main()
