"""A tiny generated data set of any shape and class count, for tests and quick checks.

Every class has a random prototype image; samples are the prototype plus noise, so the classes
are learnable in a few steps. The data depend on `data_seed` only, never on the run's seed.
"""

import torch

from cl_runner.data.images import ImageSet, Splits


def synthetic(
    num_classes: int = 10,
    channels: int = 3,
    size: int = 8,
    train_per_class: int = 20,
    test_per_class: int = 10,
    noise: float = 40.0,
    data_seed: int = 0,
) -> Splits:
    gen = torch.Generator().manual_seed(data_seed)
    prototypes = torch.rand(num_classes, channels, size, size, generator=gen) * 255

    def sample(per_class: int) -> ImageSet:
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        noisy = prototypes[labels] + noise * torch.randn(len(labels), channels, size, size, generator=gen)
        return ImageSet(noisy.clamp(0, 255).round().to(torch.uint8), labels)

    return Splits(sample(train_per_class), sample(test_per_class))
