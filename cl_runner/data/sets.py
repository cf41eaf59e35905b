"""The data sets of the LwF and MAS papers' sequences, each read from its own release's on-disk
layout into files decoded by DataLoader workers (as ImageNet is). Every reader checks the root,
every list line and every image file, and says what is wrong in one line.

- CUB-200-2011: images.txt, image_class_labels.txt, train_test_split.txt, images/ (official split)
- MIT Indoor-67: Images/<class>/, TrainImages.txt, TestImages.txt (the official lists)
- Oxford Flowers-102: jpg/image_NNNNN.jpg, imagelabels.mat, setid.mat (train+val / test)
- Stanford Cars: cars_train/, cars_test/, devkit/cars_{train_annos,test_annos_withlabels}.mat
- FGVC-Aircraft: data/images/, data/variants.txt, data/images_variant_{trainval,test}.txt
- Stanford 40 Actions: JPEGImages/, ImageSplits/actions.txt, ImageSplits/<action>_{train,test}.txt
- Letters (Chars74K): English/Img/GoodImg/Bmp/Sample011..062/ (A-Z, a-z; a fixed split per class)
- Places365: data_256/ + places365_train_standard.txt, val_256/ + places365_val.txt,
  categories_places365.txt
- SVHN: train_32x32.mat, test_32x32.mat (held in memory)
- PASCAL VOC 2012 classification (multi-label): JPEGImages/, ImageSets/Main/<class>_{train,val}.txt
"""

from pathlib import Path

import numpy as np
import torch

from cl_runner.data.imagenet import check_exists, file_part
from cl_runner.data.images import ImageSet, Splits, stratified_split
from cl_runner.errors import ConfigError


def folder(root: str, what: str, hint: str) -> Path:
    base = Path(root).expanduser()
    if not base.is_dir():
        raise ConfigError(
            f"{what} folder {base} not found; set its root ({hint}); it is not downloaded automatically"
        )
    return base


def text_lines(path: Path, fields: int | None = None, what: str = "") -> list[list[str]]:
    """Non-empty lines split on whitespace; `fields`: at least this many per line."""
    if not path.is_file():
        raise ConfigError(f"{path} not found{f' (expected {what})' if what else ''}")
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if fields is not None and len(parts) < fields:
            raise ConfigError(f"{path} line {number}: expected {what or f'{fields} fields'}, got {line!r}")
        lines.append(parts)
    if not lines:
        raise ConfigError(f"{path} is empty")
    return lines


def integer(value: str, path: Path) -> int:
    if not value.lstrip("-").isdigit():
        raise ConfigError(f"{path}: {value!r} is not an integer")
    return int(value)


def part(paths: list[Path], labels: list[int], size: int, workers: int, what: str) -> ImageSet:
    if not paths:
        raise ConfigError(f"{what} holds no images")
    check_exists(paths, what)
    return file_part(paths, labels, size, workers)


def load_mat(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path} not found")
    from scipy.io import loadmat

    try:
        return loadmat(str(path), squeeze_me=True)
    except Exception as error:
        raise ConfigError(f"{path} is not a readable .mat file ({error})") from None


def cub200(root: str, size: int = 224, workers: int = 8) -> Splits:
    """CUB-200-2011: 200 bird species, the official 5,994 / 5,794 split."""
    base = folder(root, "CUB-200-2011", "sets.cub200.root")
    paths = {i: p for i, p in text_lines(base / "images.txt", 2, "'id relative/path.jpg'")}
    labels = {
        i: integer(c, base / "image_class_labels.txt") - 1
        for i, c in text_lines(base / "image_class_labels.txt", 2, "'id class'")
    }
    split = {i: s for i, s in text_lines(base / "train_test_split.txt", 2, "'id is_training'")}
    parts = {"1": ([], []), "0": ([], [])}
    for i, rel in paths.items():
        if i not in labels or split.get(i) not in parts:
            raise ConfigError(f"{base}: image {i} has no class or no split line")
        parts[split[i]][0].append(base / "images" / rel)
        parts[split[i]][1].append(labels[i])
    return Splits(part(*parts["1"], size, workers, "CUB train"), part(*parts["0"], size, workers, "CUB test"))


