"""The sequence data sets' readers, on tiny files in each release's on-disk format: the right
images with the right labels in the right split, and one line for a missing root, a bad list
line and a missing image."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from synthetic_sets import WRITERS

from cl_runner.data import sets
from cl_runner.data.files import batches
from cl_runner.errors import ConfigError

# name -> (classes, train images, test images) of the tiny copies
EXPECTED = {
    "cub200": (3, 6, 3), "scenes67": (3, 6, 3), "flowers102": (3, 6, 3), "cars196": (3, 6, 3),
    "aircraft100": (3, 6, 3), "actions40": (3, 6, 3), "places365": (3, 6, 3), "svhn": (10, 20, 10),
}  # fmt: skip


def load(name, root):
    reader = getattr(sets, name)
    return reader(str(root)) if name == "svhn" else reader(str(root), size=32, workers=0)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_reader_gives_every_image_with_its_class_in_the_official_split(tmp_path, name):
    WRITERS[name](tmp_path)
    splits = load(name, tmp_path)
    classes, n_train, n_test = EXPECTED[name]
    assert (len(splits.train), len(splits.test)) == (n_train, n_test)
    for part in (splits.train, splits.test):
        assert sorted(set(part.labels.tolist())) == list(range(classes))
    first = next(batches(splits.test.images, 4))
    assert first.dtype == torch.uint8 and first.shape[1:] == ((3, 32, 32) if name == "svhn" else (3, 32, 32))


def test_readers_pick_the_official_split_lines(tmp_path):
    WRITERS["cub200"](tmp_path)
    splits = sets.cub200(str(tmp_path), 32, 0)
    # train_test_split.txt: the first 2 of each class are training images
    assert all(p.endswith(("_0.jpg", "_1.jpg")) for p in splits.train.images.paths)
    assert all(p.endswith("_2.jpg") for p in splits.test.images.paths)
    WRITERS["flowers102"](tmp_path / "f")
    flowers = sets.flowers102(str(tmp_path / "f"), 32, 0)  # train = trnid + valid
    assert [p[-9:] for p in flowers.train.images.paths] == [f"{n:05d}.jpg" for n in range(1, 7)]
    assert flowers.train.labels.tolist() == [0, 1, 2, 0, 1, 2]
    WRITERS["svhn"](tmp_path / "s")
    svhn = sets.svhn(str(tmp_path / "s"))
    assert svhn.train.labels[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]  # label 10 is digit 0
    assert svhn.train.images.shape == (20, 3, 32, 32)


def test_letters_are_52_classes_split_once_per_class(tmp_path):
    WRITERS["letters52"](tmp_path)
    splits = sets.letters52(str(tmp_path), 32, 0)
    assert len(set(splits.train.labels.tolist())) == 52 and len(splits.train) + len(splits.test) == 156
    again = sets.letters52(str(tmp_path), 32, 0)
    assert again.test.images.paths == splits.test.images.paths  # fixed, whatever the run


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_a_missing_root_is_one_line_naming_the_setting(tmp_path, name):
    with pytest.raises(ConfigError, match=rf"not found; set its root \(sets\.{name}\.root\)"):
        load(name, tmp_path / "nowhere")


@pytest.mark.parametrize(
    "name, listing, bad_line, message",
    [
        ("cub200", "images.txt", "7\n", r"images.txt line \d+: expected 'id relative/path.jpg'"),
        (
            "aircraft100",
            "data/images_variant_test.txt",
            "2000000\n",
            r"line \d+: expected 'image_id variant name'",
        ),
        ("places365", "places365_val.txt", "x.jpg seven\n", r"'seven' is not an integer"),
        ("scenes67", "TestImages.txt", "kitchen/k.jpg\n", r"'kitchen/k.jpg' names no scene folder"),
    ],
)
def test_a_bad_list_line_is_one_line_naming_file_and_line(tmp_path, name, listing, bad_line, message):
    WRITERS[name](tmp_path)
    with open(tmp_path / listing, "a") as f:
        f.write(bad_line)
    with pytest.raises(ConfigError, match=message):
        load(name, tmp_path)


@pytest.mark.parametrize(
    "name", ["cub200", "scenes67", "flowers102", "cars196", "aircraft100", "actions40", "places365"]
)
def test_a_missing_image_is_one_line_with_an_example(tmp_path, name):
    WRITERS[name](tmp_path)
    victim = next(p for p in sorted(tmp_path.rglob("*.jpg")))
    victim.unlink()
    with pytest.raises(ConfigError, match=r"1 of the \d+ images of .* are missing, e.g. .*\.jpg"):
        load(name, tmp_path)


def test_a_bad_mat_file_is_one_line(tmp_path):
    WRITERS["svhn"](tmp_path)
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(ConfigError, match=r"test_32x32.mat is not a readable .mat file"):
        sets.svhn(str(tmp_path))
