"""The training loop. It owns optimizer, learning-rate schedule, AMP, backward, step, memory,
evaluation and checkpoints; the method supplies its loss and its hooks (methods/base.py), add-ons
their loss terms, `Progress` (checkpoint.py) the position in the schedule and the resume state."""

import copy
import logging
import resource
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cl_runner import checkpoint
from cl_runner.batchnorm import recalibrate
from cl_runner.compiled import compiled
from cl_runner.data.batch import TaskData
from cl_runner.data.benchmark import Benchmark
from cl_runner.data.memory import ExemplarMemory
from cl_runner.data.schedule import Task
from cl_runner.distributed import SINGLE, Ranks
from cl_runner.errors import NonFiniteLossError
from cl_runner.evaluate import class_means, evaluate, forward_batches
from cl_runner.methods.base import AddOn, Method
from cl_runner.precision import autocast_dtype, needs_grad_scaler
from cl_runner.results import Results
from cl_runner.settings import TrainSettings, lr_factor

log = logging.getLogger("cl_runner")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


STOP_POLL = 16  # batches between two checks of the stop flag when several processes run


def polls(batch: int, count: int, every: int = STOP_POLL) -> bool:
    return (batch + 1) % every == 0 or batch == count - 1


def host_copy(state):
    """A copy of a checkpoint's state with every tensor in host memory."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {key: host_copy(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        values = [host_copy(value) for value in state]
        return type(state)(*values) if hasattr(state, "_fields") else type(state)(values)
    return copy.deepcopy(state)


class StopRequested(Exception):
    """A stop signal arrived during work that is abandoned rather than finished."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written at the last finished batch."""

    def __init__(self, signum: int, folder: Path):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.folder = signum, folder


