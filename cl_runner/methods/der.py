"""DER: Dynamically Expandable Representation (Yan, Xie, He, CVPR 2021).

The expandable network (models/expandable.py) adds a feature extractor per task and freezes the
older ones; this file adds what DER trains on top of it:

    L = CE(classifier(u), y) + lambda_a * CE(aux(phi_t(x)), y_aux) + lambda_s * L_S   (section 3)

with y_aux = y - offset + 1 for the new task's classes and 0 for every old class, and L_S the
sparsity of the new extractor's channel masks (models/masks.py), whose s is annealed
within each epoch as in HAT:

    s = 1/s_max + (s_max - 1/s_max) * (b - 1) / (B - 1),   b = 1..B batches of the epoch

After each task the masked channels are pruned (`prune=true`; `prune=false` is "DER w/o P":
no masks, no sparsity loss), then the classifier is re-trained on the class-balanced exemplar
memory with the extractors fixed and a softmax temperature (the paper's "classifier learning"
stage; CIFAR recipe 30 epochs, lr 0.1, milestone 15, temperature 5). The memory's features are
computed once, undistorted, and the classifier trains on them: extractors do not move.
"""

import functools

import torch
import torch.nn.functional as F
from torch import nn

from cl_runner.data.schedule import Task
from cl_runner.evaluate import forward_all
from cl_runner.methods.base import Batch, Method, TaskData, require
from cl_runner.models.expandable import ExpandableNet, MaskSettings


def mask_scale(index: int, count: int, s_max: float) -> float:
    """HAT's annealing: 1/s_max at the epoch's first batch, s_max at its last."""
    progress = index / (count - 1) if count > 1 else 1.0
    return 1 / s_max + (s_max - 1 / s_max) * progress


class DER(Method):
    def __init__(
        self,
        aux_weight: float = 1.0,
        prune: bool = True,
        sparsity_weight: float = 1.0,
        s_max: float = 400.0,
        mask_init: float = 1.0,
        mask_compensation: bool = True,
        balanced_epochs: int = 30,
        balanced_lr: float = 0.1,
        balanced_milestones: list[int] | None = None,
        balanced_temperature: float = 5.0,
        balanced_batch_size: int = 128,
        seed: int = 0,
    ):
        require(aux_weight >= 0, f"method.aux_weight={aux_weight} is invalid: expected a number >= 0")
        require(balanced_epochs >= 0, f"method.balanced_epochs={balanced_epochs} is invalid: expected >= 0")
        require(balanced_lr > 0, f"method.balanced_lr={balanced_lr} is invalid: expected a number > 0")
        require(balanced_temperature > 0, f"method.balanced_temperature={balanced_temperature}: expected > 0")
        require(sparsity_weight >= 0, f"method.sparsity_weight={sparsity_weight} is invalid: expected >= 0")
        require(s_max >= 1, f"method.s_max={s_max} is invalid: expected a number >= 1")
        self.aux_weight = aux_weight
        self.sparsity_weight, self.s_max = sparsity_weight, s_max
        masks = MaskSettings(s_max, mask_init, mask_compensation) if prune else None
        self.network = functools.partial(ExpandableNet, masks=masks)
        self.balanced_epochs, self.balanced_lr = balanced_epochs, balanced_lr
        self.balanced_milestones = list(balanced_milestones if balanced_milestones is not None else [15])
        self.balanced_temperature, self.balanced_batch_size = balanced_temperature, balanced_batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def training_loss(self, batch: Batch, model: nn.Module) -> tuple[torch.Tensor, dict]:
        masks = model.masks
        if masks is not None:
            masks.set_scale(mask_scale(batch.index, batch.count, self.s_max))
        out = model(batch.view())
        loss = ce = self.classification_loss(out["logits"], batch.labels, batch.task)
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

    def after_step(self, model: nn.Module, lr: float) -> None:
        if model.masks is not None:
            model.masks.clamp_()

    def after_task(self, task: Task, model: nn.Module, memory, data: TaskData) -> None:
        if model.masks is not None:
            model.prune_last()
        if task.index == 0 or not self.balanced_epochs or not len(memory):
            return
        exemplars = memory.exemplars()
        features = forward_all(model, exemplars.images, data.augment.normalize, 1024)["features"]
        self.retrain_classifier(model.classifier, features, exemplars.labels)

    @torch.enable_grad()
    def retrain_classifier(self, classifier: nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> None:
        """SGD on the classifier alone over class-balanced features, logits divided by T."""
        optimizer = torch.optim.SGD(
            classifier.parameters(), lr=self.balanced_lr, momentum=0.9, weight_decay=5e-4
        )
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, self.balanced_milestones, gamma=0.1)
        n = len(labels)
        for _ in range(self.balanced_epochs):
            order = torch.randperm(n, generator=self.generator).to(labels.device)
            for start in range(0, n, self.balanced_batch_size):
                idx = order[start : start + self.balanced_batch_size]
                loss = F.cross_entropy(classifier(features[idx]) / self.balanced_temperature, labels[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            schedule.step()

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
