"""Plots, the W&B logger (real wandb, offline, read back from its data file) and failure handling."""

import json
import time

import pytest

from cl_runner.loggers.plots import PlotLogger
from cl_runner.loggers.wandb import WandbLogger, has_credentials, resolve_mode, run_identity
from cl_runner.train import run

from . import wandb_records

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent")
    monkeypatch.setenv("HOME", "/nonexistent-home")


def test_run_folder_gets_heatmaps_and_curve(tiny_cfg, tmp_path):
    run(tiny_cfg("steps=2"), tmp_path)
    for name in ("accuracy_matrix_class_il.png", "accuracy_matrix_task_il.png", "seen_accuracy.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == PNG and len(data) > 5000, name


def test_plot_failure_warns_and_keeps_metrics(tiny_cfg, tmp_path, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("no display")

    monkeypatch.setattr("cl_runner.loggers.plots.save_plots", broken)
    results = run(tiny_cfg("steps=2"), tmp_path)
    assert results.finished and (tmp_path / "metrics.json").is_file()
    assert "plots not written (RuntimeError: no display)" in caplog.text


def test_auto_mode_is_offline_without_credentials(offline):
    assert not has_credentials()
    assert resolve_mode("auto") == "offline"
    assert resolve_mode("disabled") == "disabled"


def test_auto_mode_is_online_with_an_api_key(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"


def test_identity_groups_seeds_together():
    ident = run_identity(
        {"method": "lwf", "dataset": "mnist5k"}, {"steps": 5, "init_classes": None, "seed": 2}
    )
    assert ident["group"] == "lwf-mnist5k-B0-5steps"
    assert ident["name"] == "lwf-mnist5k-B0-5steps-seed2"
    assert "method=lwf" in ident["tags"]


def test_wandb_offline_history_and_summary(tiny_cfg, tmp_path, offline, caplog):
    results = run(
        tiny_cfg("steps=2", "logger=wandb"), tmp_path, {"method": "finetune", "dataset": "synthetic"}
    )
    assert "logging offline; upload later with `wandb sync" in caplog.text
    path = wandb_records.run_file(tmp_path)
    rows = wandb_records.history(path)
    evals = [r for r in rows if "eval/seen_acc" in r]
    trains = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in evals] == [0, 1]
    assert [r["epoch"] for r in trains] == [1, 2]  # one epoch per task, counted across tasks
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for t, row in enumerate(evals):
        step = metrics["steps"][t]
        assert row["eval/seen_acc"] == pytest.approx(step["seen_acc"])
        assert row["eval/seen_acc_task_il"] == pytest.approx(step["seen_acc_task_il"])
        assert row["eval/seen_acc_top5"] == pytest.approx(step["seen_acc_top5"])
        assert row["eval/params"] == step["params"]
        for j in range(t + 1):
            assert row[f"eval/class_il/acc_task_{j}"] == pytest.approx(
                metrics["accuracy_matrix"]["class_il"][t][j]
            )
            assert row[f"eval/task_il/acc_task_{j}"] == pytest.approx(
                metrics["accuracy_matrix"]["task_il"][t][j]
            )
    assert evals[1]["eval/class_il/forgetting_task_0"] == pytest.approx(metrics["steps"][1]["forgetting"][0])
    assert evals[1]["eval/class_il/avg_forgetting"] == pytest.approx(
        metrics["summary"]["class_il"]["avg_forgetting"]
    )
    assert evals[1]["eval/class_il/bwt"] == pytest.approx(metrics["summary"]["class_il"]["bwt"])
    tables = [r for r in rows if "accuracy_matrix/class_il/_type" in r]  # nested keys come flattened
    assert len(tables) == 1 and tables[0]["accuracy_matrix/class_il/_type"] == "table-file"
    assert (
        tables[0]["accuracy_matrix/class_il/nrows"] == 2 and tables[0]["accuracy_matrix/class_il/ncols"] == 3
    )
    assert tables[0]["accuracy_matrix/task_il_heatmap/_type"] == "image-file"
    summary = wandb_records.summary(path)
    assert summary["class_il/last_acc"] == pytest.approx(results.summary()["class_il"]["last_acc"])
    assert summary["task_il/avg_incremental_acc"] == pytest.approx(
        results.summary()["task_il"]["avg_incremental_acc"]
    )
    task0 = metrics["accuracy_matrix"]["task_il"]
    assert summary["task_il/final_acc_task_0"] == pytest.approx(task0[1][0])
    assert summary["task_il/final_drop_task_0"] == pytest.approx(task0[1][0] - task0[0][0])
    config = wandb_records.config(path)
    assert config["steps"] == 2 and config["dataset"]["num_classes"] == 10


def test_wandb_gets_the_nearest_mean_accuracies_with_a_memory(tiny_cfg, tmp_path, offline):
    results = run(tiny_cfg("steps=2", "logger=wandb", "memory.size=20"), tmp_path, {"method": "finetune"})
    path = wandb_records.run_file(tmp_path)
    evals = [r for r in wandb_records.history(path) if "eval/seen_acc" in r]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for t, row in enumerate(evals):
        assert row["eval/seen_acc_nme"] == pytest.approx(metrics["steps"][t]["seen_acc_nme"])
        for j in range(t + 1):
            assert row[f"eval/nme/acc_task_{j}"] == pytest.approx(metrics["accuracy_matrix"]["nme"][t][j])
    assert evals[1]["eval/nme/forgetting_task_0"] == pytest.approx(metrics["steps"][1]["forgetting_nme"][0])
    summary = wandb_records.summary(path)
    assert summary["nme/last_acc"] == pytest.approx(results.summary()["nme"]["last_acc"])
    for key in ("images_trained", "exemplars", "exemplar_mb", "params_peak", "device_hours"):
        assert summary[f"cost/{key}"] == pytest.approx(metrics["cost"][key])  # the cost beside it


def test_wandb_failure_never_stops_training(tiny_cfg, tmp_path, monkeypatch, caplog):
    import wandb

    def refuse(*args, **kwargs):
        raise RuntimeError("network unreachable")

    monkeypatch.setattr(wandb, "init", refuse)
    results = run(tiny_cfg("steps=2", "logger=wandb", "logger.mode=online"), tmp_path)
    assert results.finished and (tmp_path / "metrics.json").is_file()
    assert caplog.text.count("W&B logging is off for this run (RuntimeError: network unreachable)") == 1


def test_wandb_failure_mid_run_warns_once(tmp_path, offline, caplog):
    logger = WandbLogger(tmp_path, {"seed": 0, "steps": 1}, {"method": "finetune"}, mode="offline")

    class Broken:
        def log(self, *args, **kwargs):
            raise ConnectionError("lost")

    logger.run = Broken()
    logger.epoch_end(type("T", (), {"index": 0})(), 0, {"loss": 1.0})
    logger.epoch_end(type("T", (), {"index": 0})(), 1, {"loss": 1.0})
    assert caplog.text.count("W&B logging is off") == 1 and logger.run is None


def test_disabled_mode_makes_no_run(tmp_path):
    assert WandbLogger(tmp_path, {}, {}, mode="disabled").run is None
    assert not (tmp_path / "wandb").exists()


def test_plot_logger_warns_once_and_then_stays_off(tmp_path, caplog, monkeypatch):
    logger = PlotLogger(tmp_path / "missing-folder")
    logger.run_end(type("R", (), {})())  # not Results: fails, warns, turns itself off
    assert logger.failed
    assert sum("plots not written" in r.message for r in caplog.records) == 1
    calls = []
    monkeypatch.setattr("cl_runner.loggers.plots.save_plots", lambda *args: calls.append(args))
    logger.run_end(type("R", (), {})())  # the second call does not try again, nor warn again
    assert calls == [] and sum("plots not written" in r.message for r in caplog.records) == 1


def test_unreachable_server_falls_back_to_offline_within_seconds(tiny_cfg, tmp_path, monkeypatch, caplog):
    """With credentials but no server (a closed port), the run goes offline at once instead of
    wandb.init's 90 seconds of retries, says so in one line, and keeps the record for `wandb sync`."""
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    started = time.monotonic()
    logger = WandbLogger(tmp_path, {"seed": 0, "steps": 1}, {"method": "finetune"}, mode="online")
    assert time.monotonic() - started < 15 and logger.run is not None
    assert "W&B: 127.0.0.1:9 unreachable, logging offline; upload later with `wandb sync" in caplog.text
    logger.run.finish()
    assert wandb_records.run_file(tmp_path).is_file()
