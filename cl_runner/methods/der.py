"""DER: Dynamically Expandable Representation (Yan, Xie, He, CVPR 2021).

The expandable network (models/expandable.py) adds a feature extractor per task and freezes the
older ones; this file adds what DER trains on top of it:

    L = CE(classifier(u), y) + lambda_a * CE(aux(phi_t(x)), y_aux) + lambda_s * L_S   (eq. 5, 8)

with y_aux = y - offset + 1 for the new task's classes and 0 for every old class, and L_S the
sparsity of the new extractor's channel masks (models/masks.py), whose s is annealed
within each epoch as in HAT:

    s = 1/s_max + (s_max - 1/s_max) * (b - 1) / (B - 1),   b = 1..B batches of the epoch

As the official code does, the classifiers are re-initialised when the learning-rate warm-up
ends (`reset_classifiers_epoch`, the warm-up length). After each task the masked channels are
pruned (`prune=true`; `prune=false` is "DER w/o P": no masks, no sparsity loss), then the
classifier learning stage (section 3.3) resets the classifier and trains it alone, with a
softmax temperature, on a class-balanced subset of the task's training data: the new data plus
the memory as it was before this task (the official `_after_task` re-trains the classifier
before it builds the new exemplars), every class cut to the smallest class's count, with the
training distortions drawn anew each epoch. The extractors run in eval mode and do not move.
The runner runs that stage ("balanced") as any other: SGD with momentum 0.9 and weight decay
5e-4 as the official `finetune_last_layer` (inclearn/convnet/utils.py) takes them.
"""

import functools

import torch
import torch.nn.functional as F

from cl_runner.methods.base import Batch, Method, Stage, TaskData, require
from cl_runner.models.expandable import ExpandableNet, MaskSettings


def mask_scale(index: int, count: int, s_max: float) -> float:
    """HAT's annealing: 1/s_max at the epoch's first batch, s_max at its last."""
    progress = index / (count - 1) if count > 1 else 1.0
    return 1 / s_max + (s_max - 1 / s_max) * progress


class DER(Method):
    all_logits = True  # the official code's cross-entropy covers every seen class

    def __init__(
        self,
        aux_weight: float = 1.0,
        prune: bool = True,
        sparsity_weight: float = 1.0,
        s_max: float = 400.0,
        mask_init: float = 1.0,
        mask_compensation: bool = True,
        reuse_classifier: bool = False,
        classifier_bias: bool = False,
        reset_classifiers_epoch: int = 0,
        balanced_epochs: int = 30,
        balanced_lr: float = 0.1,
        balanced_milestones: list[int] | None = None,
        balanced_temperature: float = 5.0,
        balanced_batch_size: int = 128,
    ):
        require(aux_weight >= 0, f"method.aux_weight={aux_weight} is invalid: expected a number >= 0")
        require(balanced_epochs >= 0, f"method.balanced_epochs={balanced_epochs} is invalid: expected >= 0")
        require(balanced_lr > 0, f"method.balanced_lr={balanced_lr} is invalid: expected a number > 0")
        require(balanced_temperature > 0, f"method.balanced_temperature={balanced_temperature}: expected > 0")
        require(sparsity_weight >= 0, f"method.sparsity_weight={sparsity_weight} is invalid: expected >= 0")
        require(s_max >= 1, f"method.s_max={s_max} is invalid: expected a number >= 1")
        require(
            reset_classifiers_epoch >= 0, f"method.reset_classifiers_epoch={reset_classifiers_epoch}: >= 0"
        )
        self.aux_weight = aux_weight
        self.sparsity_weight, self.s_max = sparsity_weight, s_max
        masks = MaskSettings(s_max, mask_init, mask_compensation) if prune else None
        self.network = functools.partial(
            ExpandableNet, masks=masks, reuse_classifier=reuse_classifier, bias=classifier_bias
        )
        self.reset_classifiers_epoch = reset_classifiers_epoch
        self.balanced_epochs, self.balanced_lr = balanced_epochs, balanced_lr
        self.balanced_milestones = list(balanced_milestones if balanced_milestones is not None else [15])
        self.balanced_temperature, self.balanced_batch_size = balanced_temperature, balanced_batch_size

    def stages(self, task, rehearsal: bool) -> list[Stage]:
        """Representation learning, then (with exemplars, from the second task) the classifier
        alone on the class-balanced data, after the task's pruning."""
        stages = super().stages(task, rehearsal)
        if task.index > 0 and self.balanced_epochs and rehearsal:
            stages.append(
                Stage(
                    "balanced",
                    self.balanced_epochs,
                    trains="classifier",
                    data="balanced",
                    after_task=True,
                    lr=self.balanced_lr,
                    milestones=tuple(self.balanced_milestones),
                    momentum=0.9,
                    weight_decay=5e-4,
                    batch_size=self.balanced_batch_size,
                    loss=self.balanced_loss,
                )
            )
        return stages

    def stage_start(self, stage: Stage, model: ExpandableNet, data: TaskData) -> None:
        if stage.name == "balanced":
            model.reset_classifiers(data.generator, aux=False)  # section 3.3: a fresh classifier

    def epoch_start(self, epoch: int, model: ExpandableNet, data: TaskData) -> None:
        if self.reset_classifiers_epoch and epoch == self.reset_classifiers_epoch:
            model.reset_classifiers(data.generator)  # the official warm-up's end: both classifiers

    def training_loss(self, batch: Batch, model: ExpandableNet) -> tuple[torch.Tensor, dict]:
        masks = model.masks
        if masks is not None:
            masks.set_scale(mask_scale(batch.index, batch.count, self.s_max))
        out = batch.forward(model).outputs
        loss = ce = self.classification_loss(out["logits"], batch)
        parts = {"ce": ce.detach()}
        if "aux_logits" in out:
            offset = batch.task.offset
            aux_labels = torch.where(batch.labels >= offset, batch.labels - offset + 1, 0)  # old -> 0
            aux = F.cross_entropy(out["aux_logits"], aux_labels)
            loss = loss + self.aux_weight * aux
            parts["aux"] = aux.detach()
        if masks is not None:
            sparsity = masks.sparsity()
            loss = loss + self.sparsity_weight * sparsity
            parts["sparsity"] = sparsity.detach()
        return loss, parts

    def balanced_loss(self, batch: Batch, model: ExpandableNet) -> tuple[torch.Tensor, dict]:
        """The classifier learning stage: cross-entropy of the logits divided by T."""
        with torch.no_grad():
            features, _ = model.features(batch.view())
        loss = F.cross_entropy(model.classifier(features) / self.balanced_temperature, batch.labels)
        return loss, {"ce": loss.detach()}

    def after_step(self, model: ExpandableNet, lr: float, momentum: float) -> None:
        if model.masks is not None:
            model.masks.clamp_()

    def after_task(self, task, model: ExpandableNet, memory, data: TaskData) -> None:
        if model.masks is not None:
            model.prune_last()
