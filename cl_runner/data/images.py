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

    def bytes_per_image(self) -> int:
        """One image as the run holds it: uint8 pixels in memory, or decoded from its file at
        the training size (3 x size x size)."""
        if torch.is_tensor(self.images):
            return self.images[0].numel() * self.images.element_size() if len(self.images) else 0
        return 3 * self.images.size**2

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


def hold_out(part: ImageSet, share: float | int, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """A validation set held out of the training images: `share` of each class (a fraction
    below 1, or a number of images), the rest left to train on. Fixed by `seed` alone, never the
    run's seed, so every run of a protocol holds out the same images."""
    labels = part.labels.cpu().numpy()
    rng = np.random.RandomState(seed)
    held, kept = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = int(share) if share >= 1 else int(round(len(idx) * share))
        held.append(idx[:n])
        kept.append(idx[n:])
    held_idx, kept_idx = (torch.from_numpy(np.sort(np.concatenate(x))) for x in (held, kept))
    return part.subset(kept_idx), part.subset(held_idx)
