"""PODNet: Pooled Outputs Distillation for Small-Tasks Incremental Learning (Douillard et al.,
ECCV 2020), as its official code (`arthurdouillard/incremental_learning.pytorch`,
inclearn/models/podnet.py, lib/losses/{base,distillation}.py) runs it.

The network (models/proxies.py) classifies with the local similarity classifier, K proxies per
class. The loss, from the second task on with the network as it was before the task (h*):

    L = L_NCA + lambda_f sqrt(N/T) L_flat + lambda_c sqrt(N/T) L_spatial          (eq. 5)
    L_spatial = 1/L sum_l mean_x || P(h_l(x)) - P(h*_l(x)) ||_2,
        P(h) = normalise([sum_w h^2, sum_h h^2])   (the code squares before pooling)  (eq. 2-3)
    L_flat = mean_x [1 - cos(f(x), f*(x))]                                           (eq. 4)
    L_NCA  = -log( exp(eta c_y) / (exp(eta max_j c_j) + sum_{j != y} exp(eta c_j)) )  (code, see below)

N the seen classes, T the new ones, lambda_c = 3, lambda_f = 1 (CIFAR-100); h_l the output of
each stage (the backbone's `stage_outputs`). The paper's NCA subtracts a margin of 0.6 from the
positive, leaves it out of the denominator and clips at 0; the official code subtracts the
margin from every class (it cancels; the author confirmed it, upstream issue #59) and keeps the
largest similarity in the denominator: that is the default here, `nca=paper` the paper's form.
A new task's proxies are the k-means centres (K of them) of its classes' normalised features,
scaled to the old proxies' mean norm; the old ones are frozen while the extractor learns. From
the second task, after the task's work: class-balanced fine-tuning of every class's proxies
(not eta) on the memory, 20 epochs at lr 0.05 (constant), the network in train mode as the
official code leaves it (its BatchNorm statistics follow the memory). Gradients are clamped to
[-5, 5] elementwise, as the official code's hooks do.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from cl_runner.data.schedule import Task
from cl_runner.methods.base import Batch, Stage, TaskData, require
from cl_runner.methods.features import normalized_features
from cl_runner.methods.teacher import WithTeacher
from cl_runner.models.proxies import ProxyNet

NCA = ("code", "paper")


def pod_spatial(maps: list[torch.Tensor], old_maps: list[torch.Tensor]) -> torch.Tensor:
    """The official POD-spatial: per layer, the squared activations summed over width and over
    height, concatenated, L2-normalised per image; the L2 distance to the old network's, averaged
    over the batch, then over the layers."""
    total = 0.0
    for h, old in zip(maps, old_maps, strict=True):
        pooled = [torch.cat([a.pow(2).sum(3).flatten(1), a.pow(2).sum(2).flatten(1)], 1) for a in (h, old)]
        new, previous = (F.normalize(p, dim=1) for p in pooled)
        total = total + (new - previous).norm(dim=1).mean()
    return total / len(maps)


def pod_flat(features: torch.Tensor, old_features: torch.Tensor) -> torch.Tensor:
    return (1 - F.cosine_similarity(features, old_features, dim=1)).mean()


def nca_loss(similarities: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor, margin: float, form: str):
    """`code`: what the official nca() computes (the margin cancels); `paper`: eq. 1 of the paper,
    the margin on the positive, the positive out of the denominator, clipped at 0."""
    z = scale * similarities
    positive = z.gather(1, labels[:, None]).squeeze(1)
    others = z.scatter(1, labels[:, None], float("-inf"))
    if form == "paper":
        return F.relu(-(positive - scale * margin) + torch.logsumexp(others, dim=1)).mean()
    largest = z.max(dim=1).values
    return (torch.logsumexp(torch.cat([others, largest[:, None]], 1), dim=1) - positive).mean()


class PODNet(WithTeacher):
    needs_memory = True
    all_logits = True
    grad_clamp = 5.0  # the official code's hooks clamp every gradient elementwise

    def __init__(
        self,
        proxies: int = 10,
        spatial_weight: float = 3.0,
        flat_weight: float = 1.0,
        margin: float = 0.6,
        nca: str = "code",
        imprint: bool = True,
        cbf_epochs: int = 20,
        cbf_lr: float = 0.05,
        cbf_batch_size: int = 128,
    ):
        require(proxies >= 1, f"method.proxies={proxies} is invalid: expected an integer >= 1")
        require(spatial_weight >= 0 and flat_weight >= 0, "method.spatial_weight/flat_weight must be >= 0")
        require(nca in NCA, f"method.nca={nca!r} is invalid: choose from {', '.join(NCA)}")
        require(cbf_epochs >= 0, f"method.cbf_epochs={cbf_epochs} is invalid: expected >= 0")
        self.network = lambda backbone: ProxyNet(backbone, proxies)
        self.proxies, self.spatial_weight, self.flat_weight = proxies, spatial_weight, flat_weight
        self.margin, self.nca, self.imprint = margin, nca, imprint
        self.cbf_epochs, self.cbf_lr, self.cbf_batch_size = cbf_epochs, cbf_lr, cbf_batch_size

    def before_task(self, task: Task, model: ProxyNet, memory) -> None:
        super().before_task(task, model, memory)
        for weight in model.old_head_parameters():  # old proxies stay out of the main stage
            weight.requires_grad_(False)

    def stages(self, task: Task, rehearsal: bool) -> list[Stage]:
        stages = super().stages(task, rehearsal)
        if task.index > 0 and self.cbf_epochs:
            stages.append(
                Stage("balanced", self.cbf_epochs, trains="classifier", data="memory", after_task=True,
                      mode="train", lr=self.cbf_lr, milestones=(), momentum=0.9, weight_decay=5e-4,
                      batch_size=self.cbf_batch_size)
            )  # fmt: skip
        return stages

    @torch.no_grad()
    def stage_start(self, stage: Stage, model: ProxyNet, data: TaskData) -> None:
        """A new task's proxies: k-means of each new class's normalised features (the network
        as the last task left it), scaled to the old proxies' mean norm."""
        task = data.task
        if stage.name != "main" or task.index == 0 or not self.imprint:
            return
        features, classes = normalized_features(model, data, task.labels)
        seed = int(torch.randint(2**31 - 1, (), generator=data.generator, device=data.generator.device))
        centres = [kmeans(features[classes == c], self.proxies, seed + c) for c in task.labels]
        norm = torch.cat(model.old_head_parameters()).norm(dim=1).mean()
        model.heads[-1].copy_(torch.cat(centres).to(model.heads[-1]) * norm)

    def training_loss(self, batch: Batch, model: ProxyNet) -> tuple[torch.Tensor, dict]:
        x, out = batch.forward(model)
        nca = nca_loss(out["logits"], batch.labels, model.scale, self.margin, self.nca)
        if self.teacher is None:
            return nca, {"nca": nca.detach()}
        with torch.no_grad():
            old = self.teacher(x)
        factor = math.sqrt(out["logits"].shape[1] / batch.task.size)  # sqrt(N / T)
        flat = pod_flat(out["features"], old["features"])
        spatial = pod_spatial(out["maps"], old["maps"])
        loss = nca + factor * (self.flat_weight * flat + self.spatial_weight * spatial)
        return loss, {"nca": nca.detach(), "pod_flat": flat.detach(), "pod_spatial": spatial.detach()}


def kmeans(features: torch.Tensor, clusters: int, seed: int) -> torch.Tensor:
    """The k-means centres (scikit-learn's KMeans, as the official code) of the features."""
    from sklearn.cluster import KMeans

    points = features.double().cpu().numpy()
    centres = KMeans(n_clusters=min(clusters, len(points)), n_init=10, random_state=seed % 2**31).fit(points)
    out = centres.cluster_centers_
    if len(out) < clusters:  # fewer images than proxies: repeat the centres
        out = np.resize(out, (clusters, out.shape[1]))
    return torch.from_numpy(out)
