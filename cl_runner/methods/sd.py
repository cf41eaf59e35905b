"""Data-distortion guided self-distillation (Xu & Liu, AAAI 2019), an add-on for any method.

Each batch gives two distorted views x_a, x_b of the same images. The wrapped method computes
its own loss on x_a; SD adds the second view's classification loss, the KL divergence between
the two views' predictions in both directions, and the MMD between their pooled features:

    L = L_method(x_a) + CE(p_b, y) + w_kl * (KL(p_a || p_b) + KL(p_b || p_a))
        + w_mmd * || mean_i h(x_a,i) - mean_i h(x_b,i) ||_2^2                         (eq. 1-6)

With the plain method (fine-tuning) L_method(x_a) = CE(p_a, y): the paper's five terms with
equal weights. CE(p_b, y) uses the wrapped method's own classification loss (LwF: new head).
p = softmax(z / T) with T = 1 by default (the paper has no temperature, and no T^2 factor).
Gradients flow through both views in every term, as in the paper (one network, no teacher).
The two views are independent draws of the data set's distortion on every data path: device
data is distorted twice on the device, file data is decoded twice by the workers (`views = 2`).
"""

from dataclasses import dataclass, fields

import torch
from torch import nn

from cl_runner.data.schedule import Task
from cl_runner.methods.base import Batch, Method, TaskData, require
from cl_runner.methods.losses import kl_divergence


@dataclass
class FixedViewBatch(Batch):
    """A batch whose view() is one given tensor, so the wrapped method sees exactly x_a."""

    fixed: torch.Tensor | None = None

    def view(self) -> torch.Tensor:
        return self.fixed


class OutputRecorder:
    """Stands in for the model and keeps its first output on `x`, so SD reuses the wrapped
    method's forward pass on x_a instead of running it twice."""

    def __init__(self, model: nn.Module, x: torch.Tensor):
        self.model, self.x, self.output = model, x, None

    def __call__(self, x: torch.Tensor) -> dict:
        out = self.model(x)
        if x is self.x and self.output is None:
            self.output = out
        return out

    def __getattr__(self, name: str):
        return getattr(self.model, name)


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor, T: float) -> torch.Tensor:
    """KL(p_a || p_b) + KL(p_b || p_a) with p = softmax(z / T), averaged over the batch."""
    return kl_divergence(logits_a, logits_b, T) + kl_divergence(logits_b, logits_a, T)


def mmd(features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
    """Empirical MMD with the linear kernel: squared distance of the batch means."""
    return (features_a.float().mean(0) - features_b.float().mean(0)).pow(2).sum()


class SelfDistillation(Method):
    views = 2

    def __init__(
        self,
        base: Method,
        T: float = 1.0,
        kl_weight: float = 1.0,
        mmd_weight: float = 1.0,
        noise_std: float = 0.0,
    ):
        require(T > 0, f"sd.T={T} is invalid: expected a number > 0")
        require(kl_weight >= 0, f"sd.kl_weight={kl_weight} is invalid: expected a number >= 0")
        require(mmd_weight >= 0, f"sd.mmd_weight={mmd_weight} is invalid: expected a number >= 0")
        require(noise_std >= 0, f"sd.noise_std={noise_std} is invalid: expected a number >= 0")
        self.base, self.T, self.kl_weight, self.mmd_weight, self.noise_std = (
            base,
            T,
            kl_weight,
            mmd_weight,
            noise_std,
        )
        self.head_warmup_epochs, self.network = base.head_warmup_epochs, base.network
        self.all_logits = base.all_logits

    def two_views(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent draws of the data set's distortion (crop + flip); optional extra noise on x_b."""
        x_a, x_b = batch.view(), batch.view()
        if self.noise_std:
            x_b = x_b + self.noise_std * batch.randn_like(x_b)
        return x_a, x_b

    def training_loss(self, batch: Batch, model: nn.Module) -> tuple[torch.Tensor, dict]:
        x_a, x_b = self.two_views(batch)
        recorder = OutputRecorder(model, x_a)
        view_a = FixedViewBatch(**{f.name: getattr(batch, f.name) for f in fields(Batch)}, fixed=x_a)
        loss, parts = self.base.training_loss(view_a, recorder)
        out_a = recorder.output if recorder.output is not None else model(x_a)
        out_b = model(x_b)
        ce_b = self.base.classification_loss(out_b["logits"], batch)
        kl = symmetric_kl(out_a["logits"], out_b["logits"], self.T)
        discrepancy = mmd(out_a["features"], out_b["features"])
        total = loss + ce_b + self.kl_weight * kl + self.mmd_weight * discrepancy
        return total, {
            **parts,
            "sd_ce_b": ce_b.detach(),
            "sd_kl": kl.detach(),
            "sd_mmd": discrepancy.detach(),
        }

    # Everything else is the wrapped method's.
    def training_classes(self, task: Task) -> range:
        return self.base.training_classes(task)

    def before_task(self, task: Task, model: nn.Module, memory) -> None:
        self.base.before_task(task, model, memory)

    def classification_loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.base.classification_loss(logits, batch)

    def epoch_start(self, epoch: int, model: nn.Module, data: TaskData) -> None:
        self.base.epoch_start(epoch, model, data)

    def after_step(self, model: nn.Module, lr: float, momentum: float) -> None:
        self.base.after_step(model, lr, momentum)

    def after_task(self, task: Task, model: nn.Module, memory, data: TaskData) -> None:
        self.base.after_task(task, model, memory, data)

    def state_dict(self) -> dict:
        return {"base": self.base.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state["base"])
