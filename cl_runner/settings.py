"""The training loop's plain settings and the learning-rate schedules they describe. Plain
values only: validating a config imports this, not the loop."""

import math
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Schedule:
    """How one stage of a task is optimised: SGD with momentum and weight decay, and the
    learning rate over its epochs."""

    epochs: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "multistep"  # multistep | cosine | constant
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: int = 0

    def lr_at(self, epoch: int) -> float:
        return self.lr * self.lr_factor(epoch)

    def lr_factor(self, epoch: int) -> float:
        """Linear warm-up over `warmup_epochs`, then the multistep, cosine or constant schedule,
        which counts its epochs from the end of the warm-up: milestones [100, 120] after 10 warm-up
        epochs drop the rate at epochs 110 and 130, as DER's official GradualWarmupScheduler does."""
        if epoch < self.warmup_epochs:
            return (epoch + 1) / self.warmup_epochs
        after = epoch - self.warmup_epochs
        if self.scheduler == "multistep":
            return self.gamma ** sum(after >= m for m in self.milestones)
        if self.scheduler == "cosine":
            span = max(self.epochs - self.warmup_epochs, 1)
            return 0.5 * (1 + math.cos(math.pi * after / span))
        return 1.0


@dataclass(frozen=True)
class FirstTask:
    """The first learnt task's own schedule (PyCIL's, UCIR's and PODNet's recipes train it
    longer or with another weight decay); each value left None is the main schedule's."""

    epochs: int | None = None
    lr: float | None = None
    milestones: tuple[int, ...] | None = None
    weight_decay: float | None = None


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
    first_task: FirstTask = field(default_factory=FirstTask)
    # same: every task's weight decay is `weight_decay`; inverse: the t-th learnt task's (t from 0)
    # is weight_decay / (t + 1), as BiC's and WA's official ImageNet code decays it
    weight_decay_per_task: str = "same"
    eval_batch_size: int = 1024  # config "auto" is decided for the device by config.validate
    amp: bool = False
    channels_last: bool = False  # likewise "auto"
    eval_channels_last: bool = False  # not a config key: config.validate decides it for the device
    compile: bool = False
    precise_bn: bool = True
    deterministic: bool = False
    # After the first learnt task (config "auto": decided by config.validate for the protocol):
    later_lr_factor: float = 1.0  # the learning rate of later tasks is lr times this
    fix_bn: bool = False  # BatchNorm statistics stay as the first learnt task left them

    def schedule(self, first: bool = False, learnt: int = 0) -> Schedule:
        """The main stage's schedule for the `learnt`-th learnt task (0: the first, which takes
        its own values where it has them)."""
        inverse = self.weight_decay_per_task == "inverse"
        decay = self.weight_decay / (learnt + 1) if inverse else self.weight_decay
        main = Schedule(
            self.epochs,
            self.lr,
            self.momentum,
            decay,
            self.scheduler,
            tuple(self.milestones),
            self.gamma,
            self.warmup_epochs,
        )
        if not first:
            return main
        own = {k: v for k, v in vars(self.first_task).items() if v is not None}
        return replace(main, **{k: tuple(v) if k == "milestones" else v for k, v in own.items()})
