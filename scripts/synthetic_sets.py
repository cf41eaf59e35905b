"""Write tiny copies of the sequence data sets in their releases' on-disk formats (a few images
per class, each class its own colour; the lists and .mat files laid out as each release has
them), in the folders the data set configs expect under ROOT (= CL_RUNNER_DATA). For smoke
reproductions and tests on machines without the data.

    python scripts/synthetic_sets.py ROOT [cub200 scenes67 ...]   (default: all)
"""

import argparse
import gzip
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat


def image(path: Path, label: int, rng, size=(40, 52)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((*size, 3), 30 + 50 * (label % 5), dtype=np.uint8)
    pixels[..., label % 3] = 250
    pixels = (pixels + rng.integers(0, 20, size=pixels.shape)).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def write_cub200(root: Path, classes=3, per_class=(2, 1)) -> None:
    rng, lines, labels, split, i = np.random.default_rng(0), [], [], [], 0
    for c in range(classes):
        for n in range(sum(per_class)):
            i += 1
            rel = f"{c + 1:03d}.Bird_{c}/Bird_{c}_{n}.jpg"
            image(root / "images" / rel, c, rng)
            lines.append(f"{i} {rel}")
            labels.append(f"{i} {c + 1}")
            split.append(f"{i} {int(n < per_class[0])}")
    for name, rows in (
        ("images.txt", lines),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
    ):
        (root / name).write_text("\n".join(rows) + "\n")


def write_scenes67(root: Path, classes=3, per_class=(2, 1)) -> None:
    rng, lists = np.random.default_rng(1), {"TrainImages.txt": [], "TestImages.txt": []}
    for c, scene in enumerate(["airport_inside", "bakery", "bar"][:classes]):
        for n in range(sum(per_class)):
            rel = f"{scene}/{scene}_{n}.jpg"
            image(root / "Images" / rel, c, rng)
            lists["TrainImages.txt" if n < per_class[0] else "TestImages.txt"].append(rel)
    for name, rows in lists.items():
        (root / name).write_text("\n".join(rows) + "\n")


def write_flowers102(root: Path, classes=3) -> None:
    rng, labels = np.random.default_rng(2), []
    for n in range(classes * 3):
        labels.append(n % classes + 1)
        image(root / "jpg" / f"image_{n + 1:05d}.jpg", n % classes, rng)
    ids = np.arange(1, classes * 3 + 1)
    savemat(root / "imagelabels.mat", {"labels": np.array(labels)[None]})
    savemat(root / "setid.mat", {"trnid": ids[:classes][None], "valid": ids[classes : 2 * classes][None],
                                 "tstid": ids[2 * classes :][None]})  # fmt: skip


def write_cars196(root: Path, classes=3) -> None:
    rng = np.random.default_rng(3)
    for folder, mat, count in (
        ("cars_train", "cars_train_annos.mat", 2),
        ("cars_test", "cars_test_annos_withlabels.mat", 1),
    ):
        records = []
        for n in range(classes * count):
            fname = f"{n + 1:05d}.jpg"
            image(root / folder / fname, n % classes, rng)
            records.append((1, 1, 30, 30, n % classes + 1, fname))
        dtype = [
            ("bbox_x1", "O"),
            ("bbox_y1", "O"),
            ("bbox_x2", "O"),
            ("bbox_y2", "O"),
            ("class", "O"),
            ("fname", "O"),
        ]
        (root / "devkit").mkdir(parents=True, exist_ok=True)
        savemat(root / "devkit" / mat, {"annotations": np.array(records, dtype=dtype)[None]})


def write_aircraft100(root: Path, classes=3) -> None:
    rng, data = np.random.default_rng(4), root / "data"
    variants = ["707-320", "A300B4", "Cessna 172"][:classes]
    data.mkdir(parents=True, exist_ok=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    for name, count, start in (
        ("images_variant_trainval.txt", 2, 1000000),
        ("images_variant_test.txt", 1, 2000000),
    ):
        rows = []
        for n in range(classes * count):
            image(data / "images" / f"{start + n}.jpg", n % classes, rng)
            rows.append(f"{start + n} {variants[n % classes]}")
        (data / name).write_text("\n".join(rows) + "\n")


def write_actions40(root: Path, classes=3) -> None:
    rng, splits = np.random.default_rng(5), root / "ImageSplits"
    actions = ["applauding", "blowing_bubbles", "brushing_teeth"][:classes]
    splits.mkdir(parents=True, exist_ok=True)
    (splits / "actions.txt").write_text(
        "action_name\tnumber_of_images\n" + "".join(f"{a}\t3\n" for a in actions)
    )
    for c, action in enumerate(actions):
        for kind, count in (("train", 2), ("test", 1)):
            names = [f"{action}_{kind}_{n}.jpg" for n in range(count)]
            for name in names:
                image(root / "JPEGImages" / name, c, rng)
            (splits / f"{action}_{kind}.txt").write_text("\n".join(names) + "\n")


def write_letters52(root: Path, per_class=3) -> None:
    rng, base = np.random.default_rng(6), root / "English" / "Img" / "GoodImg" / "Bmp"
    for label, sample in enumerate(range(11, 63)):
        for n in range(per_class):
            image(base / f"Sample{sample:03d}" / f"img{sample:03d}-{n:05d}.png", label, rng, (20, 16))


def write_places365(root: Path, classes=3) -> None:
    rng = np.random.default_rng(7)
    names = ["/a/airfield", "/a/airplane_cabin", "/a/airport_terminal"][:classes]
    (root).mkdir(parents=True, exist_ok=True)
    (root / "categories_places365.txt").write_text("".join(f"{n} {k}\n" for k, n in enumerate(names)))
    train, val = [], []
    for k, n in enumerate(names):
        for i in range(2):
            rel = f"{n}/{i + 1:08d}.jpg"
            image(root / "data_256" / rel.lstrip("/"), k, rng)
            train.append(f"{rel} {k}")
        name = f"Places365_val_{k + 1:08d}.jpg"
        image(root / "val_256" / name, k, rng)
        val.append(f"{name} {k}")
    (root / "places365_train_standard.txt").write_text("\n".join(train) + "\n")
    (root / "places365_val.txt").write_text("\n".join(val) + "\n")


def write_svhn(root: Path, train=20, test=10) -> None:
    rng = np.random.default_rng(8)
    root.mkdir(parents=True, exist_ok=True)
    for name, count in (("train_32x32.mat", train), ("test_32x32.mat", test)):
        labels = np.arange(count) % 10 + 1  # 1..10, 10 is digit 0
        x = np.zeros((32, 32, 3, count), dtype=np.uint8)
        for n, y in enumerate(labels):
            x[..., n] = 20 * (y % 10) + rng.integers(0, 10, size=(32, 32, 3))
        savemat(root / name, {"X": x, "y": labels[:, None]})


def write_imagenet(root: Path, classes=4, per_class=(3, 2)) -> None:
    """ImageFolder layout: root/train/<wnid>/*.JPEG, root/val/<wnid>/*.JPEG."""
    rng = np.random.default_rng(9)
    for c in range(classes):
        wnid = f"n{c:08d}"
        for split, count in zip(("train", "val"), per_class, strict=True):
            for n in range(count):
                image(root / split / wnid / f"{wnid}_{n}.JPEG", c, rng)


def write_mnist(root: Path, train=30, test=10) -> None:
    """torchvision's raw idx files (gzipped) under root/MNIST/raw/."""
    rng, raw = np.random.default_rng(10), root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    files = (("train-images-idx3-ubyte", "train-labels-idx1-ubyte", train),
             ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", test))  # fmt: skip
    for images_name, labels_name, count in files:
        labels = (np.arange(count) % 10).astype(np.uint8)
        pixels = (labels[:, None, None] * 25 + rng.integers(0, 20, size=(count, 28, 28))).astype(np.uint8)
        header = (2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (count, 28, 28))
        (raw / f"{images_name}.gz").write_bytes(gzip.compress(header + pixels.tobytes()))
        header = (2049).to_bytes(4, "big") + count.to_bytes(4, "big")
        (raw / f"{labels_name}.gz").write_bytes(gzip.compress(header + labels.tobytes()))


def write_voc2012(root: Path, images=(8, 4)) -> None:
    """VOCdevkit/VOC2012: JPEGImages/ and ImageSets/Main/<class>_{train,val}.txt, each image
    holding two classes (one of them difficult in every fourth image)."""
    from cl_runner.data.sets import VOC_CLASSES

    rng, main = np.random.default_rng(11), root / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    for split, count in zip(("train", "val"), images, strict=True):
        marks = {cls: [] for cls in VOC_CLASSES}
        for n in range(count):
            name = f"2012_{split}_{n:04d}"
            first, second = n % 20, (n + 7) % 20
            image(root / "JPEGImages" / f"{name}.jpg", first, rng)
            for c, cls in enumerate(VOC_CLASSES):
                mark = 1 if c == first else (0 if n % 4 == 3 else 1) if c == second else -1
                marks[cls].append(f"{name} {mark:2d}")
        for cls, rows in marks.items():
            (main / f"{cls}_{split}.txt").write_text("\n".join(rows) + "\n")


WRITERS = {
    "cub200": write_cub200, "scenes67": write_scenes67, "flowers102": write_flowers102,
    "cars196": write_cars196, "aircraft100": write_aircraft100, "actions40": write_actions40,
    "letters52": write_letters52, "places365": write_places365, "svhn": write_svhn, "voc2012": write_voc2012,
}  # fmt: skip
# The folder of each under the data root, as configs/dataset/<name>.yaml names it.
FOLDERS = {
    "cub200": "CUB_200_2011", "scenes67": "indoor67", "flowers102": "flowers102", "cars196": "stanford_cars",
    "aircraft100": "fgvc-aircraft-2013b", "actions40": "Stanford40", "letters52": "chars74k",
    "places365": "places365", "svhn": "svhn", "imagenet": "imagenet", "mnist": ".",
    "voc2012": "VOCdevkit/VOC2012",
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("names", nargs="*", default=sorted(FOLDERS))
    args = parser.parse_args()
    writers = {**WRITERS, "imagenet": write_imagenet, "mnist": write_mnist}
    for name in args.names:
        writers[name](args.root / FOLDERS[name])
    print(f"wrote {', '.join(args.names)} under {args.root}")


if __name__ == "__main__":
    main()
