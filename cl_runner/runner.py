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
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from cl_runner import checkpoint
from cl_runner.batchnorm import recalibrate
from cl_runner.compiled import compiled
from cl_runner.data.batch import TaskData, balanced_subset
from cl_runner.data.benchmark import Benchmark
from cl_runner.data.memory import ExemplarMemory
from cl_runner.data.outputs import forward_all, forward_batches
from cl_runner.data.schedule import Task
from cl_runner.distributed import SINGLE, Ranks
from cl_runner.errors import NonFiniteLossError
from cl_runner.evaluate import class_means, evaluate
from cl_runner.hparams import ContinualSearch, choose
from cl_runner.loggers import Loggers
from cl_runner.methods.base import AddOn, Method, Stage
from cl_runner.models.continual import ContinualNet
from cl_runner.precision import autocast_dtype, needs_grad_scaler
from cl_runner.results import Results
from cl_runner.settings import Schedule, TrainSettings

log = logging.getLogger("cl_runner")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


STOP_POLL = 16  # batches between two checks of the stop flag when several processes run


def polls(batch: int, count: int, every: int = STOP_POLL) -> bool:
    return (batch + 1) % every == 0 or batch == count - 1


def make_optimizer(kind: str, params: list[nn.Parameter], schedule: Schedule) -> torch.optim.Optimizer:
    """A stage's optimizer (`Stage.optimizer`), at the schedule's rate and weight decay."""
    if kind == "adadelta":
        return torch.optim.Adadelta(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    if kind == "adam":
        return torch.optim.Adam(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    return torch.optim.SGD(
        params, lr=schedule.lr, momentum=schedule.momentum, weight_decay=schedule.weight_decay
    )


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


class Runner:
    def __init__(
        self,
        model: ContinualNet,
        method: Method,
        memory: ExemplarMemory,
        benchmark: Benchmark,
        settings: TrainSettings,
        device: torch.device,
        results: Results,
        logger,
        checkpointer: checkpoint.Checkpointer,
        ranks: Ranks = SINGLE,
        addons: Sequence[AddOn] = (),
        pretrained_head: dict | None = None,
        search: ContinualSearch | None = None,
    ):
        """`pretrained_head`: the weights' classifier (a Linear's state dict), the head of a
        pretrained first task. `search`: each task's learning rate and stability parameter chosen
        on its held-out images before it is learnt (hparams.py)."""
        self.model, self.method, self.memory, self.addons = model, method, memory, list(addons)
        self.benchmark, self.settings, self.device, self.ranks = benchmark, settings, device, ranks
        self.results, self.logger, self.checkpointer = results, logger, checkpointer
        self.pretrained_head, self.search = pretrained_head, search
        self.task_lr: float | None = None  # the search's learning rate for the task's training stages
        self.amp_dtype = autocast_dtype(device) if settings.amp else None
        if settings.amp and self.amp_dtype is None:
            log.warning("train.amp: this CPU has no native bf16 (it would be slower); training in float32")
        self.signal: int | None = None
        self.interruptible = False  # a stop signal raises StopRequested where the work is
        self.subset: torch.Tensor | None = None  # a class-balanced stage's positions in the task's data
        self.stage_flips: set[int] = set()  # parameters a stage froze or thawed for its duration
        # the exemplars the task's training data holds: the memory as it was when the task began
        self.task_exemplars: torch.Tensor | None = None
        self.images_trained = 0  # images the run's training stages have passed through, all epochs

    # -- the schedule --------------------------------------------------------------------------
    def run(self) -> Results:
        self.logger.run_start(self.results)
        handlers = self.catch_signals()
        try:
            for task in self.benchmark.tasks[self.checkpointer.position.task :]:
                self.learn(task)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        return self.results

    def learn(self, task: Task) -> None:
        """The task's stages, the work after training (BatchNorm statistics, exemplars, the
        method's after-task work), the stages that follow it, evaluation, checkpoint, logs."""
        if self.checkpointer.position.fresh or self.task_exemplars is None:
            self.task_exemplars = self.memory.indices().to(self.device)  # before this task's update
        data = self.training_data(task)
        stages = self.stages(task, data)
        if self.checkpointer.position.fresh:
            self.model.add_head(task.size)
            if task.pretrained:  # the weights' own classifier; the task is not trained
                self.model.load_pretrained_head(self.pretrained_head)
            self.method.before_task(task, self.model, self.memory)
            self.checkpointer.begin_task(task.index, stages[0].name)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        clock = PhaseClock(self.device)
        training = [stage for stage in stages if not stage.after_task]
        later = stages[len(training) :]
        if self.search is not None:
            with clock("search"):
                self.abandoned_on_stop(lambda: self.hyperparameters(task, data, training))
        at = [stage.name for stage in stages].index(self.checkpointer.position.stage)
        if at < len(training) and self.method.candidates > 1 and not task.pretrained:
            evaluation = self.abandoned_on_stop(
                lambda: self.best_candidate(task, data, training, clock, evaluate=not later)
            )
        elif at < len(training):
            with clock("train"):
                for stage in training[at:]:
                    self.run_stage(task, data, stage)
            if not later:  # the work after training and the evaluation: one unit to abandon
                evaluation = self.abandoned_on_stop(
                    lambda: self.after_training(task, data, clock, evaluate=True)
                )
            else:
                self.abandoned_on_stop(lambda: self.after_training(task, data, clock))
        for stage in later[max(at - len(training), 0) :]:
            with clock(stage.name):
                self.run_stage(task, data, stage)
        if later:
            if self.ranks.active:
                self.adopt_leader_state()
            evaluation = self.abandoned_on_stop(lambda: self.evaluate(task, clock))
        work = ("train", "recalibrate", "memory", "after_task", *(stage.name for stage in later))
        self.results.add(
            task,
            evaluation,
            **self.model.param_counts(),
            train_seconds=clock.total(*work),
            train_images=data.num_images,
            images_trained=self.images_trained,
            memory_size=len(self.memory),
            memory_mb=len(self.memory) * self.benchmark.train.bytes_per_image() / 2**20,
            peak_memory_mb=peak_memory_mb(self.device),
            phase_seconds=clock.seconds,  # checkpoint and log are added as they end
        )
        self.checkpointer.end_task()
        with clock("checkpoint"):
            self.save()
        with clock("log"):
            self.logger.task_end(self.results)
        last = task.index == len(self.benchmark.tasks) - 1
        if not last and self.ranks.any(self.signal is not None, self.device):  # arrived while saving
            raise Interrupted(self.signal or signal.SIGTERM, self.checkpointer.folder)

    # -- the continual hyper-parameter search (hparams.py) ---------------------------------------
    def hyperparameters(self, task: Task, data: TaskData, training: list[Stage]) -> None:
        """The task's learning rate and stability value: chosen once (each trial learns the task
        from the state before the search on its training data and is scored on its held-out
        images), then applied; a resume applies the recorded choice."""
        name = self.method.stability
        if len(self.results.hparams) > task.index:  # chosen before an interruption
            chosen = self.results.hparams[task.index]
            self.apply_hyperparameters(chosen["lr"], name, chosen.get(name))
            return
        before = self.snapshot()

        def trial(lr: float, value: float | None) -> float:
            self.restore_snapshot(before)
            self.apply_hyperparameters(lr, name, value)
            with self.scratch():
                for stage in training:
                    self.run_stage(task, data, stage)
                return self.held_out_accuracy(task)

        first = self.results.hparams[0]["lr"] if self.results.hparams else None
        choice = choose(self.search, task.index, trial, first, name, self.method.stability_start)
        self.restore_snapshot(before)
        self.apply_hyperparameters(choice.lr, name, choice.value)
        self.results.hparams.append(choice.as_dict())
        log.info("task %d: the search chose lr=%g%s (held-out task-IL accuracy at lr alone: %.2f)",
                 task.index, choice.lr, f", {name}={choice.value:g}" if choice.value is not None else "",
                 choice.plastic_acc)  # fmt: skip

    # -- candidates (RPSNet) ------------------------------------------------------------------
    def best_candidate(self, task: Task, data: TaskData, training: list[Stage], clock: "PhaseClock",
                       evaluate: bool = False):  # fmt: skip
        """Each of the method's candidates learns the task from the state before them with its
        own draws (candidate 0: the run's own), the work after training included; the one with
        the best class-IL accuracy on the seen classes of `method.select_on` is kept (then
        evaluated). Candidates write no checkpoint: a stop among them redoes them all."""
        before = self.snapshot()
        total = self.images_trained  # every candidate's images count in the run's cost
        best, scores = None, []
        for k in range(self.method.candidates):
            self.restore_snapshot(before)
            self.method.use_candidate(k, task, self.model)
            if k:
                seed = self.benchmark.generator.initial_seed() * 1_000_003 + task.index * 1_009 + k
                torch.manual_seed(seed)
                self.benchmark.generator.manual_seed(seed)
            with self.scratch():
                with clock("train"):
                    for stage in training:
                        self.run_stage(task, data, stage)
                self.after_training(task, data, clock)
            total += self.images_trained - before["images_trained"]
            scores.append(self.seen_accuracy(task, self.method.select_on))
            log.info("task %d: candidate %d of %d: %.2f on the seen classes' %s images", task.index,
                     k + 1, self.method.candidates, scores[-1], self.method.select_on)  # fmt: skip
            if best is None or scores[-1] > scores[best[0]]:
                best = (k, self.snapshot())
        self.restore_snapshot(best[1])
        self.images_trained = total
        chosen = {"task": task.index, "chosen": best[0], "select_on": self.method.select_on, "scores": scores}
        self.results.candidates.append(chosen)
        return self.evaluate(task, clock) if evaluate else None

    def seen_accuracy(self, task: Task, split: str) -> float:
        """Class-IL accuracy over the seen classes of the held-out split or the test set."""
        images = self.benchmark.validation if split == "validation" else self.benchmark.test
        seen = self.benchmark.tasks[: task.index + 1]
        with self.autocast():
            result = evaluate(
                self.model, images, seen, self.evaluation_input, self.settings.eval_batch_size, self.ranks
            )
        return result.seen_acc

    def apply_hyperparameters(self, lr: float, name: str | None, value: float | None) -> None:
        self.task_lr = lr
        if name is not None and value is not None:
            setattr(self.method, name, value)

    def snapshot(self) -> dict:
        return {
            "model": {
                k: v.clone() if torch.is_tensor(v) else copy.deepcopy(v)
                for k, v in self.model.state_dict().items()
            },
            "trainable": [p.requires_grad for p in self.model.parameters()],
            "method": copy.deepcopy(self.method, self.live_tensors()),
            "rng": checkpoint.rng_state(self.benchmark.generator),
            "images_trained": self.images_trained,
            "memory": copy.deepcopy(self.memory.state_dict()),
        }

    def restore_snapshot(self, before: dict) -> None:
        self.model.load_state_dict(before["model"])
        for p, trainable in zip(self.model.parameters(), before["trainable"], strict=True):
            p.requires_grad_(trainable)
        self.method = copy.deepcopy(before["method"], self.live_tensors())
        checkpoint.set_rng_state(before["rng"], self.benchmark.generator)
        self.images_trained = before["images_trained"]
        self.memory.load_state_dict(copy.deepcopy(before["memory"]), self.device)

    def live_tensors(self) -> dict:
        """A deep copy's memo that keeps the network itself: a method's references to the live
        model, its parameters or buffers (a penalty's cached parameter list) stay references."""
        live = [self.model, *self.model.parameters(), *self.model.buffers()]
        return {id(t): t for t in live}

    @contextmanager
    def scratch(self):
        """A trial of the search: no checkpoint, no log."""
        saved = self.checkpointer, self.logger
        self.checkpointer, self.logger = checkpoint.Scratch(), Loggers()
        try:
            yield
        finally:
            self.checkpointer, self.logger = saved

    def held_out_accuracy(self, task: Task) -> float:
        """Task-IL accuracy of the task's own held-out images (FACIL's score): no test image."""
        held = self.benchmark.validation
        own = ((held.labels >= task.offset) & (held.labels < task.end)).nonzero().squeeze(1)
        with self.autocast():
            images, batch = held.images[own], self.settings.eval_batch_size
            logits = forward_all(self.model, images, self.evaluation_input, batch)
        predicted = logits[:, task.offset : task.end].argmax(1) + task.offset  # the task's own head
        return 100.0 * float((predicted == held.labels[own]).float().mean())

    def abandoned_on_stop(self, work):
        """`work()`, which one process abandons at a stop signal: the checkpoint then holds the
        state before it (copied to host memory: no second copy of the weights on the device),
        and a resume does the work again. Several processes finish it and stop together."""
        before = None if self.ranks.active else host_copy(self.state())
        try:
            with self.stop_at_once():
                return work()
        except StopRequested as stop:
            self.checkpointer.save(before)
            raise Interrupted(stop.signum, self.checkpointer.folder) from None

    def after_training(self, task: Task, data: TaskData, clock: "PhaseClock", evaluate: bool = False):
        """BatchNorm statistics, exemplars, the method's own after-task work (then evaluation)."""
        with clock("recalibrate"), self.autocast():
            if self.settings.precise_bn and not task.pretrained and not self.fixed_batchnorms(task):
                recalibrate(self.model, data.own_views(), self.ranks)
        with clock("memory"), self.autocast():
            self.memory.update(self.benchmark.train, task.labels, self.embed, self.ranks)
        with clock("after_task"):
            self.method.after_task(task, self.model, self.memory, data)
            if self.ranks.active:
                self.adopt_leader_state()
        return self.evaluate(task, clock) if evaluate else None

    def evaluate(self, task: Task, clock: "PhaseClock"):
        """The test set's evaluation, and the held-out split's beside it where there is one (what
        hyper-parameter searches read: the test set only reports)."""
        with clock("evaluate"), self.autocast():
            means = self.exemplar_means(task)
            seen = self.benchmark.tasks[: task.index + 1]
            args = (self.evaluation_input, self.settings.eval_batch_size, self.ranks, means)
            result = evaluate(self.model, self.benchmark.test, seen, *args)
            if self.benchmark.validation is not None:
                result.validation = evaluate(self.model, self.benchmark.validation, seen, *args)
            return result

    def exemplar_means(self, task: Task) -> torch.Tensor | None:
        """Class means of the exemplars for nearest-mean-of-exemplars evaluation (iCaRL's
        classifier), for every method with a memory; none in a run with a multi-label task (VOC)."""
        if not len(self.memory) or any(t.multilabel for t in self.benchmark.tasks):
            return None
        return class_means(
            self.model,
            self.memory.exemplars(self.benchmark.train),
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
        exemplars = self.task_exemplars
        return self.benchmark.training_data(
            task,
            self.method.training_classes(task),
            self.memory.indices().to(self.device) if exemplars is None else exemplars,
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
        if "trainable" in state:  # checkpoints from before methods froze parameters lack it
            trainable = set(state["trainable"])
            for name, p in self.model.named_parameters():
                p.requires_grad_(name in trainable)
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

    def stages(self, task: Task, data: TaskData) -> list[Stage]:
        """The method's stages for the task; none on a pretrained task."""
        if task.pretrained:
            return [Stage("main", epochs=0)]
        return self.method.stages(task, data.rehearsal)

    def schedule(self, task: Task, stage: Stage) -> Schedule:
        """The stage's optimisation: its own values, the rest from the training schedule (the
        first learnt task's own where it has one), at the method's and later tasks' rate."""
        learnt = self.learnt_position(task)
        base = self.settings.schedule(first=learnt == 0, learnt=learnt)
        if self.task_lr is not None and not stage.after_task:
            base = replace(base, lr=self.task_lr)
        lr = stage.lr
        if lr is None:
            lr = base.lr * self.method.lr_scale * (self.settings.later_lr_factor if learnt > 0 else 1.0)
        own = {
            "scheduler": "multistep",
            "milestones": stage.milestones,
            "gamma": stage.gamma,
            "warmup_epochs": 0,
        }
        return replace(
            base,
            **(own if stage.milestones is not None else {}),
            epochs=base.epochs if stage.epochs is None else stage.epochs,
            lr=lr,
            momentum=base.momentum if stage.momentum is None else stage.momentum,
            weight_decay=base.weight_decay if stage.weight_decay is None else stage.weight_decay,
        )

    def later(self, task: Task) -> bool:
        """Whether `task` comes after the first task learnt here (`later_lr_factor`, `fix_bn`)."""
        return self.learnt_position(task) > 0

    def learnt_position(self, task: Task) -> int:
        """0 for the first task learnt here (after any pretrained one), 1 for the next, ..."""
        first_learnt = next(t.index for t in self.benchmark.tasks if not t.pretrained)
        return task.index - first_learnt

    def fixed_batchnorms(self, task: Task) -> list[nn.Module]:
        """`fix_bn`: after the first learnt task, the BatchNorm layers every task shares keep
        their statistics (DER's network shares none: a new extractor must learn its own)."""
        if not (self.settings.fix_bn and self.later(task)):
            return []
        return self.model.shared_batchnorms()

    def fixed_heads(self, task: Task, data: TaskData) -> list[torch.Tensor]:
        """In a sequence of data sets, earlier tasks' heads stay as they were learnt (the LwF
        paper's theta_o, fixed in fine-tuning; MAS's code keeps one head at a time), unless the
        loss reaches them: the method distils them (LwF), or covers all seen classes."""
        if task.name is None or self.method.trains_old_heads or self.method.all_logits or data.rehearsal:
            return []
        return self.model.old_head_parameters()

    @contextmanager
    def stage_parameters(self, task: Task, data: TaskData, stage: Stage):
        """The stage's trainable parameters, in the stage's mode. A stage that trains the head or
        the classifier alone runs the network in eval mode and freezes the rest (requires_grad
        off), so no gradient flows back through the extractor, nor is all-reduced for it."""
        if stage.trains == "all":
            self.model.train()
            for m in self.fixed_batchnorms(task):
                m.eval()
            fixed = self.fixed_heads(task, data)
            yield [p for p in self.model.parameters() if p.requires_grad and not any(p is f for f in fixed)]
            return
        self.model.train(stage.mode == "train")
        if callable(stage.trains):
            trained = list(stage.trains(self.model))
        elif stage.trains == "head":
            trained = self.model.head_parameters()
        else:
            trained = self.model.classifier_parameters()
        frozen = [p for p in self.model.parameters() if p.requires_grad and not any(p is t for t in trained)]
        thawed = [p for p in trained if not p.requires_grad]  # UCIR's and PODNet's old classes' weights
        self.stage_flips = {id(p) for p in frozen + thawed}  # what a checkpoint inside saves as before
        for p in frozen:
            p.requires_grad_(False)
        for p in thawed:
            p.requires_grad_(True)
        try:
            yield trained
        finally:
            for p in frozen:
                p.requires_grad_(True)
            for p in thawed:
                p.requires_grad_(False)
            self.stage_flips = set()

    def stage_data(self, task: Task, data: TaskData, stage: Stage) -> TaskData:
        """What the stage trains on: the task's data; a class-balanced subset of it (drawn when
        the stage begins, kept in the checkpoint while it runs); the memory's exemplars; or the
        held-out validation images of every seen class."""
        self.subset = None
        batch_size = stage.batch_size or self.settings.batch_size
        if stage.data == "task":
            return data
        if stage.data == "memory":
            exemplars = self.memory.indices().to(self.device)
            return self.benchmark.training_data(task, range(0), exemplars, batch_size, 1, self.ranks)
        if stage.data == "validation":
            return self.benchmark.validation_data(task, stage.per_class, batch_size, self.ranks)
        if self.checkpointer.pending_subset is not None:  # a resume inside the stage
            self.subset = self.checkpointer.pending_subset.to(self.device)
        else:
            self.subset = balanced_subset(data.labels, data.generator)
        return data.subset(self.subset, batch_size)

    def run_stage(self, task: Task, data: TaskData, stage: Stage) -> None:
        """One stage: its optimizer and schedule, every epoch, checkpoints as they fall due. A
        stage with its own loss runs on every process alike (no gradient exchange); the main
        and head stages run through the network's DDP replica and compiled form."""
        schedule = self.schedule(task, stage)
        first_epoch, order = self.checkpointer.continue_stage(stage.name)
        if first_epoch >= schedule.epochs:
            return
        data = self.stage_data(task, data, stage)
        if first_epoch == 0 and order is None:
            self.method.stage_start(stage, self.model, data)
        self.method.stage_prepare(stage, self.model, data)
        if self.settings.channels_last:
            self.model.to(memory_format=torch.channels_last)
        local = stage.loss is not None
        self.logger.stage_start(task, stage.name, schedule.epochs, len(data))
        with self.stage_parameters(task, data, stage) as params, self.forward_pass(task, local) as network:
            optimizer = make_optimizer(stage.optimizer, params, schedule)
            # float16 autocast (GPUs without bf16) scales the loss; otherwise the scaler passes through
            scaler = torch.amp.GradScaler(self.device.type, enabled=needs_grad_scaler(self.amp_dtype))
            self.checkpointer.restore_optimizer(optimizer, scaler)
            ranks = SINGLE if local else self.ranks
            for epoch in range(first_epoch, schedule.epochs):
                start_batch = self.checkpointer.begin_epoch(stage.name, epoch, continuing=order is not None)
                for group in optimizer.param_groups:
                    group["lr"] = schedule.lr_at(epoch)
                if stage.name == "main" and start_batch == 0:  # not again when resuming inside the epoch
                    self.method.epoch_start(epoch, self.model, data)
                started = time.perf_counter()
                batches = data.epoch(order, start_batch, ranks, network)
                sums = self.run_epoch(batches, stage, optimizer, scaler, data, ranks)
                order = None
                stats = {name: float(total) / len(data) for name, total in sums.items()}
                stats["images_per_s"] = data.num_images / (time.perf_counter() - started)
                self.images_trained += data.num_images
                stats["lr"] = optimizer.param_groups[0]["lr"]
                self.logger.epoch_end(task, epoch, stats)
                self.checkpointer.end_epoch()
                if self.checkpointer.due():
                    self.save(optimizer, scaler)
        self.subset = None

    @staticmethod
    def clamp_gradients(optimizer, scaler, bound: float) -> None:
        """Every gradient elementwise in [-bound, bound], unscaled first (float16 AMP)."""
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_value_([p for group in optimizer.param_groups for p in group["params"]], bound)

    @contextmanager
    def forward_pass(self, task: Task, local: bool):
        """What runs the model's forward pass in a stage: the model itself in a stage every
        process runs alike (`local`); else its DDP replica, compiled with `train.compile`."""
        if local:
            yield self.model
            return
        with self.ranks.replicate(self.model, self.device) as replica:
            if not self.settings.compile:
                yield replica
                return
            with compiled(replica, task.index) as network:
                yield network

    def run_epoch(self, batches, stage: Stage, optimizer, scaler, data: TaskData, ranks: Ranks) -> dict:
        """One pass over the batches; the sums of the loss and its parts, averaged over processes.
        Sums and the non-finite check stay on the device, read once per epoch: no per-batch sync."""
        sums: dict[str, torch.Tensor] = {}
        first_bad = torch.full((), -1, device=self.device)
        for batch in batches:
            with self.autocast():
                if stage.loss is not None:
                    loss, parts = stage.loss(batch, self.model)
                else:
                    loss, parts = self.method.training_loss(batch, self.model)
                    for addon in self.addons:
                        loss, parts = addon.training_loss(loss, parts, batch, self.model, self.method)
            bad = (first_bad < 0) & ~torch.isfinite(loss.detach())
            first_bad = torch.where(bad, torch.full_like(first_bad, batch.index), first_bad)
            optimizer.zero_grad(set_to_none=True)
            # DDP averages the ranks' gradients; the weight makes that the whole batch's gradient
            scaler.scale(loss * ranks.weight(batch.size)).backward()
            if self.method.grad_clamp:
                self.clamp_gradients(optimizer, scaler, self.method.grad_clamp)
            scaler.step(optimizer)
            scaler.update()
            if stage.loss is None:
                group = optimizer.param_groups[0]
                self.method.after_step(self.model, group["lr"], group.get("momentum", 0.0))
            for name, value in {"loss": loss.detach(), **parts}.items():
                sums[name] = sums.get(name, 0) + value.float()
            self.logger.batch_end()
            if self.stop_requested(batch.index, batch.count):  # all ranks stop at one batch
                self.checkpointer.stopped_after(batch.index)
                self.save(optimizer, scaler, order=data.loader.order)
                raise Interrupted(self.signal or signal.SIGTERM, self.checkpointer.folder)
        sums, bad_batch = self.ranks.mean(sums), int(self.ranks.max(first_bad))
        if bad_batch >= 0:
            p = self.checkpointer.position
            where = "" if p.stage == "main" else f"{p.stage} stage "
            raise NonFiniteLossError(
                f"loss is not finite at task {p.task}, {where}epoch {p.epoch + 1}, batch {bad_batch + 1} "
                "(lower train.lr or check the data)"
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
        """SIGINT/SIGTERM (Ctrl-C, SLURM preemption): in a stage, finish the batch, checkpoint,
        stop; in the work between stages (one process), stop at once and checkpoint the state
        before it; a second signal stops at once, leaving the last checkpoint."""

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
            # which parameters learn (methods freeze some for a task: old heads, BiC's corrections)
            "trainable": [
                name
                for name, p in self.model.named_parameters()
                if p.requires_grad != (id(p) in self.stage_flips)
            ],  # fmt: skip
            "method": self.method.state_dict(),
            "memory": self.memory.state_dict(),
            "task_exemplars": self.task_exemplars,
            "images_trained": self.images_trained,
            "results": self.results.state_dict(),
            "rng": checkpoint.rng_state(self.benchmark.generator),
        }

    def save(self, optimizer=None, scaler=None, order: torch.Tensor | None = None) -> None:
        self.checkpointer.save(self.state(), optimizer, scaler, order, self.subset)

    def restore(self, state: dict) -> None:
        """Continue from a checkpoint written by `save`."""
        for task, size in zip(self.benchmark.tasks, state["task_sizes"], strict=False):  # the tasks begun
            self.model.add_head(size)
            if task.pretrained:
                self.model.load_pretrained_head(self.pretrained_head)
        self.load_learner(state)
        exemplars = state.get("task_exemplars")  # none in checkpoints from before stages ran after the update
        self.images_trained = state.get("images_trained", 0)
        self.task_exemplars = None if exemplars is None else exemplars.to(self.device)
        self.results.load_state_dict(state["results"])
        checkpoint.set_rng_state(state["rng"], self.benchmark.generator)
        self.checkpointer.restore(state)
