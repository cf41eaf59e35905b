"""Load the configured data set (or sequence of data sets) and check it against what its
config says it is."""

from dataclasses import dataclass, replace

from omegaconf import DictConfig

from cl_runner.data.images import Splits
from cl_runner.data.schedule import Task
from cl_runner.data.sequence import SequenceSet, common_form, pooled_statistics, sequence_tasks
from cl_runner.errors import ConfigError
from cl_runner.instantiate import build


@dataclass
class Form:
    """What the images are once loaded, and how they are distorted and normalised."""

    channels: int
    size: int
    mean: list[float]
    std: list[float]
    crop_padding: int = 0
    flip: bool = False
    brightness: float = 0.0

    @classmethod
    def of(cls, dataset: DictConfig) -> "Form":
        augment = dataset.augment
        return cls(
            dataset.channels,
            dataset.size,
            list(dataset.mean),
            list(dataset.std),
            augment.crop_padding,
            augment.flip,
            augment.get("brightness", 0.0),
        )

    def with_channels(self, channels: int) -> "Form":
        """Grey images replicated: each channel has the grey one's statistics."""
        return replace(self, channels=channels, mean=self.mean * channels, std=self.std * channels)

    def normalized(self, mean: list[float], std: list[float]) -> "Form":
        """Another normalisation: pretrained weights bring their own, for every task."""
        return replace(self, mean=list(mean), std=list(std))


def load_splits(dataset: DictConfig) -> Splits:
    splits: Splits = build(dataset.source)
    for name, part in (("train", splits.train), ("test", splits.test)):
        _, channels, height, width = part.images.shape
        if (channels, height, width) != (dataset.channels, dataset.size, dataset.size):
            raise ConfigError(
                f"the {name} images are {channels}x{height}x{width}, but dataset.channels/size "
                f"say {dataset.channels}x{dataset.size}x{dataset.size}"
            )
        if len(part) and int(part.labels.max()) >= dataset.num_classes:
            raise ConfigError(
                f"the {name} labels go up to {int(part.labels.max())}, beyond dataset.num_classes="
                f"{dataset.num_classes}"
            )
    return splits


def load_sequence(
    datasets: dict[str, DictConfig], pretrained_data: str | None, rgb: bool
) -> tuple[Splits, list[Task], Form]:
    """Each data set of a sequence loaded and checked, then joined (see sequence.py): in 3
    channels when any set has them or `rgb` (pretrained weights), at the largest set's size.
    One normalisation: the pooled statistics of the sets (the weights' replace it, see train.py);
    in-memory distortions only as far as every set allows them."""
    sets = []
    for name, d in datasets.items():
        splits = load_splits(d)
        s = SequenceSet(name, splits, d.num_classes, list(d.mean), list(d.std), d.augment.crop_padding)
        s.multilabel = bool(d.get("multilabel", False))
        # in memory: the device's flip; on disk: the workers' mirroring (off for letters and digits)
        s.flip = d.augment.get("mirror", True) if s.on_disk else d.augment.flip
        sets.append(s)
    if sum(s.multilabel for s in sets) > 1:
        raise ConfigError("a sequence takes at most one multi-label data set")
    channels = 3 if rgb else max(d.channels for d in datasets.values())
    size = max(d.size for d in datasets.values())
    workers = max([d.workers for d in datasets.values() if "workers" in d], default=4)
    splits = common_form(sets, size, channels, workers)
    mean, std = pooled_statistics(sets, channels)
    padding = 0 if any(s.on_disk for s in sets) else min(s.crop_padding for s in sets)
    flip = not any(s.on_disk for s in sets) and all(s.flip for s in sets)
    return splits, sequence_tasks(sets, pretrained_data), Form(channels, size, mean, std, padding, flip)
