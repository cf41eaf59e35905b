"""The training loop. It owns optimizer, learning-rate schedule, AMP, backward, step and
evaluation; the method only supplies its loss and its before/after-task hooks."""

import math
import resource
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cl_runner import checkpoint
from cl_runner.batchnorm import recalibrate
from cl_runner.checkpoint import Position, position_dict, rng_state, set_rng_state
from cl_runner.compiled import compiled
from cl_runner.data.files import FileImages, FileLoader
from cl_runner.data.images import Splits
from cl_runner.data.loader import Augment, DeviceLoader
from cl_runner.data.memory import ExemplarMemory
from cl_runner.data.schedule import Task
from cl_runner.distributed import SINGLE, Ranks
from cl_runner.errors import NonFiniteLossError
from cl_runner.evaluate import evaluate, forward_batches
from cl_runner.methods.base import Method, TaskData
from cl_runner.precision import autocast_dtype, needs_grad_scaler
from cl_runner.results import Results


@dataclass
class TrainSettings:
    epochs: int = 1
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    scheduler: str = "multistep"  # multistep | cosine | constant
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: int = 0
    eval_batch_size: int = 1024
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    precise_bn: bool = True
    deterministic: bool = False


def lr_factor(s: TrainSettings, epoch: int) -> float:
    """Linear warm-up over `warmup_epochs`, then the multistep, cosine or constant schedule,
    which counts its epochs from the end of the warm-up: milestones [100, 120] after 10 warm-up
    epochs drop the rate at epochs 110 and 130, as DER's official GradualWarmupScheduler does."""
    if epoch < s.warmup_epochs:
        return (epoch + 1) / s.warmup_epochs
    after = epoch - s.warmup_epochs
    if s.scheduler == "multistep":
        return s.gamma ** sum(after >= m for m in s.milestones)
    if s.scheduler == "cosine":
        span = max(s.epochs - s.warmup_epochs, 1)
        return 0.5 * (1 + math.cos(math.pi * after / span))
    return 1.0


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


STOP_POLL = 16  # batches between two checks of the stop flag when several processes run


