"""CIFAR loaders on small files written in the real on-disk format (nothing is downloaded)."""

import pickle

import numpy as np
import pytest

from cl_runner.data.cifar import cifar10, cifar100
from cl_runner.errors import ConfigError

from .conftest import make_cfg


def write_batch(path, n, label_key, num_classes, seed):
    rng = np.random.RandomState(seed)
    entry = {
        "data": rng.randint(0, 256, (n, 3072)).astype(np.uint8),
        label_key: rng.permutation(np.arange(n) % num_classes).tolist(),  # every class present
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(entry, f)
    return entry


def fake_cifar100(root, n_train=200, n_test=100):
    train = write_batch(root / "cifar-100-python" / "train", n_train, "fine_labels", 100, 0)
    write_batch(root / "cifar-100-python" / "test", n_test, "fine_labels", 100, 1)
    return train


def test_cifar100_reads_the_python_pickles(tmp_path):
    train = fake_cifar100(tmp_path)
    splits = cifar100(str(tmp_path))
    assert splits.train.images.shape == (200, 3, 32, 32) and splits.test.images.shape == (100, 3, 32, 32)
    # Row-major 3072 bytes = 3 planes of 32x32 (R, G, B), as torchvision reads them.
    assert splits.train.images[3, 1, 0, 5].item() == train["data"][3][1024 + 5]
    assert splits.train.labels.tolist() == train["fine_labels"]


def test_cifar10_reads_all_five_training_batches(tmp_path):
    for i in range(1, 6):
        write_batch(tmp_path / "cifar-10-batches-py" / f"data_batch_{i}", 4, "labels", 10, i)
    write_batch(tmp_path / "cifar-10-batches-py" / "test_batch", 3, "labels", 10, 9)
    splits = cifar10(str(tmp_path))
    assert len(splits.train) == 20 and len(splits.test) == 3


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(
        ConfigError, match=r"cifar100 not found in .*cifar-100-python; set dataset.download=true"
    ):
        cifar100(str(tmp_path))


def test_missing_file_and_corrupt_file_are_named(tmp_path):
    fake_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "test").unlink()
    with pytest.raises(ConfigError, match=r"cifar-100-python/test is missing"):
        cifar100(str(tmp_path))
    (tmp_path / "cifar-100-python" / "test").write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match=r"cifar-100-python/test is not a CIFAR python batch"):
        cifar100(str(tmp_path))


def test_dataset_root_override_reaches_the_loader(tmp_path):
    cfg = make_cfg("dataset=cifar100", f"dataset.root={tmp_path}")
    assert cfg.dataset.source.root == str(tmp_path) and cfg.dataset.source.download is False


def test_sd_preset_composes_to_the_single_task_resnet18_setting():
    cfg = make_cfg("experiment=sd_cifar100_b0_1")
    assert cfg.steps == 1 and cfg.addon._target_.endswith("SelfDistillation")
    assert cfg.backbone._target_.endswith("resnet18") and cfg.backbone.stem == "cifar"
    assert cfg.dataset.num_classes == 100 and cfg.train.epochs == 200
    assert make_cfg("experiment=sd_cifar100_b0_1", "method=finetune").get("addon") is None


def test_run_on_cifar100_files(tmp_path):
    from cl_runner.train import run

    fake_cifar100(tmp_path / "data")
    cfg = make_cfg("dataset=cifar100", f"dataset.root={tmp_path / 'data'}", "backbone=resnet20", "steps=2",
                   "train.epochs=1", "memory.size=100", "device=cpu")  # fmt: skip
    results = run(cfg, tmp_path / "run")
    assert [s["train_images"] for s in results.steps] == [100, 200]  # 50 new classes x 2, + 100 exemplars
