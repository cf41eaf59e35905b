"""DER: Dynamically Expandable Representation (Yan, Xie, He, CVPR 2021).

The expandable network (models/expandable.py) adds a feature extractor per task and freezes the
older ones; this file adds what DER trains on top of it:

    L = CE(classifier(u), y) + lambda_a * CE(aux(phi_t(x)), y_aux)                      (eq. 4-6)

with y_aux = y - offset + 1 for the new task's classes and 0 for every old class. After each
task the classifier is re-trained on the class-balanced exemplar memory with the extractors
fixed and a softmax temperature (the paper's "classifier learning" stage; CIFAR recipe 30
epochs, lr 0.1, milestone 15, temperature 5). The features of the memory are computed once,
undistorted, and the classifier trains on them: extractors do not move in this stage.

Not yet here: the channel masks with the sparsity loss and the pruning of masked channels.
"""

import torch
import torch.nn.functional as F
from torch import nn

from cl_runner.data.schedule import Task
from cl_runner.evaluate import forward_all
from cl_runner.methods.base import Batch, Method, TaskData, require
from cl_runner.models.expandable import ExpandableNet


class DER(Method):
    network = ExpandableNet

    def __init__(
        self,
        aux_weight: float = 1.0,
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
        self.aux_weight = aux_weight
        self.balanced_epochs, self.balanced_lr = balanced_epochs, balanced_lr
        self.balanced_milestones = list(balanced_milestones if balanced_milestones is not None else [15])
        self.balanced_temperature, self.balanced_batch_size = balanced_temperature, balanced_batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def training_loss(self, batch: Batch, model: nn.Module) -> tuple[torch.Tensor, dict]:
        out = model(batch.view())
        ce = self.classification_loss(out["logits"], batch.labels, batch.task)
        if "aux_logits" not in out:
            return ce, {"ce": ce.detach()}
        offset = batch.task.offset
        aux_labels = torch.where(batch.labels >= offset, batch.labels - offset + 1, 0)  # old classes -> 0
        aux = F.cross_entropy(out["aux_logits"], aux_labels)
        return ce + self.aux_weight * aux, {"ce": ce.detach(), "aux": aux.detach()}

    def after_task(self, task: Task, model: nn.Module, memory, data: TaskData) -> None:
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