def scenes67(root: str, size: int = 224, workers: int = 8) -> Splits:
    """MIT Indoor-67: 67 indoor scene classes, the official TrainImages/TestImages lists."""
    base = folder(root, "MIT Indoor-67", "sets.scenes67.root")
    images = base / "Images"
    if not images.is_dir():
        raise ConfigError(f"{images} not found (expected one folder of images per scene)")
    classes = sorted(d.name for d in images.iterdir() if d.is_dir())
    index = {c: k for k, c in enumerate(classes)}

    def listed(name: str) -> ImageSet:
        paths, labels = [], []
        for (rel,) in (line[:1] for line in text_lines(base / name, 1, "'class/file.jpg'")):
            scene = rel.split("/", 1)[0]
            if scene not in index:
                raise ConfigError(f"{base / name}: {rel!r} names no scene folder of {images}")
            paths.append(images / rel)
            labels.append(index[scene])
        return part(paths, labels, size, workers, f"MIT Indoor-67 {name}")

    return Splits(listed("TrainImages.txt"), listed("TestImages.txt"))


def flowers102(root: str, size: int = 224, workers: int = 8) -> Splits:
    """Oxford Flowers-102: train = the official train + validation ids (2,040), test = test ids."""
    base = folder(root, "Oxford Flowers-102", "sets.flowers102.root")
    labels = np.atleast_1d(load_mat(base / "imagelabels.mat").get("labels", np.array([]))).astype(int) - 1
    ids = load_mat(base / "setid.mat")
    if not len(labels) or not all(k in ids for k in ("trnid", "valid", "tstid")):
        raise ConfigError(f"{base}: imagelabels.mat needs 'labels' and setid.mat 'trnid', 'valid', 'tstid'")

    def chosen(numbers, what: str) -> ImageSet:
        numbers = [int(n) for n in np.atleast_1d(numbers)]
        if any(not 1 <= n <= len(labels) for n in numbers):
            raise ConfigError(f"{base / 'setid.mat'}: an image id is outside 1..{len(labels)}")
        paths = [base / "jpg" / f"image_{n:05d}.jpg" for n in numbers]
        return part(paths, [int(labels[n - 1]) for n in numbers], size, workers, f"Flowers-102 {what}")

    train = chosen(np.concatenate([np.atleast_1d(ids["trnid"]), np.atleast_1d(ids["valid"])]), "train")
    return Splits(train, chosen(ids["tstid"], "test"))


def cars196(root: str, size: int = 224, workers: int = 8) -> Splits:
    """Stanford Cars: 196 models, the official 8,144 / 8,041 split (devkit annotations)."""
    base = folder(root, "Stanford Cars", "sets.cars196.root")

    def annotated(mat: str, images: str) -> ImageSet:
        records = np.atleast_1d(
            load_mat(base / "devkit" / mat if (base / "devkit" / mat).is_file() else base / mat).get(
                "annotations", []
            )
        )
        try:
            paths = [base / images / str(r["fname"]) for r in records]
            labels = [int(r["class"]) - 1 for r in records]
        except (IndexError, KeyError, ValueError):
            raise ConfigError(f"{base}: {mat} has no 'annotations' with 'fname' and 'class'") from None
        return part(paths, labels, size, workers, f"Stanford Cars {images}")

    return Splits(
        annotated("cars_train_annos.mat", "cars_train"),
        annotated("cars_test_annos_withlabels.mat", "cars_test"),
    )


def aircraft100(root: str, size: int = 224, workers: int = 8) -> Splits:
    """FGVC-Aircraft: 100 variants, the official trainval (6,667) / test (3,333) split."""
    base = folder(root, "FGVC-Aircraft", "sets.aircraft100.root") / "data"
    variants = [" ".join(line) for line in text_lines(base / "variants.txt", 1, "one variant per line")]
    index = {v: k for k, v in enumerate(variants)}

    def listed(name: str) -> ImageSet:
        paths, labels = [], []
        for line in text_lines(base / name, 2, "'image_id variant name'"):
            variant = " ".join(line[1:])
            if variant not in index:
                raise ConfigError(f"{base / name}: variant {variant!r} is not in variants.txt")
            paths.append(base / "images" / f"{line[0]}.jpg")
            labels.append(index[variant])
        return part(paths, labels, size, workers, f"FGVC-Aircraft {name}")

    return Splits(listed("images_variant_trainval.txt"), listed("images_variant_test.txt"))


def actions40(root: str, size: int = 224, workers: int = 8) -> Splits:
    """Stanford 40 Actions: 40 actions, the official 100-per-class training lists."""
    base = folder(root, "Stanford 40 Actions", "sets.actions40.root")
    splits = base / "ImageSplits"
    names = [line[0] for line in text_lines(splits / "actions.txt", 1, "'action_name number_of_images'")]
    actions = [n for n in names if n != "action_name"]  # the file's header line

    def listed(kind: str) -> ImageSet:
        paths, labels = [], []
        for label, action in enumerate(actions):
            for (name,) in (
                line[:1] for line in text_lines(splits / f"{action}_{kind}.txt", 1, "an image name")
            ):
                paths.append(base / "JPEGImages" / name)
                labels.append(label)
        return part(paths, labels, size, workers, f"Stanford 40 Actions {kind}")

    return Splits(listed("train"), listed("test"))


