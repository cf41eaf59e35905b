"""The file-based data sets, on small files written here in the real on-disk formats:
ImageNet (ImageFolder layout and the ImageNet-100 split lists) and the full MNIST (idx files)."""

import gzip
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cl_runner.data.files import FileImages, FileLoader, batches
from cl_runner.data.imagenet import imagenet, imagenet_subset
from cl_runner.data.mnist import mnist
from cl_runner.distributed import Ranks
from cl_runner.errors import ConfigError
from cl_runner.train import run

from .conftest import cl_run, make_cfg

WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361"]


def write_imagenet(root, per_class=(6, 2), texture: bool = False) -> None:
    """root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG of random sizes, each class its own
    colour so that a tiny network can learn them (`texture`: plus noise, so that crops differ),
    plus split lists in the protocol's format."""
    rng = np.random.default_rng(0)
    lists = {"train": [], "val": []}
    for label, wnid in enumerate(WNIDS):
        for split, count in zip(("train", "val"), per_class, strict=True):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                h, w = rng.integers(36, 60, size=2)
                pixels = np.full((h, w, 3), 40 + 60 * label, dtype=np.uint8)
                pixels[..., label % 3] = 250
                if texture:
                    pixels = (pixels + rng.integers(0, 60, size=pixels.shape)).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG")
                lists[split].append(f"{split}/{wnid}/{wnid}_{i}.JPEG {label}")
    (root / "train_100.txt").write_text("\n".join(lists["train"]) + "\n")
    (root / "val_100.txt").write_text("\n".join(lists["val"]) + "\n")


FOLDER_TINY = [
    "backbone=resnet20", "train.epochs=1", "device=cpu", "logger=local", "steps=2",
    "dataset.num_classes=4", "dataset.size=32", "dataset.workers=2", "train.batch_size=8",
]  # fmt: skip


@pytest.mark.parametrize("name", ["imagenet100", "imagenet"])
def test_imagenet_runs_end_to_end_through_dataloader_workers(tmp_path, name):
    write_imagenet(tmp_path / "data")
    # DER's ImageNet-100 recipe (method_dataset/der_imagenet100) warms up for 20 epochs
    tiny = [*FOLDER_TINY, "method=der", "memory.size=8", "method.balanced_epochs=1", "train.warmup_epochs=0"]
    cfg = make_cfg(f"dataset={name}", f"dataset.root={tmp_path / 'data'}", *tiny)
    results = run(cfg, tmp_path / "run")
    assert results.finished and len(results.steps) == 2
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert all(0 <= a <= 100 for a in metrics["accuracy_matrix"]["class_il"][1])
    assert metrics["steps"][0]["train_images"] == 12  # 2 classes x 6 training images


def test_split_lists_and_folder_layout_give_the_same_images(tmp_path):
    write_imagenet(tmp_path)
    lists = str(tmp_path / "train_100.txt"), str(tmp_path / "val_100.txt")
    listed = imagenet_subset(str(tmp_path), *lists, 32)
    folder = imagenet(str(tmp_path), 32)
    assert listed.train.images.paths == folder.train.images.paths
    assert torch.equal(listed.test.labels, folder.test.labels)
    assert listed.train.images.shape == (24, 3, 32, 32)
    # paths relative to root/train and root/val work too
    (tmp_path / "short.txt").write_text("".join(f"{w}/{w}_0.JPEG {i}\n" for i, w in enumerate(WNIDS)))
    short = imagenet_subset(str(tmp_path), str(tmp_path / "short.txt"), str(tmp_path / "val_100.txt"), 32)
    assert short.train.images.paths == [str(tmp_path / "train" / w / f"{w}_0.JPEG") for w in WNIDS]


