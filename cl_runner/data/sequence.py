"""A sequence of data sets, one task each, all classes of a set at once (the LwF and MAS papers'
protocol): set k's labels follow those of the sets before it, so task k owns one contiguous block
of labels and one head, exactly as a class split's task does.

Every set is brought to one form: 3 channels when any set (or the pretrained backbone) has them,
and the largest set's size (the backbone's input size). Sets held in memory are resized once on
loading; when any set is on disk, the in-memory ones are decoded by the same workers
(`ArrayImage`), each set with its own distortion (`Style`).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cl_runner.data.files import ArrayImage, FileImages, Style
from cl_runner.data.images import ImageSet, Splits
from cl_runner.data.schedule import Task


@dataclass
class SequenceSet:
    name: str
    splits: Splits
    num_classes: int
    mean: list[float]
    std: list[float]
    crop_padding: int = 0
    flip: bool = False
    multilabel: bool = False

    @property
    def on_disk(self) -> bool:
        return isinstance(self.splits.train.images, FileImages)


def common_form(sets: list[SequenceSet], size: int, channels: int, workers: int) -> Splits:
    """All sets' images in one train and one test set, labels offset set after set."""
    on_disk = any(s.on_disk for s in sets)
    parts = {"train": [], "test": []}
    offset = 0
    for s in sets:
        for split in ("train", "test"):
            part: ImageSet = getattr(s.splits, split)
            images = part.images
            if on_disk:
                images = as_files(images, size, workers, Style("crop", s.flip))
            else:
                images = resized(grey_to_rgb(images, channels), size)
            parts[split].append(ImageSet(images, part.labels + offset, part.targets))
        offset += s.num_classes

    def joined(items: list[ImageSet]) -> ImageSet:
        labels = torch.cat([item.labels for item in items])
        targets = joined_targets(items)
        if on_disk:
            return ImageSet(
                FileImages.concat([item.images for item in items], size, workers), labels, targets
            )
        return ImageSet(torch.cat([item.images for item in items]), labels, targets)

    return Splits(joined(parts["train"]), joined(parts["test"]))


def joined_targets(items: list[ImageSet]) -> torch.Tensor | None:
    """The one multi-label set's targets, its rows in place; zeros (unused) for the others."""
    width = max((item.targets.shape[1] for item in items if item.targets is not None), default=0)
    if not width:
        return None
    rows = [
        item.targets if item.targets is not None else torch.zeros(len(item), width, dtype=torch.int8)
        for item in items
    ]
    return torch.cat(rows)


def sequence_tasks(sets: list[SequenceSet], pretrained_data: str | None) -> list[Task]:
    """One task per set; the first is the pretrained one when the weights were trained on it."""
    tasks, offset = [], 0
    for index, s in enumerate(sets):
        pretrained = index == 0 and s.name == pretrained_data
        classes = tuple(range(offset, offset + s.num_classes))
        tasks.append(Task(index, classes, offset, s.name, pretrained, s.multilabel))
        offset += s.num_classes
    return tasks


def grey_to_rgb(images: torch.Tensor, channels: int) -> torch.Tensor:
    return images.expand(-1, channels, -1, -1) if images.shape[1] < channels else images


def resized(images: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """uint8 images resized to size x size (bilinear, antialiased), chunk by chunk."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images.contiguous()
    out = []
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out) if out else images.new_zeros((0, images.shape[1], size, size))


def as_files(images, size: int, workers: int, style: Style) -> FileImages:
    """Files stay files (with the set's style); an in-memory set is decoded from its array."""
    if isinstance(images, FileImages):
        return FileImages(images.paths, size, workers, style)
    array = images.cpu().numpy()
    return FileImages([ArrayImage(array, i) for i in range(len(array))], size, workers, style)


def pooled_statistics(sets: list[SequenceSet], channels: int) -> tuple[list[float], list[float]]:
    """The mean and std of all the sets' training images together, from each set's own (grey
    sets count for every channel): one normalisation for the whole sequence."""
    total = sum(len(s.splits.train) for s in sets)

    def per_channel(values: list[float]) -> torch.Tensor:
        v = torch.tensor(values, dtype=torch.float64)
        return v.expand(channels) if len(v) < channels else v

    mean = sum(len(s.splits.train) * per_channel(s.mean) for s in sets) / total
    second = (
        sum(len(s.splits.train) * (per_channel(s.std) ** 2 + per_channel(s.mean) ** 2) for s in sets) / total
    )
    return mean.tolist(), (second - mean**2).sqrt().tolist()
