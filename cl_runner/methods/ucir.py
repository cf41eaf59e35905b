"""UCIR: Learning a Unified Classifier Incrementally via Rebalancing (Hou et al., CVPR 2019), as
its official code (`hshustc/CVPR19_Incremental_Learning`, class_incremental_cosine_cifar100.py and
utils_incremental/incremental_train_and_eval_MR_LF.py) runs it.

The network (models/cosine.py) scores classes by sigma * cosine(f(x), w_c), the backbone's last
ReLU removed (method config: `backbone.relu=not_last`). Before a new task its classes' weights are
imprinted: the normalised mean of the normalised features of each new class's training images,
scaled to the old weights' mean norm; the old classes' weights are then frozen. The loss:

    L = CE(sigma * cos(x), y)                                                   (eq. 6)
      + lambda * mean_x [1 - <f(x)/|f(x)|, f*(x)/|f*(x)|>]                     (less-forget, eq. 5)
      + w_mr * mean_{x old, k <= K} max(0, m - cos_y(x) + cos_k(x))            (margin ranking, eq. 7)
    lambda = lambda_base * sqrt(|C_old| / |C_new|)                              (adaptive weight)

f* the features of the network as it was before the task (eval mode), cos_k the K highest cosines
among the new classes, on the old classes' exemplars in the batch; m = 0.5, K = 2, w_mr = 1,
lambda_base = 5 (CIFAR). The margin ranking loss is the mean over the |B_old| K pairs (the code's
MarginRankingLoss). `cbf_epochs` > 0 adds the class-balanced fine-tuning of the released
ImageNet code (the CIFAR release dropped it): after the task's work, every class's weights alone
(sigma and the extractor fixed, eval mode) on the exemplars of all seen classes.
"""

import math

import torch
import torch.nn.functional as F

from cl_runner.data.schedule import Task
from cl_runner.methods.base import Batch, Stage, TaskData, require
from cl_runner.methods.features import class_feature_means
from cl_runner.methods.teacher import WithTeacher
from cl_runner.models.cosine import CosineNet


def adaptive_weight(lambda_base: float, old_classes: int, new_classes: int) -> float:
    """lambda = lambda_base * sqrt(|C_old| / |C_new|): more old classes, more to keep."""
    return lambda_base * math.sqrt(old_classes / new_classes)


def margin_ranking(
    cosine: torch.Tensor, labels: torch.Tensor, old: int, margin: float, k: int
) -> torch.Tensor:
    """max(0, m - cos_y + cos_k) for the K hardest new classes, averaged over every (old-class
    image, k) pair; 0 when the batch holds no old class."""
    anchors = labels < old
    positive = cosine[anchors].gather(1, labels[anchors, None])  # [n, 1]
    negatives = cosine[anchors, old:].topk(k, dim=1).values  # [n, K]
    if not len(positive):
        return cosine.sum() * 0
    return F.relu(margin - positive + negatives).mean()


def less_forget(features: torch.Tensor, old_features: torch.Tensor) -> torch.Tensor:
    """1 - cosine of the features and the old network's, averaged over the batch."""
    return (1 - F.cosine_similarity(features, old_features, dim=1)).mean()


class UCIR(WithTeacher):
    network = CosineNet
    all_logits = True  # one classifier over every seen class
    needs_memory = True

    def __init__(
        self,
        lambda_base: float = 5.0,
        adaptive: bool = True,
        margin: float = 0.5,
        hard_negatives: int = 2,
        mr_weight: float = 1.0,
        imprint: bool = True,
        freeze_old: bool = True,
        cbf_epochs: int = 0,
        cbf_lr: float = 0.01,
        cbf_milestones: list[int] | None = None,
        cbf_batch_size: int = 128,
    ):
        require(lambda_base >= 0, f"method.lambda_base={lambda_base} is invalid: expected a number >= 0")
        require(margin >= 0, f"method.margin={margin} is invalid: expected a number >= 0")
        require(hard_negatives >= 1, f"method.hard_negatives={hard_negatives} is invalid: expected >= 1")
        require(mr_weight >= 0, f"method.mr_weight={mr_weight} is invalid: expected a number >= 0")
        require(cbf_epochs >= 0, f"method.cbf_epochs={cbf_epochs} is invalid: expected >= 0")
        require(cbf_lr > 0, f"method.cbf_lr={cbf_lr} is invalid: expected a number > 0")
        self.lambda_base, self.adaptive, self.margin, self.k = lambda_base, adaptive, margin, hard_negatives
        self.mr_weight, self.imprint, self.freeze_old = mr_weight, imprint, freeze_old
        self.cbf_epochs, self.cbf_lr, self.cbf_batch_size = cbf_epochs, cbf_lr, cbf_batch_size
        self.cbf_milestones = tuple(cbf_milestones if cbf_milestones is not None else [10])

    def lamb(self, task: Task) -> float:
        new = task.size
        return adaptive_weight(self.lambda_base, task.offset, new) if self.adaptive else self.lambda_base

    def before_task(self, task: Task, model: CosineNet, memory) -> None:
        super().before_task(task, model, memory)
        if task.index > 0 and self.freeze_old:  # the official code trains them at lr 0
            for weight in model.old_head_parameters():
                weight.requires_grad_(False)

    def stages(self, task: Task, rehearsal: bool) -> list[Stage]:
        stages = super().stages(task, rehearsal)
        if task.index > 0 and self.cbf_epochs:
            stages.append(
                Stage("balanced", self.cbf_epochs, trains="classifier", data="memory", after_task=True,
                      lr=self.cbf_lr, milestones=self.cbf_milestones, momentum=0.9, weight_decay=5e-4,
                      batch_size=self.cbf_batch_size)
            )  # fmt: skip
        return stages

    @torch.no_grad()
    def stage_start(self, stage: Stage, model: CosineNet, data: TaskData) -> None:
        """Imprint the new classes' weights from the network as the last task left it."""
        if stage.name != "main" or data.task.index == 0 or not self.imprint:
            return
        task = data.task
        means = class_feature_means(model, data, task.labels)  # normalised means of normalised features
        old_norm = torch.cat(model.old_head_parameters()).norm(dim=1).mean()
        model.heads[-1].copy_(F.normalize(means, dim=1) * old_norm)

    def training_loss(self, batch: Batch, model: CosineNet) -> tuple[torch.Tensor, dict]:
        x, out = batch.forward(model)
        ce = self.classification_loss(out["logits"], batch)  # eq. 6: over every seen class
        if self.teacher is None:
            return ce, {"ce": ce.detach()}
        with torch.no_grad():
            old_features = self.teacher(x)["features"]
        lf = less_forget(out["features"], old_features)
        mr = margin_ranking(out["cosine"], batch.labels, batch.task.offset, self.margin, self.k)
        loss = ce + self.lamb(batch.task) * lf + self.mr_weight * mr
        return loss, {"ce": ce.detach(), "lf": lf.detach(), "mr": mr.detach()}
