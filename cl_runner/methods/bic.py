"""BiC: Large Scale Incremental Learning (Wu et al., CVPR 2019), as the official code
(`wuyuebupt/LargeScaleIncrementalLearning`: resnet.py, imagenet_main.py, utils_imagenet.py) runs it.

Stage 1 learns the task on its new data and the training exemplars with distillation:

    L = lambda L_d + (1 - lambda) L_c,   lambda = n / (n + m)                            (eq. 1-3)
    L_d = -sum_{k <= n} softmax(o_hat / T)_k log softmax(o / T)_k,   T = 2, no T^2

o the network's logits without any correction (the official student), o_hat those of the
network as the last task left it, its newest classes bias-corrected (the official code distils
from the deployed model). Stage 2, after the task's work, fits that task's bias correction on
images held out of training (`validation`), the same number of every seen class, the network
fixed (models/bias.py):

    q_k = o_k (old classes),   q_k = alpha o_k + beta (the new ones)                     (eq. 4)
    L_b = CE(q, y) + 0.05 beta^2      (the official 0.1 * l2_loss(beta); not in the paper)  (eq. 5)

SGD with momentum 0.9 at lr 0.1 for 200 epochs, x0.1 at 60, 120, 160 and 180. At step t it uses
floor(val_per_class / t) images of each class, as the official code takes floor(20 / t) from a
held-out pool of 20 per class; that code counts the validation images in the memory budget, so
the training exemplars take `exemplar_share` (0.9) of it. Only the newest correction applies, as
in the official code; `corrections=all` applies every task's (FACIL, PyCIL), the student's old
ones included.
"""

import torch
import torch.nn.functional as F

from cl_runner.data.schedule import Task
from cl_runner.methods.base import Batch, Stage, TaskData, require
from cl_runner.methods.losses import modified_cross_entropy
from cl_runner.methods.teacher import WithTeacher
from cl_runner.models.bias import BiasNet

CORRECTIONS = ("last", "all")
FIXED_CHUNK = 256  # images per forward pass of the bias stage's fixed logits


class BiC(WithTeacher):
    fixed_logits: torch.Tensor | None = None  # the bias stage's network outputs, per held-out image
    network = BiasNet
    all_logits = True
    needs_memory = True
    needs_validation = True
    exemplar_share = 0.9

    def __init__(
        self,
        T: float = 2.0,
        corrections: str = "last",
        val_per_class: int = 20,
        bias_epochs: int = 200,
        bias_lr: float = 0.1,
        bias_milestones: list[int] | None = None,
        beta_penalty: float = 0.05,
    ):
        require(T > 0, f"method.T={T} is invalid: expected a number > 0")
        require(corrections in CORRECTIONS, f"method.corrections={corrections!r}: choose from last, all")
        require(val_per_class >= 1, f"method.val_per_class={val_per_class} is invalid: expected >= 1")
        require(bias_epochs >= 0, f"method.bias_epochs={bias_epochs} is invalid: expected >= 0")
        require(bias_lr > 0, f"method.bias_lr={bias_lr} is invalid: expected a number > 0")
        require(beta_penalty >= 0, f"method.beta_penalty={beta_penalty} is invalid: expected >= 0")
        self.T, self.corrections, self.val_per_class = T, corrections, val_per_class
        self.bias_epochs, self.bias_lr, self.beta_penalty = bias_epochs, bias_lr, beta_penalty
        self.bias_milestones = tuple(bias_milestones if bias_milestones is not None else [60, 120, 160, 180])

    def stages(self, task: Task, rehearsal: bool) -> list[Stage]:
        stages = super().stages(task, rehearsal)
        if task.index > 0 and self.bias_epochs:
            stages.append(
                Stage("bias", self.bias_epochs, trains=lambda model: [model.correction(task.index)],
                      data="validation", per_class=max(1, self.val_per_class // task.index),
                      after_task=True, lr=self.bias_lr, milestones=self.bias_milestones,
                      momentum=0.9, weight_decay=0.0, loss=self.bias_loss)
            )  # fmt: skip
        return stages

    def stage_start(self, stage: Stage, model: BiasNet, data: TaskData) -> None:
        t = data.task.index
        if stage.name == "main":  # the student: uncorrected (official) or the old corrections fixed
            model.applied = list(range(t)) if self.corrections == "all" else []
        elif stage.name == "bias":
            model.applied = list(range(t + 1)) if self.corrections == "all" else [t]

    def stage_prepare(self, stage: Stage, model: BiasNet, data: TaskData) -> None:
        """The bias stage trains two parameters on a fixed network: each held-out image's
        uncorrected logits are computed once (undistorted, eval mode, in fixed chunks so that a
        resume computes the same), not in every one of its 200 epochs."""
        if stage.name != "bias":
            return
        applied, model.applied = model.applied, []
        self.fixed_logits = data.outputs(model, FIXED_CHUNK)  # inference mode, eval mode
        model.applied = applied

    def after_task(self, task: Task, model: BiasNet, memory, data: TaskData) -> None:
        if task.index == 0 or not self.bias_epochs:  # no stage 2: evaluated uncorrected
            model.applied = list(range(task.index)) if self.corrections == "all" else []

    def training_loss(self, batch: Batch, model: BiasNet) -> tuple[torch.Tensor, dict]:
        logits, teacher = self.with_teacher(batch, model)
        ce = self.classification_loss(logits, batch)  # L_c over every seen class
        if teacher is None:
            return ce, {"ce": ce.detach()}
        old, seen = batch.task.offset, logits.shape[1]
        kd = modified_cross_entropy(logits[:, :old], teacher, self.T)  # L_d, soft cross-entropy
        lamb = old / seen  # n / (n + m)
        return lamb * kd + (1 - lamb) * ce, {"ce": ce.detach(), "kd": kd.detach()}  # eq. 3

    def before_task(self, task: Task, model: BiasNet, memory) -> None:
        super().before_task(task, model, memory)  # the teacher: corrected as the last task left it
        self.fixed_logits = None  # the last bias stage's
        for correction in model.bias:  # learnt only in their own bias stage
            correction.requires_grad_(False)

    def bias_loss(self, batch: Batch, model: BiasNet) -> tuple[torch.Tensor, dict]:
        """Stage 2: cross-entropy of the corrected logits of undistorted held-out images, with
        the official penalty on beta; only this task's (alpha, beta) learn."""
        logits = model.corrected(self.fixed_logits[batch.positions])  # eq. 4 on the fixed network's logits
        ce = F.cross_entropy(logits, batch.labels)
        alpha, beta = model.correction(batch.task.index)
        loss = ce + self.beta_penalty * beta.pow(2)  # eq. 5, plus the official l2 on beta
        return loss, {"ce": ce.detach(), "alpha": alpha.detach(), "beta": beta.detach()}
