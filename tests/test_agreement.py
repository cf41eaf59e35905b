"""scripts/agreement: the verdict of compare.py, the epoch cut both launchers share, and the
first-task override of ours.py (the launchers themselves run other toolboxes' checkouts)."""

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "agreement"))
import common  # noqa: E402
import compare  # noqa: E402
import ours  # noqa: E402


def result(side: str, seed: int, avg: float, **extra) -> dict:
    return {"side": side, "seed": seed, "cnn": {"curve": [avg], "avg": avg, "last": avg}, "nme": None,
            "task_il": None, "wall_seconds": 10.0, **extra}  # fmt: skip


def write(folder: Path, pair: str, method: str, side: str, averages: list[float], **extra) -> None:
    """One result file per seed 1, 2, 3, ... with these average accuracies."""
    for seed, avg in enumerate(averages, start=1):
        r = result(pair if side == "theirs" else "ours", seed, avg, **extra)
        (folder / f"{pair}-{method}-{seed}-{side}.json").write_text(json.dumps(r))


def test_milestones_scale_in_proportion_rounding_half_up():
    assert common.scale_milestones([40, 70], 80, 4) == [2, 4]  # 3.5 -> 4
    assert common.scale_milestones([70, 120, 150], 180, 4) == [2, 3, 3]  # a repeat drops twice


def test_verdict_is_the_difference_of_means_against_two_standard_errors(tmp_path):
    # theirs 40, 50, 60 (sd 10); ours 52, 58, 64 (sd 6): difference +8, SE sqrt(100/3 + 36/3) = 6.83
    write(tmp_path, "pycil", "lwf", "theirs", [40, 50, 60])
    write(tmp_path, "pycil", "lwf", "ours", [52, 58, 64])
    lines = compare.table("pycil", "lwf", compare.load(tmp_path)[("pycil", "lwf")])
    limit = 2 * math.sqrt(100 / 3 + 36 / 3)
    assert f"- cl_runner − PyCIL, CNN avg: +8.00 (limit {limit:.2f}, n = 3/3): **met**" in lines
    # PyCIL's results without a recorded weight seed ran from its fixed seed 1
    assert "- weight seeds: PyCIL 1; cl_runner 1, 2, 3" in lines


def test_a_difference_beyond_three_points_and_two_se_is_not_met(tmp_path):
    write(tmp_path, "facil", "si", "theirs", [41, 40, 41])
    write(tmp_path, "facil", "si", "ours", [46, 45, 46], weight_seed=7)
    lines = compare.table("facil", "si", compare.load(tmp_path)[("facil", "si")])
    verdict = next(line for line in lines if line.startswith("- cl_runner − FACIL, CNN avg"))
    assert verdict.startswith("- cl_runner − FACIL, CNN avg: +5.00 (limit 3.00") and "**not met**" in verdict
    assert "- weight seeds: FACIL 1, 2, 3; cl_runner 7" in lines


def test_weight_seed_replaces_cl_runners_seed_but_not_the_class_order():
    args, _ = ours.overrides("pycil", "finetune", 1995, 4, "/data", weight_seed=3)
    assert "class_order_seed=1995" in args and "seed=3" in args and "seed=1995" not in args
    args, _ = ours.overrides("pycil", "finetune", 1995, 4, "/data")
    assert "seed=1995" in args


@pytest.mark.parametrize("tasks", [1, 2])
def test_first_tasks_cuts_the_runners_task_list(tasks, monkeypatch):
    """ours.py --tasks N runs this snippet: the runner it builds keeps its first N tasks."""
    from cl_runner import train

    class Built:
        def __init__(self):
            self.benchmark = type("B", (), {"tasks": ["t0", "t1", "t2"]})()

    ran = {}
    monkeypatch.setattr(train, "runner_for", lambda *a, **k: Built())
    monkeypatch.setattr(train, "main", lambda: ran.setdefault("runner", train.runner_for()))
    monkeypatch.setattr(sys, "argv", ["-c", str(tasks), "method=finetune"])
    exec(ours.FIRST_TASKS, {})
    assert ran["runner"].benchmark.tasks == ["t0", "t1", "t2"][:tasks]
    assert sys.argv == ["cl-run", "method=finetune"]
