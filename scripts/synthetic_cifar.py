"""Write a small CIFAR-100 (or CIFAR-10) in torchvision's on-disk format: class prototypes plus
noise, so a smoke run learns something. For smoke reproductions on machines without the data.

    python scripts/synthetic_cifar.py ROOT --train-per-class 4 --test-per-class 2
"""

import argparse
import pickle
from pathlib import Path

import numpy as np

LAYOUT = {
    100: ("cifar-100-python", ["train"], ["test"], "fine_labels"),
    10: ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
}


def write(root: Path, classes: int, train_per_class: int, test_per_class: int, seed: int = 0) -> Path:
    folder_name, train_files, test_files, label_key = LAYOUT[classes]
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(classes, 3072))
    folder = root / folder_name
    folder.mkdir(parents=True, exist_ok=True)

    def dump(files: list[str], per_class: int) -> None:
        labels = np.repeat(np.arange(classes), per_class)
        rng.shuffle(labels)
        data = np.clip(prototypes[labels] + rng.normal(0, 40, size=(len(labels), 3072)), 0, 255)
        for part, idx in zip(files, np.array_split(np.arange(len(labels)), len(files)), strict=True):
            entry = {"data": data[idx].astype(np.uint8), label_key: labels[idx].tolist()}
            with (folder / part).open("wb") as f:
                pickle.dump(entry, f)

    dump(train_files, train_per_class)
    dump(test_files, test_per_class)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--classes", type=int, choices=sorted(LAYOUT), default=100)
    parser.add_argument("--train-per-class", type=int, default=4)
    parser.add_argument("--test-per-class", type=int, default=2)
    args = parser.parse_args()
    print(write(args.root, args.classes, args.train_per_class, args.test_per_class))


if __name__ == "__main__":
    main()
