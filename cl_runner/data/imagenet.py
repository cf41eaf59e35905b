"""ImageNet (ILSVRC-2012) from files: the full 1,000 classes in the ImageFolder layout, and the
ImageNet-100 subset of the DER / PODNet protocol given by its split lists.

- ImageFolder layout: `root/train/<wnid>/*.JPEG` and `root/val/<wnid>/*.JPEG` (validation
  images sorted into class folders, as torchvision's ImageNet preparation does); classes are
  the sorted wnids.
- Split lists (`train_100.txt`, `val_100.txt`): one image per line, `relative/path label`,
  paths relative to `root` (or to `root/train`, `root/val`: both forms are in circulation).

Images are decoded by DataLoader workers (see `files.py`), never held in memory.
"""

from pathlib import Path

import torch

from cl_runner.data.files import FileImages
from cl_runner.data.images import ImageSet, Splits
from cl_runner.errors import ConfigError

EXTENSIONS = {".jpeg", ".jpg", ".png"}


def check_exists(paths: list[Path], what: str) -> None:
    """Every listed image file is there, or one line with how many are not and an example."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(
            f"{len(missing)} of the {len(paths)} images of {what} are missing, e.g. {missing[0]}"
        )


def read_split_list(list_file: Path, root: Path, subfolder: str) -> tuple[list[Path], list[int]]:
    if not list_file.is_file():
        raise ConfigError(f"split list {list_file} not found (expected lines 'relative/path.JPEG label')")
    paths, labels = [], []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ConfigError(f"{list_file} line {number}: expected 'relative/path.JPEG label', got {line!r}")
        paths.append(parts[0])
        labels.append(int(parts[1]))
    if not paths:
        raise ConfigError(f"split list {list_file} is empty")
    under_subfolder = not (root / paths[0]).is_file() and (root / subfolder / paths[0]).is_file()
    base = root / subfolder if under_subfolder else root
    full = [base / p for p in paths]
    check_exists(full, f"{list_file} (under {base})")
    return full, labels


def _existing_root(root: str) -> Path:
    base = Path(root).expanduser()
    if not base.is_dir():
        raise ConfigError(f"ImageNet folder {base} not found; set dataset.root (it cannot be downloaded)")
    return base


def file_part(paths: list[Path], labels: list[int], size: int, workers: int) -> ImageSet:
    """Image files and their labels as an `ImageSet` decoded by workers."""
    images = FileImages([str(p) for p in paths], size, workers)
    return ImageSet(images, torch.tensor(labels, dtype=torch.int64))


def imagenet_subset(root: str, train_list: str, val_list: str, size: int = 224, workers: int = 8) -> Splits:
    """A class subset given by split lists (ImageNet-100: train_100.txt / val_100.txt)."""
    base = _existing_root(root)
    train = read_split_list(Path(train_list).expanduser(), base, "train")
    val = read_split_list(Path(val_list).expanduser(), base, "val")
    return Splits(file_part(*train, size, workers), file_part(*val, size, workers))


def _scan(folder: Path, classes: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    if not folder.is_dir():
        raise ConfigError(f"{folder} not found (expected one folder of images per class, named by wnid)")
    found = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if classes is None:
        classes = found
    elif found != classes:
        raise ConfigError(f"{folder} has {len(found)} class folders, unlike the {len(classes)} of train/")
    paths, labels = [], []
    for label, wnid in enumerate(classes):
        files = sorted(p for p in (folder / wnid).iterdir() if p.suffix.lower() in EXTENSIONS)
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise ConfigError(f"{folder} holds no images ({', '.join(sorted(EXTENSIONS))})")
    return paths, labels, classes


def imagenet(
    root: str, size: int = 224, workers: int = 8, train_list: str | None = None, val_list: str | None = None
) -> Splits:
    """All classes of `root/train` and `root/val` (ImageFolder layout), or given split lists."""
    if train_list and val_list:
        return imagenet_subset(root, train_list, val_list, size, workers)
    base = _existing_root(root)
    train_paths, train_labels, classes = _scan(base / "train", None)
    val_paths, val_labels, _ = _scan(base / "val", classes)
    train = file_part(train_paths, train_labels, size, workers)
    return Splits(train, file_part(val_paths, val_labels, size, workers))