class PhaseClock:
    """Wall seconds of each phase of a task, the device's queued work included."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, {}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def total(self, *phases: str) -> float:
        return sum(self.seconds.get(phase, 0.0) for phase in phases)


@dataclass
class Stage:
    name: str  # "head": the new head alone, the rest frozen and in eval mode | "main"
    epochs: int


class Runner:
    def __init__(
        self,
        model: nn.Module,
        method: Method,
        memory: ExemplarMemory,
        benchmark: Benchmark,
        settings: TrainSettings,
        device: torch.device,
        results: Results,
        logger,
        progress: checkpoint.Progress,
        ranks: Ranks = SINGLE,
        addons: Sequence[AddOn] = (),
    ):
        self.model, self.method, self.memory, self.addons = model, method, memory, list(addons)
        self.benchmark, self.settings, self.device, self.ranks = benchmark, settings, device, ranks
        self.results, self.logger, self.progress = results, logger, progress
        self.amp_dtype = autocast_dtype(device) if settings.amp else None
        if settings.amp and self.amp_dtype is None:
            log.warning("train.amp: this CPU has no native bf16 (it would be slower); training in float32")
        self.signal: int | None = None
        self.interruptible = False  # a stop signal raises StopRequested where the work is

    # -- the schedule --------------------------------------------------------------------------
    def run(self) -> Results:
        handlers = self.catch_signals()
        try:
            for task in self.benchmark.tasks[self.progress.position.task :]:
                self.learn(task)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        return self.results

    def learn(self, task: Task) -> None:
        if self.progress.position.fresh:
            self.model.add_head(task.size)
            if task.pretrained:  # the weights' own classifier; the task is not trained
                self.model.load_pretrained_head()
            self.method.before_task(task, self.model, self.memory)
            self.progress.begin_task(task.index, self.stages(task)[0].name)
        data = self.training_data(task)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        clock = PhaseClock(self.device)
        with clock("train"):
            self.train(task, data)
        # One process: a stop during the work below abandons it and checkpoints the state
        # training ended in (copied to host memory: no second copy of the weights on the
        # device). Several processes finish the work and stop together, so need no copy.
        trained = None if self.ranks.active else host_copy(self.state())
        try:
            with self.stop_at_once():
                evaluation = self.after_training(task, data, clock)
        except StopRequested as stop:
            self.progress.save(trained)
            raise Interrupted(stop.signum, self.progress.folder) from None
        self.results.add(
            task,
            evaluation,
            **self.model.param_counts(),
            train_seconds=clock.total("train", "recalibrate", "memory", "after_task"),
            train_images=data.num_images,
            memory_size=len(self.memory),
            peak_memory_mb=peak_memory_mb(self.device),
            phase_seconds=clock.seconds,  # checkpoint and log are added as they end
        )
        self.progress.end_task()
        with clock("checkpoint"):
            self.save()
        with clock("log"):
            self.logger.task_end(self.results)
        last = task.index == len(self.benchmark.tasks) - 1
        if not last and self.ranks.any(self.signal is not None, self.device):  # arrived while saving
            raise Interrupted(self.signal or signal.SIGTERM, self.progress.folder)

    def after_training(self, task: Task, data: TaskData, clock: "PhaseClock"):
        """BatchNorm statistics, exemplars, the method's own after-task work, then evaluation."""
        with clock("recalibrate"), self.autocast():
            if self.settings.precise_bn and not task.pretrained and not self.fixed_batchnorms(task):
                recalibrate(self.model, data.own_views(), self.ranks)
        with clock("memory"), self.autocast():
            self.memory.update(self.benchmark.train, task.labels, self.embed, self.ranks)
        with clock("after_task"):
            self.method.after_task(task, self.model, self.memory, data)
            if self.ranks.active:
                self.adopt_leader_state()
        with clock("evaluate"), self.autocast():
            return evaluate(
                self.model,
                self.benchmark.test,
                self.benchmark.tasks[: task.index + 1],
                self.evaluation_input,
                self.settings.eval_batch_size,
                self.ranks,
                self.exemplar_means(task),
            )

    def exemplar_means(self, task: Task) -> torch.Tensor | None:
        """Class means of the exemplars for nearest-mean-of-exemplars evaluation (iCaRL's
        classifier), for every method with a memory; none in a run with a multi-label task (VOC)."""
        if not len(self.memory) or any(t.multilabel for t in self.benchmark.tasks):
            return None
        return class_means(
            self.model,
            self.memory.exemplars(),
            self.evaluation_input,
            self.settings.eval_batch_size,
            task.end,
            self.benchmark.augment.flip,
        )

    def evaluation_input(self, images: torch.Tensor) -> torch.Tensor:
        """Evaluation's normalised inputs, NHWC where `eval_channels_last` says that is faster.
        Only what evaluation reports sees the layout; training, herding and recalibration read
        `augment.normalize` and repeat exactly."""
        x = self.benchmark.augment.normalize(images)
        return x.contiguous(memory_format=torch.channels_last) if self.settings.eval_channels_last else x

    def training_data(self, task: Task) -> TaskData:
        """The task's own classes (all seen classes for joint) plus exemplars of the others."""
        return self.benchmark.training_data(
            task,
            self.method.training_classes(task),
            self.memory.indices().to(self.device),
            self.settings.batch_size,
            max([1] + [addon.views for addon in self.addons]),
            self.ranks,
        )

    def adopt_leader_state(self) -> None:
        """Every rank did the after-task work; all continue from rank 0's result (exemplars,
        pruned extractor, re-trained classifier, importance), as a resume would."""

        def leader_state() -> dict:
            state = self.state()
            return {key: state[key] for key in ("model", "method", "memory")}

        state = self.ranks.from_leader(leader_state, self.device)
        if not self.ranks.leader:
            self.load_learner(state)

    def load_learner(self, state: dict) -> None:
        """The model, then the method (which may rebuild from the model), then the exemplars."""
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"], self.model)
        self.memory.load_state_dict(state["memory"], self.device)

    def embed(self, images: torch.Tensor) -> Iterator[torch.Tensor]:
        """The features of `images`, batch by batch (herding consumes them class by class)."""
        normalize = self.benchmark.augment.normalize
        return forward_batches(self.model, images, normalize, self.settings.eval_batch_size, "features")

    # -- training ------------------------------------------------------------------------------
    def autocast(self):
        """`train.amp`: training and the forward passes after it (recalibration, herding,
        evaluation) in the device's reduced precision; the method's own after-task work in float32."""
        return torch.autocast(self.device.type, self.amp_dtype, enabled=self.amp_dtype is not None)

    def stages(self, task: Task) -> list[Stage]:
        """The method's head-only epochs if it asks for them (not on the first task), then the
        main stage; none on a pretrained task."""
        if task.pretrained:
            return [Stage("main", 0)]
        head = self.method.head_epochs if task.index > 0 else 0
        return ([Stage("head", head)] if head else []) + [Stage("main", self.settings.epochs)]

    def train(self, task: Task, data: TaskData) -> None:
        s = self.settings
        if s.channels_last:
            self.model.to(memory_format=torch.channels_last)
        stages = self.stages(task)
        self.logger.task_start(task, sum(stage.epochs for stage in stages), len(data))
        names = [stage.name for stage in stages]
        for stage in stages[names.index(self.progress.position.stage) :]:
            with (
                self.stage_parameters(task, data, stage) as params,
                self.ranks.replicate(self.model, self.device) as replica,
                compiled(replica, s.compile, task.index) as model,
            ):
                self.run_stage(task, data, model, params, stage)

    def later(self, task: Task) -> bool:
        """Whether `task` comes after the first task learnt here (`later_lr_factor`, `fix_bn`)."""
        first_learnt = next(t.index for t in self.benchmark.tasks if not t.pretrained)
        return task.index > first_learnt

    def fixed_batchnorms(self, task: Task) -> list[nn.Module]:
        """`fix_bn`: after the first learnt task, the shared extractor's BatchNorm layers keep
        their statistics. A network without one shared extractor (DER: one per task, the old
        ones frozen anyway) has none to fix: a new extractor must learn its own."""
        shared = getattr(self.model, "backbone", None)
        if not (self.settings.fix_bn and self.later(task)) or shared is None:
            return []
        return [m for m in shared.modules() if isinstance(m, _BatchNorm)]

    def fixed_heads(self, task: Task, data: TaskData) -> list[torch.Tensor]:
        """In a sequence of data sets, earlier tasks' heads stay as they were learnt (the LwF
        paper's theta_o, fixed in fine-tuning; MAS's code keeps one head at a time), unless the
        loss reaches them: the method distils them (LwF), or covers all seen classes."""
        if task.name is None or self.method.trains_old_heads or self.method.all_logits or data.rehearsal:
            return []
        return [p for head in list(self.model.heads)[:-1] for p in head.parameters()]

    @contextmanager
    def stage_parameters(self, task: Task, data: TaskData, stage: Stage):
        """The stage's trainable parameters, in the stage's mode. The head stage runs the network
        in eval mode and freezes all but the new head (requires_grad off), so no gradient flows
        back through the extractor, nor is all-reduced for it."""
        if stage.name != "head":
            self.model.train()
            for m in self.fixed_batchnorms(task):
                m.eval()
            fixed = self.fixed_heads(task, data)
            yield [p for p in self.model.parameters() if p.requires_grad and not any(p is f for f in fixed)]
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

    def run_stage(self, task: Task, data: TaskData, model, params: list, stage: Stage) -> None:
        s = self.settings
        lr = s.lr * self.method.lr_scale * (s.later_lr_factor if self.later(task) else 1.0)
        optimizer = torch.optim.SGD(params, lr=lr, momentum=s.momentum, weight_decay=s.weight_decay)
        # float16 autocast (GPUs without bf16) scales the loss; otherwise the scaler passes through
        scaler = torch.amp.GradScaler(self.device.type, enabled=needs_grad_scaler(self.amp_dtype))
        first_epoch, order = self.progress.continue_stage(stage.name, optimizer, scaler)
        for epoch in range(first_epoch, stage.epochs):
            start_batch = self.progress.begin_epoch(stage.name, epoch, continuing=order is not None)
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_factor(s, epoch)
            if stage.name == "main" and start_batch == 0:  # not again when resuming inside the epoch
                self.method.epoch_start(epoch, self.model, data)
            started = time.perf_counter()
            sums = self.run_epoch(data.epoch(order, start_batch, self.ranks), model, optimizer, scaler, data)
            order = None
            stats = {name: float(total) / len(data) for name, total in sums.items()}
            stats["images_per_s"] = data.num_images / (time.perf_counter() - started)
            stats["lr"] = optimizer.param_groups[0]["lr"]
            self.logger.epoch_end(task, epoch, stats)
            self.progress.end_epoch()
            if self.progress.due():
                self.save(optimizer, scaler)

    def run_epoch(self, batches, model, optimizer, scaler, data: TaskData) -> dict[str, torch.Tensor]:
        """One pass over the batches; the sums of the loss and its parts, averaged over processes.
        Sums and the non-finite check stay on the device, read once per epoch: no per-batch sync."""
        sums: dict[str, torch.Tensor] = {}
        first_bad = torch.full((), -1, device=self.device)
        for batch in batches:
            with self.autocast():
                loss, parts = self.method.training_loss(batch, model)
                for addon in self.addons:
                    loss, parts = addon.training_loss(loss, parts, batch, model, self.method)
            bad = (first_bad < 0) & ~torch.isfinite(loss.detach())
            first_bad = torch.where(bad, torch.full_like(first_bad, batch.index), first_bad)
            optimizer.zero_grad(set_to_none=True)
            # DDP averages the ranks' gradients; the weight makes that the whole batch's gradient
            scaler.scale(loss * self.ranks.weight(batch.size)).backward()
            scaler.step(optimizer)
            scaler.update()
            group = optimizer.param_groups[0]
            self.method.after_step(self.model, group["lr"], group["momentum"])
            for name, value in {"loss": loss.detach(), **parts}.items():
                sums[name] = sums.get(name, 0) + value.float()
            self.logger.batch_end()
            if self.stop_requested(batch.index, batch.count):  # all ranks stop at one batch
                self.progress.stopped_after(batch.index)
                self.save(optimizer, scaler, order=data.loader.order)
                raise Interrupted(self.signal or signal.SIGTERM, self.progress.folder)
        sums, bad_batch = self.ranks.mean(sums), int(self.ranks.max(first_bad))
        if bad_batch >= 0:
            p = self.progress.position
            raise NonFiniteLossError(
                f"loss is not finite at task {p.task}, {'head-only ' if p.stage == 'head' else ''}"
                f"epoch {p.epoch + 1}, batch {bad_batch + 1} (lower train.lr or check the data)"
            )
        return sums

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
        """SIGINT/SIGTERM (Ctrl-C, SLURM preemption): in training, finish the batch, checkpoint,
        stop; in the work after training (one process), stop at once and checkpoint the state
        training ended in; a second signal stops at once, leaving the last checkpoint."""

        def request_stop(signum, frame):
            if self.signal is not None:
                raise KeyboardInterrupt
            self.signal = signum
            if self.interruptible:
                raise StopRequested(signum)

        handlers = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                handlers[signum] = signal.signal(signum, request_stop)
            except ValueError:  # not the main thread (e.g. some launchers): keep the default
                pass
        return handlers

    @contextmanager
    def stop_at_once(self):
        """A stop signal inside raises StopRequested where the work is. Not with several
        processes: they stop together, at the task's end, where they agree."""
        if self.signal is not None and not self.ranks.active:
            raise StopRequested(self.signal)
        self.interruptible = not self.ranks.active
        try:
            yield
        finally:
            self.interruptible = False

    def state(self) -> dict:
        """Everything a checkpoint holds but the position and the optimizer."""
        return {
            "config": self.results.config,
            "task_sizes": list(self.model.task_sizes),
            "model": self.model.state_dict(),
            "method": self.method.state_dict(),
            "memory": self.memory.state_dict(),
            "results": self.results.state_dict(),
            "rng": checkpoint.rng_state(self.benchmark.generator),
        }

    def save(self, optimizer=None, scaler=None, order: torch.Tensor | None = None) -> None:
        self.progress.save(self.state(), optimizer, scaler, order)

    def restore(self, state: dict) -> None:
        """Continue from a checkpoint written by `save`."""
        for task, size in zip(self.benchmark.tasks, state["task_sizes"], strict=False):  # the tasks begun
            self.model.add_head(size)
            if task.pretrained:
                self.model.load_pretrained_head()
        self.load_learner(state)
        self.results.load_state_dict(state["results"])
        checkpoint.set_rng_state(state["rng"], self.benchmark.generator)
        self.progress.restore(state)
