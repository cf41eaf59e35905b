"""The full MNIST (60,000 train / 10,000 test) in torchvision's on-disk format: the idx files
under `root/MNIST/raw/`, plain or gzipped. `download=true` uses torchvision's downloader."""

import gzip
from pathlib import Path

import numpy as np
import torch

from cl_runner.data.images import ImageSet, Splits
from cl_runner.errors import ConfigError

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # idx headers: 0x0803 (3-d uint8), 0x0801 (1-d uint8)


def read_idx(folder: Path, name: str, magic: int) -> np.ndarray:
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            break
    else:
        raise ConfigError(f"{folder / name} is missing (nor is there a .gz)")
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise ConfigError(f"{path} cannot be read ({error})") from None
    dims = 3 if magic == IMAGES_MAGIC else 1
    header = 4 + 4 * dims
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise ConfigError(f"{path} is not an MNIST idx file (expected magic number {magic})")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    if len(data) - header != int(np.prod(shape)):
        raise ConfigError(f"{path} is truncated: header says {shape}, file has {len(data) - header} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def mnist(root: str = "data", download: bool = False) -> Splits:
    folder = Path(root).expanduser() / "MNIST" / "raw"
    if not folder.is_dir():
        if not download:
            raise ConfigError(
                f"mnist not found in {folder}; set dataset.download=true to fetch it, or set "
                "dataset.root to a folder holding MNIST/raw/ (torchvision's layout)"
            )
        from torchvision.datasets import MNIST

        try:
            MNIST(str(Path(root).expanduser()), download=True)
        except Exception as error:  # no network, disk full: say which and where
            raise ConfigError(f"could not download MNIST to {root}: {error}") from None

    def part(split: str) -> ImageSet:
        images = read_idx(folder, FILES[split][0], IMAGES_MAGIC)
        labels = read_idx(folder, FILES[split][1], LABELS_MAGIC)
        if len(images) != len(labels):
            raise ConfigError(f"{folder}: {len(images)} {split} images but {len(labels)} labels")
        return ImageSet(torch.from_numpy(images.copy())[:, None], torch.from_numpy(labels.astype(np.int64)))

    return Splits(part("train"), part("test"))
