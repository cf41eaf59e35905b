"""The training loop's plain settings and the learning-rate schedule they describe. Plain
values only: validating a config imports this, not the loop."""

import math
from dataclasses import dataclass, field


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
