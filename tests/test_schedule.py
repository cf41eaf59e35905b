import pytest
import torch

from cl_runner.data.schedule import class_order, make_schedule, remap_labels, task_sizes
from cl_runner.errors import ConfigError


def test_class_order_is_the_icarl_pycil_der_order():
    # CIFAR-100 order with seed 1993, as printed by iCaRL/PyCIL/DER runs.
    assert class_order(100, 1993)[:10] == [68, 56, 78, 8, 23, 84, 90, 65, 74, 76]
    assert sorted(class_order(100, 1993)) == list(range(100))


def test_null_seed_keeps_natural_order():
    assert class_order(5, None) == [0, 1, 2, 3, 4]


def test_equal_split():
    assert task_sizes(100, 10, None) == [10] * 10
    assert task_sizes(10, 1, None) == [10]


def test_base_task_then_equal_steps():
    # DER's "B50, 10 steps": 50 classes, then 10 steps of 5.
    assert task_sizes(100, 10, 50) == [50] + [5] * 10
    assert task_sizes(100, 2, 50) == [50, 25, 25]


def test_uneven_split_says_which_steps_work():
    with pytest.raises(
        ConfigError, match=r"steps=3 does not split the 10 classes evenly; steps that work: 1, 2, 5, 10"
    ):
        task_sizes(10, 3, None)
    with pytest.raises(ConfigError, match=r"remaining 6 classes .* steps that work: 1, 2, 3, 6"):
        task_sizes(10, 4, 4)


def test_init_classes_out_of_range():
    with pytest.raises(ConfigError, match="init_classes=200 is out of range"):
        task_sizes(100, 10, 200)


def test_schedule_offsets_and_classes():
    order, tasks = make_schedule(10, 5, None, 1993)
    assert [t.offset for t in tasks] == [0, 2, 4, 6, 8]
    assert [t.end for t in tasks] == [2, 4, 6, 8, 10]
    assert tasks[1].classes == tuple(order[2:4])
    assert list(tasks[4].labels) == [8, 9]


def test_remap_puts_classes_in_order_positions():
    order = [2, 0, 1]
    labels = torch.tensor([0, 1, 2, 2])
    assert remap_labels(labels, order).tolist() == [1, 2, 0, 0]