def polls(batch: int, count: int, every: int = STOP_POLL) -> bool:
    return (batch + 1) % every == 0 or batch == count - 1


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written at the last finished batch."""

    def __init__(self, signum: int, folder: Path):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.folder = signum, folder


class Runner:
    def __init__(
        self,
        model: nn.Module,
        method: Method,
        memory: ExemplarMemory,
        data: Splits,
        tasks: list[Task],
        settings: TrainSettings,
        augment: Augment,
        device: torch.device,
        seed: int,
        results: Results,
        logger,
        out_dir: Path,
        every_epochs: int = 1,
        ranks: Ranks = SINGLE,
        every_minutes: float = 0,
    ):
        self.model, self.method, self.memory, self.data = model, method, memory, data
        self.tasks, self.settings, self.augment, self.device = tasks, settings, augment, device
        self.results, self.logger = results, logger
        self.out_dir, self.every_epochs, self.ranks = Path(out_dir), every_epochs, ranks
        self.every_seconds = 60 * every_minutes
        self.last_saved = time.monotonic()
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.amp_dtype = autocast_dtype(device) if settings.amp else None
        self.scaler: torch.amp.GradScaler | None = None
        self.position = Position()
        self.optimizer: torch.optim.Optimizer | None = None
        self.pending: dict | None = None  # optimizer state and epoch order of a mid-stage resume
        self.signal: int | None = None

    # -- the schedule --------------------------------------------------------------------------
    def run(self) -> Results:
        handlers = self.catch_signals()
        try:
            for task in self.tasks[self.position.task :]:
                self.learn(task)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        return self.results

    def learn(self, task: Task) -> None:
        if self.position.fresh:
            self.model.add_head(task.size)
            self.method.before_task(task, self.model, self.memory)
            self.position = Position(task.index, self.stages(task)[0][0], fresh=False)
        data = self.training_data(task)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        self.train(task, data)
        if self.settings.precise_bn:
            recalibrate(self.model, data.own_views(), self.ranks)
        self.memory.update(self.data.train, task.labels, self.embed, self.ranks)
        self.method.after_task(task, self.model, self.memory, data)
        if self.ranks.active:
            self.adopt_leader_state()
        seconds = time.perf_counter() - start
        evaluation = evaluate(
            self.model,
            self.data.test,
            self.tasks[: task.index + 1],
            self.augment.normalize,
            self.settings.eval_batch_size,
            self.ranks,
        )
        self.results.add(
            task,
            evaluation,
            **self.model.param_counts(),
            train_seconds=seconds,
            train_images=data.num_images,
            memory_size=len(self.memory),
            peak_memory_mb=peak_memory_mb(self.device),
        )
        self.position = Position(task.index + 1)
        self.optimizer = None
        self.save_checkpoint()
        self.logger.task_end(self.results)

    def training_data(self, task: Task) -> TaskData:
        """The task's own classes (all seen classes for joint) plus exemplars of the others."""
        train = self.data.train
        classes = self.method.training_classes(task)
        fresh = (train.labels >= classes.start) & (train.labels < classes.stop)
        rehearsed = self.memory.indices().to(self.device)
        rehearsed = rehearsed[~fresh[rehearsed]]
        idx = torch.cat([fresh.nonzero().squeeze(1), rehearsed])
        images, labels, size = train.images[idx], train.labels[idx], self.settings.batch_size
        if isinstance(images, FileImages):  # workers distort once per view the method draws
            loader = FileLoader(images, labels, size, True, self.generator, views=self.method.views)
        else:
            loader = DeviceLoader(images, labels, size, True, self.generator)
        return TaskData(loader, task, self.augment, self.generator, len(rehearsed) > 0, self.ranks)

    def adopt_leader_state(self) -> None:
        """Every rank did the after-task work; all continue from rank 0's result (exemplars,
        pruned extractor, re-trained classifier, importance), as a resume would."""

        def leader_state() -> dict:
            return {
                "model": self.model.state_dict(),
                "method": self.method.state_dict(),
                "memory": self.memory.state_dict(),
            }

        state = self.ranks.from_leader(leader_state, self.device)
        if not self.ranks.leader:
            self.model.load_state_dict(state["model"])
            self.method.load_state_dict(state["method"])
            self.memory.load_state_dict(state["memory"], self.device)

    def embed(self, images: torch.Tensor) -> Iterator[torch.Tensor]:
        """The features of `images`, batch by batch (herding consumes them class by class)."""
        return forward_batches(
            self.model, images, self.augment.normalize, self.settings.eval_batch_size, "features"
        )

    # -- training ------------------------------------------------------------------------------
    def stages(self, task: Task) -> list[tuple[str, int]]:
        """LwF's warm-up (the new head alone, extractor frozen) when asked for, then the main stage."""
        warmup = self.method.head_warmup_epochs if task.index > 0 else 0
        return ([("warmup", warmup)] if warmup else []) + [("main", self.settings.epochs)]

    def train(self, task: Task, data: TaskData) -> None:
        s = self.settings
        if s.channels_last:
            self.model.to(memory_format=torch.channels_last)
        stages = self.stages(task)
        self.logger.task_start(task, sum(epochs for _, epochs in stages), len(data))
        names = [name for name, _ in stages]
        for name, epochs in stages[names.index(self.position.stage) :]:
            with (
                self.stage_parameters(name) as params,
                self.ranks.replicate(self.model, self.device) as replica,
                compiled(replica, s.compile, task.index) as model,
            ):
                self.run_epochs(task, data, model, params, name, epochs)

    @contextmanager
    def stage_parameters(self, stage: str):
        """The stage's trainable parameters, in the stage's mode. LwF's head-only warm-up runs
        the network in eval mode and freezes all but the new head (requires_grad off), so no
        gradient flows back through the extractor, nor is all-reduced for it."""
        if stage != "warmup":
            self.model.train()
            yield [p for p in self.model.parameters() if p.requires_grad]
            return
        self.model.eval()
        head = list(self.model.heads[-1].parameters())
        frozen = [p for p in self.model.parameters() if p.requires_grad and not any(p is h for h in head)]
        for p in frozen:
            p.requires_grad_(False)
        try:
            yield head
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def run_epochs(self, task: Task, data: TaskData, model, params: list, stage: str, epochs: int) -> None:
        s = self.settings
        self.optimizer = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        # float16 autocast (GPUs without bf16) scales the loss; otherwise the scaler passes through
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=needs_grad_scaler(self.amp_dtype))
        order = None
        if self.position.stage == stage and self.pending is not None:
            self.optimizer.load_state_dict(self.pending["optimizer"])
            if self.pending.get("scaler"):
                self.scaler.load_state_dict(self.pending["scaler"])
            order = self.pending["order"]
            self.pending = None
        first_epoch = self.position.epoch if self.position.stage == stage else 0
        label = "warm-up " if stage == "warmup" else ""
        for epoch in range(first_epoch, epochs):
            start_batch = self.position.batch if order is not None else 0
            self.position = Position(task.index, stage, epoch, start_batch, fresh=False)
            for group in self.optimizer.param_groups:
                group["lr"] = s.lr * lr_factor(s, epoch)
            # Sums stay on the device and are read once per epoch: no per-batch host sync.
            sums: dict[str, torch.Tensor] = {}
            first_bad = torch.full((), -1, device=self.device)
            started = time.perf_counter()
            if stage == "main" and start_batch == 0:  # not again when resuming inside the epoch
                self.method.epoch_start(epoch, self.model, data)
            batches = data.epoch(order, start_batch, self.ranks)
            order = None
            for batch in batches:
                b = batch.index
                with torch.autocast(self.device.type, self.amp_dtype, enabled=self.amp_dtype is not None):
                    loss, parts = self.method.training_loss(batch, model)
                bad = (first_bad < 0) & ~torch.isfinite(loss.detach())
                first_bad = torch.where(bad, torch.full_like(first_bad, b), first_bad)
                self.optimizer.zero_grad(set_to_none=True)
                # DDP averages the ranks' gradients; the weight makes that the whole batch's gradient
                self.scaler.scale(loss * self.ranks.weight(batch.size)).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                group = self.optimizer.param_groups[0]
                self.method.after_step(self.model, group["lr"], group["momentum"])
                for name, value in {"loss": loss.detach(), **parts}.items():
                    sums[name] = sums.get(name, 0) + value.float()
                self.logger.batch_end()
                if self.stop_requested(b, batch.count):  # all ranks stop at one batch
                    self.position = Position(task.index, stage, epoch, b + 1, fresh=False)
                    self.save_checkpoint(order=data.loader.order)
                    raise Interrupted(self.signal or signal.SIGTERM, self.out_dir)
            sums, first_bad = self.ranks.mean(sums), self.ranks.max(first_bad)
            bad_batch = int(first_bad)
            if bad_batch >= 0:
                raise NonFiniteLossError(
                    f"loss is not finite at task {task.index}, {label}epoch {epoch + 1}, "
                    f"batch {bad_batch + 1} (lower train.lr or check the data)"
                )
            stats = {name: float(total) / len(data) for name, total in sums.items()}
            stats["images_per_s"] = data.num_images / (time.perf_counter() - started)
            stats["lr"] = self.optimizer.param_groups[0]["lr"]
            self.logger.epoch_end(task, epoch, stats)
            self.position = Position(task.index, stage, epoch + 1, fresh=False)
            if self.checkpoint_due(epoch):
                self.save_checkpoint()

    # -- checkpoints and signals ---------------------------------------------------------------
    def stop_requested(self, batch: int, count: int) -> bool:
        """Whether a stop signal arrived. With several processes the flag is all-reduced (a
        host sync) only every STOP_POLL batches and at the epoch's last batch, the same
        batches on every rank; a single process reads its own flag."""
        if not self.ranks.active:
            return self.signal is not None
        if not polls(batch, count):
            return False
        return self.ranks.any(self.signal is not None, self.device)

    def catch_signals(self) -> dict:
        """SIGINT/SIGTERM (Ctrl-C, SLURM preemption): finish the batch, checkpoint, stop."""

        def request_stop(signum, frame):
            self.signal = signum

        handlers = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                handlers[signum] = signal.signal(signum, request_stop)
            except ValueError:  # not the main thread (e.g. some launchers): keep the default
                pass
        return handlers

    def checkpoint_due(self, epoch: int) -> bool:
        """Within a task: every `every_epochs` epochs, and at the first epoch end `every_minutes`
        after the last checkpoint (a big model's per-epoch checkpoints would cost more than the
        epochs). Every rank decides alike: rank 0's clock is the one that counts."""
        by_epoch = bool(self.every_epochs) and (epoch + 1) % self.every_epochs == 0
        by_time = bool(self.every_seconds) and time.monotonic() - self.last_saved >= self.every_seconds
        if self.ranks.active:
            by_time = self.ranks.any(by_time if self.ranks.leader else False, self.device)
        return by_epoch or by_time

    def save_checkpoint(self, order: torch.Tensor | None = None) -> None:
        self.last_saved = time.monotonic()
        if not self.ranks.leader:
            return
        mid_stage = self.optimizer is not None and not self.position.fresh
        checkpoint.save(
            self.out_dir,
            {
                "position": position_dict(self.position),
                "config": self.results.config,
                "task_sizes": list(self.model.task_sizes),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict() if mid_stage else None,
                "scaler": self.scaler.state_dict() if mid_stage and self.scaler.is_enabled() else None,
                "order": order,
                "method": self.method.state_dict(),
                "memory": self.memory.state_dict(),
                "results": self.results.state_dict(),
                "rng": rng_state(self.generator),
            },
        )

    def restore(self, state: dict) -> None:
        """Continue from a checkpoint written by `save_checkpoint`."""
        for size in state["task_sizes"]:
            self.model.add_head(size)
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])
        self.memory.load_state_dict(state["memory"], self.device)
        self.results.load_state_dict(state["results"])
        set_rng_state(state["rng"], self.generator)
        self.position = Position(**state["position"])
        if state["optimizer"] is not None:
            self.pending = {
                "optimizer": state["optimizer"],
                "order": state["order"],
                "scaler": state.get("scaler"),
            }