def test_file_batches_are_uint8_at_the_configured_size_in_order(tmp_path):
    write_imagenet(tmp_path)
    images = imagenet(str(tmp_path), 32, workers=2).test.images
    out = list(batches(images, 3))
    assert [len(b) for b in out] == [3, 3, 2]
    assert all(b.dtype == torch.uint8 and b.shape[1:] == (3, 32, 32) for b in out)
    first = torch.from_numpy(np.array(Image.open(images.paths[0]).convert("RGB"))).permute(2, 0, 1)
    assert out[0][0, :, 16, 16].tolist() == first[:, first.shape[1] // 2, first.shape[2] // 2].tolist()
    subset = images[torch.tensor([False, True] * 4)]  # indexing is lazy: a subset, no pixels
    assert isinstance(subset, FileImages) and subset.paths == images.paths[1::2]


def test_file_loader_shuffles_and_continues_an_interrupted_epoch(tmp_path):
    write_imagenet(tmp_path)
    images = imagenet(str(tmp_path), 32, workers=0).train.images
    labels = torch.arange(len(images))
    loader = FileLoader(images, labels, 5, True, torch.Generator().manual_seed(0))
    seen = torch.cat([y for _, y in loader.epoch()])
    assert sorted(seen.tolist()) == list(range(24)) and seen.tolist() != list(range(24))
    order = loader.order
    rest = [y for _, y in loader.epoch(order, start_batch=3)]
    assert torch.equal(torch.cat(rest), seen[15:]) and len(loader) == 5


def test_file_loader_ranks_decode_only_their_rows_of_each_batch(tmp_path):
    write_imagenet(tmp_path)
    images = imagenet(str(tmp_path), 32, workers=0).train.images
    labels = torch.arange(len(images))
    single = [
        y.tolist() for _, y in FileLoader(images, labels, 5, True, torch.Generator().manual_seed(0)).epoch()
    ]
    pixels = [x for x, _ in FileLoader(images, labels, 5, True, torch.Generator().manual_seed(0)).epoch()]
    ranks = []
    for r in range(2):
        loader = FileLoader(images, labels, 5, True, torch.Generator().manual_seed(0))
        ranks.append([(x, y.tolist()) for _, x, y in loader.shards(None, 0, Ranks(r, 2))])
    for b, expected in enumerate(single):  # 24 images: batches of 5, 5, 5, 5, 4
        (x0, rows0), (x1, rows1) = ranks[0][b], ranks[1][b]
        assert rows0 + rows1 == expected and len(x0) == len(rows0) and len(x1) == len(rows1)
        assert abs(len(rows0) - len(rows1)) <= 1
        # the same random crops as one process: they follow the image's place in the epoch
        assert torch.equal(torch.cat([x0, x1]), pixels[b])


def test_file_loader_keeps_its_workers_across_epochs(tmp_path):
    write_imagenet(tmp_path, texture=True)
    images = imagenet(str(tmp_path), 32, workers=2).train.images
    loader = FileLoader(images, torch.arange(len(images)), 8, True, torch.Generator().manual_seed(0))
    first = [x for x, _ in loader.epoch()]
    workers = loader.loader
    second = [x for x, _ in loader.epoch()]
    assert loader.loader is workers and workers.persistent_workers  # one DataLoader, workers kept
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))  # new crops each epoch
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    in_process = FileLoader(images.__class__(images.paths, 32, 0), torch.arange(len(images)), 8, True,
                            torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.equal(
        torch.cat([x for x, _ in in_process.epoch()]), torch.cat(first)
    )  # same crops without workers
    assert torch.equal(torch.rand(3), expected)  # decoding in this process left its generator alone


def test_imagenet_bad_input_is_one_clear_line(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(ConfigError, match="ImageNet folder .* not found; set dataset.root"):
        imagenet(str(root))
    write_imagenet(root)
    with pytest.raises(ConfigError, match="split list .*nope.txt not found"):
        imagenet_subset(str(root), str(root / "nope.txt"), str(root / "val_100.txt"))
    (root / "bad.txt").write_text("train/x.JPEG zero\n")
    with pytest.raises(ConfigError, match="bad.txt line 1: expected 'relative/path.JPEG label'"):
        imagenet_subset(str(root), str(root / "bad.txt"), str(root / "val_100.txt"))
    (root / "train" / WNIDS[0] / f"{WNIDS[0]}_0.JPEG").unlink()
    with pytest.raises(ConfigError, match="1 of the 24 images of .*train_100.txt .* are missing"):
        imagenet_subset(str(root), str(root / "train_100.txt"), str(root / "val_100.txt"))
    (root / "val" / WNIDS[1] / "broken.JPEG").write_bytes(b"not a jpeg")
    images = imagenet(str(root), 32, workers=2).test.images
    with pytest.raises(ConfigError) as error:
        list(batches(images, 4))
    broken = root / "val" / WNIDS[1] / "broken.JPEG"
    assert str(error.value).startswith(f"{broken} is not a readable image")
    assert "\n" not in str(error.value)


def test_imagenet_missing_is_one_line_from_the_command_line(tmp_path):
    proc = cl_run("dataset=imagenet100", f"dataset.root={tmp_path / 'none'}", "logger=local",
                  f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    expected = f"ImageNet folder {tmp_path / 'none'} not found; set dataset.root (it cannot be downloaded)"
    assert proc.stderr.strip() == f"cl-run: error: {expected}"


def write_idx(path, array: np.ndarray, magic: int, compress: bool = False) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_mnist(root, n_train=60, n_test=20) -> None:
    raw = root / "MNIST" / "raw"
    rng = np.random.default_rng(0)
    for prefix, n, compress in (("train", n_train, True), ("t10k", n_test, False)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 30, size=(n, 28, 28))
        for i, label in enumerate(labels):  # a bright bar whose row tells the class
            images[i, 2 + 2 * label, 4:24] = 255
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, 2051, compress)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 2049, compress)


def test_mnist_reads_idx_files_plain_and_gzipped(tmp_path):
    write_mnist(tmp_path)
    splits = mnist(str(tmp_path))
    assert splits.train.images.shape == (60, 1, 28, 28) and splits.test.images.shape == (20, 1, 28, 28)
    assert splits.train.labels.tolist() == [i % 10 for i in range(60)]
    assert splits.train.images[3, 0, 8, 10].item() == 255
    results = run(make_cfg("dataset=mnist", f"dataset.root={tmp_path}", "backbone=resnet20", "device=cpu",
                           "logger=local", "train.epochs=1", "steps=2"), tmp_path / "run")  # fmt: skip
    assert results.finished


def test_mnist_bad_files_are_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match="mnist not found in .*MNIST/raw; set dataset.download=true"):
        mnist(str(tmp_path))
    write_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 8)
    with pytest.raises(ConfigError, match="t10k-labels-idx1-ubyte is not an MNIST idx file"):
        mnist(str(tmp_path))
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(20), 2049)
    data = (raw / "t10k-images-idx3-ubyte").read_bytes()
    (raw / "t10k-images-idx3-ubyte").write_bytes(data[:-100])
    with pytest.raises(ConfigError, match="t10k-images-idx3-ubyte is truncated"):
        mnist(str(tmp_path))
    (raw / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(ConfigError, match="t10k-images-idx3-ubyte is missing"):
        mnist(str(tmp_path))


def test_sd_draws_two_independent_views_from_file_data(tmp_path):
    """Workers decode every image twice when the method draws two views, so SD's KL and MMD
    terms are not trivially zero on ImageNet-format data."""
    from cl_runner.train import build_runner, train

    write_imagenet(tmp_path / "data", texture=True)
    cfg = make_cfg("dataset=imagenet", f"dataset.root={tmp_path / 'data'}", *FOLDER_TINY, "method=sd")
    runner = build_runner(cfg, tmp_path / "run")
    batch = next(iter(runner.training_data(runner.benchmark.tasks[0])))
    assert batch.images.shape[1:] == (2, 3, 32, 32)  # n, views, C, H, W
    x_a, x_b = batch.view(), batch.view()
    assert x_a.shape == (len(batch.labels), 3, 32, 32) and not torch.equal(x_a, x_b)
    logged = []
    epoch_end = runner.logger.epoch_end
    runner.logger.epoch_end = lambda task, epoch, stats: logged.append(stats) or epoch_end(task, epoch, stats)
    train(runner)
    assert len(logged) == 2 and all(s["sd_kl"] > 0 and s["sd_mmd"] > 0 for s in logged)
