"""Golden numbers (tests/golden.py): every method's short run on digits gives the stored
accuracy matrices, parameter counts and loss means; a 10% change of a loss weight does not
pass even with the tolerance other machine types get."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from . import golden

ROOT = Path(__file__).resolve().parents[1]


def golden_command(*args: str) -> subprocess.CompletedProcess:
    """`python -m tests.golden ...` in a fresh process: no state left by other tests."""
    return subprocess.run(
        [sys.executable, "-m", "tests.golden", *args], cwd=ROOT, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def numbers(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("golden") / "numbers.json"
    proc = golden_command("--out", str(out))
    assert out.is_file(), proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_every_case_is_stored():
    assert list(golden.load()["cases"]) == list(golden.CASES)


@pytest.mark.parametrize("case", list(golden.CASES))
def test_numbers_equal_the_golden_ones(numbers, case):
    moved = golden.compare(case, numbers["cases"][case])
    exact = golden.load()["fingerprint"] == numbers["fingerprint"]
    how = "to the last bit" if exact else "within golden.TOLERANCE (another machine type)"
    assert not moved, (
        f"{case}: {len(moved)} numbers differ from tests/golden.json ({how}):\n  " + "\n  ".join(moved[:15])
        + "\nIf the change is intended: python -m tests.golden --update, and say why in the commit."
    )  # fmt: skip


def test_a_ten_percent_change_of_a_loss_weight_is_caught_with_tolerance():
    """LwF's lambda_o, MAS's lambda and DER's lambda_a at 1.1x their defaults, compared as on
    another machine type: numbers fall outside the tolerance."""
    proc = golden_command("--perturb", "lwf", "mas", "der_wo_p")
    lines = [line for line in proc.stdout.splitlines() if not line.startswith(" ")]
    assert lines == [
        "lwf method.lamb=1.1: caught" + lines[0].split("caught", 1)[1],
        "mas method.lamb=1.1: caught" + lines[1].split("caught", 1)[1],
        "der_wo_p method.aux_weight=1.1: caught" + lines[2].split("caught", 1)[1],
    ], proc.stdout + proc.stderr[-2000:]
    assert proc.returncode == 0


def case(matrix, params=(100,), loss=1.0) -> dict:
    return {
        "accuracy_matrix": {"class_il": matrix},
        "params": list(params),
        "losses": [{"task": 0, "stage": "main", "epoch": 0, "loss": loss}],
    }


def test_exact_comparison_reports_any_change_and_tolerant_one_only_beyond_the_tolerance():
    stored = case([[90.0, None], [40.0, 80.0]])
    assert golden.differences(stored, case([[90.0, None], [40.0, 80.0]]), exact=True) == []
    nudged = case([[90.0, None], [41.0, 80.0]], loss=1.0 + 5e-6)
    assert golden.differences(stored, nudged, exact=True) == [
        "class_il[1][0]: 40.0 -> 41.0",
        "task 0 main epoch 0 loss: 1.0 -> 1.000005",
    ]
    assert golden.differences(stored, nudged, exact=False) == []  # one image, 5e-6
    moved = case([[90.0, None], [42.0, 80.0]], params=(101,), loss=1.001)
    assert golden.differences(stored, moved, exact=False) == [
        "class_il[1][0]: 40.0 -> 42.0",
        "params[0]: 100 -> 101",
        "task 0 main epoch 0 loss: 1.0 -> 1.001",
    ]
    assert golden.differences(stored, case([[90.0, None], [None, 80.0]]), exact=False) == [
        "class_il[1][0]: 40.0 -> None"
    ]
