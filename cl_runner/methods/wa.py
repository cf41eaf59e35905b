"""Weight Aligning (Zhao et al., "Maintaining Discrimination and Fairness in Class Incremental
Learning", CVPR 2020).

Training keeps the old classes apart with knowledge distillation, on the new data and the
exemplars:

    L = (1 - lambda) L_CE(x, y) + lambda L_KD(x),   lambda = n_old / (n_old + n_new)
    L_KD = KL( softmax(o_hat_old / T) || softmax(o_old / T) ),  T = 2

o_hat the old network's logits, o the current one's, over the old classes (KL and the paper's
soft cross-entropy differ by a constant: the same gradient). After every optimizer step the
classifier's weights are clipped to be non-negative (weight clipping; the DER authors' WA code
clamps after every step, `clip=false` leaves them). After the task the new classes' weight
vectors are rescaled so that their mean norm matches the old classes' (Weight Aligning):

    W_new <- gamma W_new,   gamma = Mean(||W_old||) / Mean(||W_new||)

A head's bias, where it has one, is scaled with its weights: the new logits are scaled by gamma,
as the DER authors' WA implementation does it (their classifier has no bias).
"""

import torch
from torch import nn

from cl_runner.data.schedule import Task
from cl_runner.methods.base import Batch, TaskData, require
from cl_runner.methods.losses import kl_divergence
from cl_runner.methods.teacher import WithTeacher


def aligning_factor(old_weights: torch.Tensor, new_weights: torch.Tensor) -> torch.Tensor:
    """gamma = Mean(||W_old,i||) / Mean(||W_new,j||), rows being the classes' weight vectors."""
    return old_weights.norm(dim=1).mean() / new_weights.norm(dim=1).mean()


class WA(WithTeacher):  # the teacher: the network aligned at the end of the last task
    needs_memory = True

    def __init__(self, T: float = 2.0, clip: bool = True):
        require(T > 0, f"method.T={T} is invalid: expected a number > 0")
        self.T, self.clip = T, clip

    def training_loss(self, batch: Batch, model: nn.Module) -> tuple[torch.Tensor, dict]:
        logits, teacher = self.with_teacher(batch, model)
        ce = self.classification_loss(logits, batch)
        if teacher is None:
            return ce, {"ce": ce.detach()}
        old, seen = batch.task.offset, logits.shape[1]
        kd = kl_divergence(teacher, logits[:, :old], self.T)  # L_KD
        lamb = old / seen
        return (1 - lamb) * ce + lamb * kd, {"ce": ce.detach(), "kd": kd.detach()}  # L

    @torch.no_grad()
    def after_step(self, model: nn.Module, lr: float, momentum: float) -> None:
        if self.clip:
            for head in model.heads:
                head.weight.clamp_(min=0)

    @torch.no_grad()
    def after_task(self, task: Task, model: nn.Module, memory, data: TaskData) -> None:
        if task.index == 0:
            return
        heads = list(model.heads)
        old = torch.cat([head.weight for head in heads[:-1]])
        new = heads[-1]
        gamma = aligning_factor(old, new.weight)
        new.weight.mul_(gamma)  # W_new <- gamma W_new
        if new.bias is not None:
            new.bias.mul_(gamma)
