"""iCaRL (Rebuffi et al., CVPR 2017).

Representation learning (Alg. 3): every output is a sigmoid, trained with binary cross-entropy
on the new data and the exemplars. New classes' targets are the labels' one-hot; old classes'
targets are the outputs of the network as it was before this task (distillation):

    L(theta) = - sum_i [ sum_{y new} d(y=y_i) log g_y(x_i) + d(y!=y_i) log(1 - g_y(x_i))
                        + sum_{y old} q_i^y log g_y(x_i) + (1 - q_i^y) log(1 - g_y(x_i)) ],
    q_i^y = g_y^{old}(x_i)

summed over the seen classes and averaged over the batch (the official code averages over its
100 output units too, at lr 2.0: the same step as lr 0.02 here with 100 classes). Exemplars
come from the runner's herding memory (Alg. 4-5), and classification is by the nearest mean of
exemplars (Alg. 1), which the runner evaluates for every method with a memory (`nme` in
metrics.json); the network's own outputs are reported beside it as `class_il`.
"""

import torch
import torch.nn.functional as F
from torch import nn

from cl_runner.methods.base import Batch
from cl_runner.methods.teacher import WithTeacher


def icarl_targets(labels: torch.Tensor, seen: int, old_probs: torch.Tensor | None) -> torch.Tensor:
    """One-hot over the seen classes; the old classes' columns replaced by the old network's
    sigmoid outputs (every row, exemplars included, as the official code does)."""
    targets = F.one_hot(labels, seen).float()
    if old_probs is not None:
        targets[:, : old_probs.shape[1]] = old_probs
    return targets


class ICaRL(WithTeacher):
    needs_memory = True

    def training_loss(self, batch: Batch, model: nn.Module) -> tuple[torch.Tensor, dict]:
        logits, old_logits = self.with_teacher(batch, model)
        old_probs = None if old_logits is None else torch.sigmoid(old_logits.float())
        targets = icarl_targets(batch.labels, logits.shape[1], old_probs)
        bce = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="sum")
        loss = bce / len(logits)  # Alg. 3: summed over the classes, averaged over the batch
        return loss, {"bce": loss.detach()}
