"""End-to-end runs on the embedded real data (minutes); `make test` runs them (the `long` one only
`make test-all`), `make test-fast` skips them."""

import json

import pytest

from .conftest import cl_run

pytestmark = pytest.mark.slow


def test_default_run_on_mnist5k(tmp_path):
    proc = cl_run(f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["choices"]["dataset"] == "mnist5k" and metrics["finished"]
    assert len(metrics["steps"]) == 5
    # Fine-tuning trains the new head's logits only: the newest task is learnt within its own
    # head (task-IL), and class-IL forgets earlier tasks.
    assert metrics["accuracy_matrix"]["task_il"][-1][-1] > 90
    assert metrics["summary"]["class_il"]["avg_forgetting"] > 50


@pytest.mark.long  # two full digits runs: make test-all
def test_joint_beats_finetune_on_digits(tmp_path):
    last = {}
    for method in ("finetune", "joint"):
        out = tmp_path / method
        proc = cl_run(
            f"method={method}", "dataset=digits", "logger=local", f"hydra.run.dir={out}", cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
        last[method] = json.loads((out / "metrics.json").read_text())["summary"]["class_il"]["last_acc"]
    assert last["joint"] > 85
    assert last["joint"] > last["finetune"] + 40
