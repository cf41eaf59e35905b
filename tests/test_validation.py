"""The validation split (`validation`): a stratified part of each class's training images held
out, the same for every run of a protocol whatever its seed, never trained on."""

import pytest
import torch

from cl_runner.data.images import ImageSet, hold_out
from cl_runner.errors import ConfigError
from cl_runner.spec import RunSpec
from cl_runner.train import build_runner

from .conftest import TINY, make_cfg


def images(per_class: dict[int, int]) -> ImageSet:
    labels = torch.cat([torch.full((n,), c) for c, n in per_class.items()])
    return ImageSet(torch.arange(len(labels), dtype=torch.uint8)[:, None, None, None], labels)


def test_a_share_or_a_count_of_every_class_is_held_out_and_the_rest_kept():
    part = images({0: 10, 1: 20, 2: 30})
    train, held = hold_out(part, 0.1)
    assert torch.bincount(held.labels).tolist() == [1, 2, 3]  # 10% of each class, rounded
    assert torch.bincount(train.labels).tolist() == [9, 18, 27]
    both = torch.cat([train.images.flatten(), held.images.flatten()]).sort().values
    assert torch.equal(both, part.images.flatten().sort().values)  # a partition: no image lost or shared
    _, counted = hold_out(part, 4)
    assert torch.bincount(counted.labels).tolist() == [4, 4, 4]


def test_the_held_out_images_do_not_depend_on_the_runs_seed(tmp_path):
    held = []
    for seed in (0, 7):
        runner = build_runner(make_cfg(*TINY, "validation=0.25", f"seed={seed}"), tmp_path / str(seed))
        held.append(runner.benchmark.validation)
        assert len(runner.benchmark.train) == 15 * 10  # TINY: 20 of each of 10 classes
    assert torch.equal(held[0].images, held[1].images) and len(held[0]) == 5 * 10


@pytest.mark.parametrize("value", ["-1", "1.5", "true", "abc"])
def test_a_bad_validation_value_is_a_config_error(value):
    with pytest.raises(ConfigError, match="validation="):
        RunSpec.from_config(make_cfg(*TINY, f"validation={value}"))
