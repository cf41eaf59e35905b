"""Summary numbers on accuracy matrices worked out by hand."""

import pytest

from cl_runner.metrics import (
    average_forgetting,
    average_incremental_accuracy,
    backward_transfer,
    forgetting_per_task,
    last_accuracy,
    summarize,
)

# a[t][j]: accuracy on task j after training task t.
A = [
    [90.0, None, None],
    [60.0, 80.0, None],
    [70.0, 50.0, 85.0],
]


def test_forgetting_3x3_by_hand():
    # Task 0: best before the end max(90, 60) = 90, now 70 -> 20.
    # Task 1: best before the end 80, now 50 -> 30.   Mean (20 + 30) / 2 = 25.
    assert forgetting_per_task(A, 2) == [20.0, 30.0]
    assert average_forgetting(A) == 25.0


def test_forgetting_uses_best_earlier_accuracy_not_first():
    # Task 0 improves after step 0 (50 -> 80), then drops to 60: forgetting 80 - 60 = 20, not -10.
    m = [[50.0, None, None], [80.0, 70.0, None], [60.0, 70.0, 90.0]]
    assert forgetting_per_task(m, 2) == [20.0, 0.0]


def test_bwt_3x3_by_hand():
    # (a[2][0] - a[0][0] + a[2][1] - a[1][1]) / 2 = ((70 - 90) + (50 - 80)) / 2 = -25
    assert backward_transfer(A) == -25.0


def test_forgetting_after_step_one():
    assert forgetting_per_task(A, 1) == [30.0]  # 90 - 60


def test_average_and_last_accuracy_over_seen_classes():
    seen = [90.0, 70.0, 68.0]  # pooled seen-class accuracy per step
    assert average_incremental_accuracy(seen) == pytest.approx(76.0)
    assert last_accuracy(seen) == 68.0


def test_single_task_has_no_forgetting_or_bwt():
    s = summarize([[88.0]], [88.0])
    assert s == {"avg_incremental_acc": 88.0, "last_acc": 88.0, "avg_forgetting": None, "bwt": None}


def test_summary_keys_and_values():
    s = summarize(A, [90.0, 70.0, 68.0])
    assert s == {
        "avg_incremental_acc": pytest.approx(76.0),
        "last_acc": 68.0,
        "avg_forgetting": 25.0,
        "bwt": -25.0,
    }
