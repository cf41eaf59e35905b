"""The in-memory form every data set is loaded into: uint8 images and int64 labels."""

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]
    # multi-label sets (VOC): int8 [N, classes], 1 present, -1 absent, 0 difficult
    targets: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def with_images(self, images: torch.Tensor) -> "ImageSet":
        """The same labels with other images (grey ones replicated to 3 channels)."""
        return ImageSet(images, self.labels, self.targets)

    def subset(self, indices: torch.Tensor) -> "ImageSet":
        targets = None if self.targets is None else self.targets[indices]
        return ImageSet(self.images[indices], self.labels[indices], targets)


@dataclass
class Splits:
    train: ImageSet
    test: ImageSet

    def __iter__(self):
        return iter((self.train, self.test))


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int = 0) -> tuple:
    """Train/test indices with `test_fraction` of every class in test.

    Fixed by `seed` alone (never the run's seed) so that every run of a data set sees the same
    test images.
    """
    rng = np.random.RandomState(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def splits_from_arrays(images: np.ndarray, labels: np.ndarray, test_fraction: float) -> Splits:
    """uint8 images [N, C, H, W] and labels [N] -> a fixed stratified train/test split."""
    train_idx, test_idx = stratified_split(labels, test_fraction)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
    y = torch.from_numpy(labels.astype(np.int64))
    return Splits(ImageSet(x[train_idx], y[train_idx]), ImageSet(x[test_idx], y[test_idx]))