def letters52(root: str, size: int = 224, workers: int = 8, test_fraction: float = 0.3) -> Splits:
    """Chars74K English natural images, the 52 letters (Sample011-036: A-Z, Sample037-062: a-z),
    split once per class (the release has no split; the MAS paper's Letters task)."""
    base = folder(root, "Chars74K", "sets.letters52.root") / "English" / "Img" / "GoodImg" / "Bmp"
    paths, labels = [], []
    for label, sample in enumerate(range(11, 63)):
        found = sorted((base / f"Sample{sample:03d}").glob("*.png"))
        if not found:
            raise ConfigError(
                f"{base / f'Sample{sample:03d}'} holds no .png images (expected the letters' folders)"
            )
        paths += found
        labels += [label] * len(found)
    train, test = stratified_split(np.array(labels), test_fraction)

    def chosen(rows, what: str) -> ImageSet:
        return part([paths[i] for i in rows], [labels[i] for i in rows], size, workers, f"Letters {what}")

    return Splits(chosen(train, "train"), chosen(test, "test"))


def places365(root: str, size: int = 224, workers: int = 8) -> Splits:
    """Places365-Standard (small images): the official training list and the 36,500
    validation images, the LwF paper's old-task evaluation."""
    base = folder(root, "Places365", "sets.places365.root")
    categories = {
        c: integer(k, base / "categories_places365.txt")
        for c, k in text_lines(base / "categories_places365.txt", 2, "'/a/airfield 0'")
    }

    def listed(name: str, images: str) -> ImageSet:
        paths, labels = [], []
        for line in text_lines(base / name, 2, "'path label'"):
            label = integer(line[1], base / name)
            if not 0 <= label < len(categories):
                raise ConfigError(f"{base / name}: label {label} outside the {len(categories)} categories")
            paths.append(base / images / line[0].lstrip("/"))
            labels.append(label)
        return part(paths, labels, size, workers, f"Places365 {name}")

    return Splits(listed("places365_train_standard.txt", "data_256"), listed("places365_val.txt", "val_256"))


def svhn(root: str) -> Splits:
    """SVHN's cropped digits (train_32x32.mat, test_32x32.mat), in memory; label 10 is digit 0."""
    base = folder(root, "SVHN", "sets.svhn.root")

    def read(name: str) -> ImageSet:
        mat = load_mat(base / name)
        if "X" not in mat or "y" not in mat or mat["X"].ndim != 4:
            raise ConfigError(f"{base / name} needs 'X' (32x32x3xN) and 'y'")
        images = torch.from_numpy(np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1)).astype(np.uint8))
        labels = torch.from_numpy(np.atleast_1d(mat["y"]).astype(np.int64) % 10)
        return ImageSet(images, labels)

    return Splits(read("train_32x32.mat"), read("test_32x32.mat"))


VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip


def voc2012(root: str, size: int = 224, workers: int = 8) -> Splits:
    """PASCAL VOC 2012 classification: 20 classes, several per image; train (5,717) / val
    (5,823), the LwF paper's test. `targets` hold 1 (present), -1 (absent), 0 (difficult) per
    class; the label is the first present class (it places the image in its task)."""
    base = folder(root, "PASCAL VOC 2012 (VOCdevkit/VOC2012)", "sets.voc2012.root")
    main = base / "ImageSets" / "Main"

    def split(name: str) -> ImageSet:
        marks: dict[str, list[int]] = {}
        for c, cls in enumerate(VOC_CLASSES):
            path = main / f"{cls}_{name}.txt"
            for line in text_lines(path, 2, "'image_id 1|0|-1'"):
                mark = integer(line[1], path)
                if mark not in (-1, 0, 1):
                    raise ConfigError(f"{path}: {line[1]!r} is not 1, 0 or -1")
                marks.setdefault(line[0], [-1] * len(VOC_CLASSES))[c] = mark
        ids = sorted(marks)
        targets = torch.tensor([marks[i] for i in ids], dtype=torch.int8)
        labels = torch.where(targets > 0, 1, 0).argmax(1)  # the first present class
        images = part(
            [base / "JPEGImages" / f"{i}.jpg" for i in ids], labels.tolist(), size, workers, f"VOC {name}"
        )
        return ImageSet(images.images, images.labels, targets)

    return Splits(split("train"), split("val"))
