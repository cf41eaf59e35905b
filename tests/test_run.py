"""`run(cfg, out_dir)` end to end in-process, on the synthetic data set."""

import csv
import json

import pytest
import torch

from cl_runner.errors import NonFiniteLossError
from cl_runner.train import run

TIMINGS = ("train_seconds", "peak_memory_mb", "phase_seconds")


def _numbers(metrics: dict) -> dict:
    steps = [{k: v for k, v in s.items() if k not in TIMINGS} for s in metrics["steps"]]
    return {"matrix": metrics["accuracy_matrix"], "summary": metrics["summary"], "steps": steps}


def test_run_folder_has_metrics_contract(tiny_cfg, tmp_path):
    results = run(tiny_cfg(), tmp_path, {"method": "finetune"})
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["finished"] is True
    assert metrics["choices"] == {"method": "finetune", "backbone": "resnet20"}  # the one built
    assert metrics["config"]["steps"] == 5
    for kind in ("class_il", "task_il"):
        matrix = metrics["accuracy_matrix"][kind]
        assert len(matrix) == 5 and all(len(row) == 5 for row in matrix)
        assert all(
            row[t] is not None and all(v is None for v in row[t + 1 :]) for t, row in enumerate(matrix)
        )
        assert set(metrics["summary"][kind]) == {"avg_incremental_acc", "last_acc", "avg_forgetting", "bwt"}
    step = metrics["steps"][0]
    for key in (
        "step",
        "classes",
        "seen_acc",
        "seen_acc_top5",
        "seen_acc_task_il",
        "params",
        "train_seconds",
        "train_images",
        "old_acc",
        "new_acc",
        "peak_memory_mb",
    ):
        assert key in step
    assert [len(s["classes"]) for s in metrics["steps"]] == [2] * 5
    for s in metrics["steps"]:  # every phase of every step, after the run's last write
        phases = s["phase_seconds"]
        assert list(phases) == [
            "train",
            "recalibrate",
            "memory",
            "after_task",
            "evaluate",
            "checkpoint",
            "log",
        ]
        assert all(sec >= 0 for sec in phases.values())
        work = phases["train"] + phases["recalibrate"] + phases["memory"] + phases["after_task"]
        assert s["train_seconds"] == pytest.approx(work)
    assert metrics["summary"]["class_il"]["last_acc"] == results.summary()["class_il"]["last_acc"]
    # Joint's and fine-tuning's first step, and every single-task number, agree across forms.
    assert metrics["summary"]["class_il"]["last_acc"] == metrics["steps"][-1]["seen_acc"]

    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert len(rows) == 1 + 2 + 3 + 4 + 5  # one per (step, task j <= step)
    assert float(rows[-1]["class_il_acc"]) == metrics["accuracy_matrix"]["class_il"][4][4]
    assert "num_classes: 10" in (tmp_path / "config.yaml").read_text()


def test_same_seed_same_numbers_other_seed_other_numbers(tiny_cfg, tmp_path):
    a = run(tiny_cfg("seed=3"), tmp_path / "a").to_dict()
    b = run(tiny_cfg("seed=3"), tmp_path / "b").to_dict()
    c = run(tiny_cfg("seed=4"), tmp_path / "c").to_dict()
    assert _numbers(a) == _numbers(b)
    assert _numbers(a) != _numbers(c)


def test_finetune_trains_on_new_classes_joint_on_all(tiny_cfg, tmp_path):
    finetune = run(tiny_cfg("method=finetune"), tmp_path / "f")
    joint = run(tiny_cfg("method=joint"), tmp_path / "j")
    # synthetic: 20 training images per class, 2 classes per task
    assert [s["train_images"] for s in finetune.steps] == [40] * 5
    assert [s["train_images"] for s in joint.steps] == [40, 80, 120, 160, 200]


def test_memory_adds_exemplars_of_old_classes(tiny_cfg, tmp_path):
    results = run(tiny_cfg("memory.size=20"), tmp_path)
    # After task t the 20 slots are shared by all seen classes; task t+1 trains on 40 new + 20.
    assert [s["train_images"] for s in results.steps] == [40, 60, 60, 58, 56]
    assert [s["memory_size"] for s in results.steps] == [20, 20, 18, 16, 20]  # (20 // seen) * seen


def test_joint_ignores_exemplars_it_already_has(tiny_cfg, tmp_path):
    results = run(tiny_cfg("method=joint", "memory.per_class=5"), tmp_path)
    assert [s["train_images"] for s in results.steps] == [40, 80, 120, 160, 200]


def test_base_task_schedule(tiny_cfg, tmp_path):
    results = run(tiny_cfg("init_classes=4", "steps=3"), tmp_path)
    assert [len(s["classes"]) for s in results.steps] == [4, 2, 2, 2]


def test_params_grow_by_one_head_per_task(tiny_cfg, tmp_path):
    results = run(tiny_cfg(), tmp_path)
    params = [s["params"] for s in results.steps]
    head = 64 * 2 + 2  # resnet20 features x 2 classes + bias
    assert [b - a for a, b in zip(params[:-1], params[1:], strict=True)] == [head] * 4


def test_non_finite_loss_names_task_epoch_batch(tiny_cfg, tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"loss is not finite at task 0, epoch 1, batch \d+"):
        run(tiny_cfg("train.lr=1e30"), tmp_path)


def test_learns_something(tiny_cfg, tmp_path):
    results = run(tiny_cfg("train.epochs=15", "steps=1"), tmp_path)
    assert results.steps[0]["seen_acc"] > 50  # 10 classes: chance is 10


def test_amp_and_channels_last_run_on_cpu(tiny_cfg, tmp_path):
    results = run(tiny_cfg("train.amp=true", "train.channels_last=true", "steps=1"), tmp_path)
    assert results.finished
    assert torch.isfinite(torch.tensor(results.steps[0]["seen_acc"]))
