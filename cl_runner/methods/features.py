"""Features of a task's own images, class by class, for methods that initialise a new class's
weights from them (UCIR's imprinting, PODNet's k-means proxies)."""

import torch
import torch.nn.functional as F
from torch import nn

from cl_runner.methods.base import TaskData
from cl_runner.modes import eval_mode


@torch.no_grad()
def normalized_features(model: nn.Module, data: TaskData, labels: range) -> tuple[torch.Tensor, torch.Tensor]:
    """The L2-normalised features (eval mode) of the task data's images of `labels`, undistorted
    where the data is in memory, and their labels; one pass, every image on every process."""
    features, classes = [], []
    with eval_mode(model):
        for batch in data.epoch():
            keep = (batch.labels >= labels.start) & (batch.labels < labels.stop)
            if keep.any():
                features.append(F.normalize(model(batch.clean()[keep])["features"].float(), dim=1))
                classes.append(batch.labels[keep])
    return torch.cat(features), torch.cat(classes)


def class_feature_means(model: nn.Module, data: TaskData, labels: range) -> torch.Tensor:
    """[len(labels), d]: each class's mean of normalised features (UCIR's imprinting source)."""
    features, classes = normalized_features(model, data, labels)
    return torch.stack([features[classes == c].mean(0) for c in labels])
