"""Load the configured data set and check it against what its config says it is."""

from omegaconf import DictConfig

from cl_runner.data.images import Splits
from cl_runner.errors import ConfigError
from cl_runner.instantiate import build


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
