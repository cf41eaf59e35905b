"""CIFAR-10 and CIFAR-100 in torchvision's on-disk format (the "python version" pickles).

The pickles are read directly rather than through torchvision's classes, which refuse any file
whose md5 differs from the official one; `download=true` uses torchvision's downloader, which
does check the md5 of the real archive.
"""

import pickle
from pathlib import Path

import numpy as np
import torch

from cl_runner.data.images import ImageSet, Splits
from cl_runner.errors import ConfigError

SOURCES = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "label_key": "labels",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "label_key": "fine_labels",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
    },
}


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise ConfigError(f"{path} is missing")
    try:
        with path.open("rb") as f:
            entry = pickle.load(f, encoding="latin1")
        images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except Exception as error:  # any unpickling or shape problem means the file is not CIFAR
        raise ConfigError(f"{path} is not a CIFAR python batch ({type(error).__name__}: {error})") from None
    if len(images) != len(labels):
        raise ConfigError(f"{path} has {len(images)} images but {len(labels)} labels")
    return images, labels


def _load(name: str, root: str, download: bool) -> Splits:
    source = SOURCES[name]
    folder = Path(root).expanduser() / source["folder"]
    if not folder.is_dir():
        if not download:
            raise ConfigError(
                f"{name} not found in {folder}; set dataset.download=true to fetch it, or "
                f"set dataset.root to a folder holding {source['folder']}/ ({source['url']})"
            )
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(source["url"], str(Path(root).expanduser()), md5=source["md5"])
        except Exception as error:  # no network, disk full, bad archive: say which and where
            raise ConfigError(f"could not download {source['url']} to {root}: {error}") from None

    def part(files: list[str]) -> ImageSet:
        arrays = [_read_batch(folder / f, source["label_key"]) for f in files]
        images = np.concatenate([a[0] for a in arrays])
        labels = np.concatenate([a[1] for a in arrays])
        return ImageSet(torch.from_numpy(images), torch.from_numpy(labels))

    return Splits(part(source["train"]), part(source["test"]))


def cifar10(root: str = "data", download: bool = False) -> Splits:
    return _load("cifar10", root, download)


def cifar100(root: str = "data", download: bool = False) -> Splits:
    return _load("cifar100", root, download)
