"""scripts/bench.py --protocol: every phase of the whole protocol, beside the pure training time."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

PHASES = {"train", "recalibrate", "memory", "after_task", "evaluate", "checkpoint", "log"}


def test_protocol_bench_reports_every_phase_beside_the_pure_training_time(tmp_path):
    from bench import predicted

    out = tmp_path / "bench.json"
    tiny = ["--classes=4", "--steps=2", "--train-per-class=4", "--test-per-class=2", "--batch-size=8",
            "--backbone=resnet20", "--iterations=1", "--threads=1"]  # fmt: skip
    command = [sys.executable, "scripts/bench.py", "--protocol", "--methods=finetune", *tiny, f"--out={out}"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    result = report["protocol"]["finetune"]
    assert set(result["phase_seconds"]) == PHASES and result["wall_s"] > 0
    assert report["settings"]["precise_bn"] is False  # it stands for CIFAR-100, which does not recalibrate
    assert result["phase_seconds"]["recalibrate"] < 0.005  # skipped: ~0.1 ms; recalibrating here: ~20 ms
    assert result["images_trained_per_step"] == [8, 8]  # 2 classes x 4 images x 1 epoch per task
    c, f = report["ceiling"]["train_images_per_s"], report["ceiling"]["forward_images_per_s"]
    pure = 8 / predicted("finetune", 0, c, f) + 8 / predicted("finetune", 1, c, f)
    assert result["pure_training_s"] == pytest.approx(pure)
    assert result["wall_vs_pure_training"] == pytest.approx(result["wall_s"] / pure)
    assert "finetune" in proc.stdout and "ratio" in proc.stdout
    from cl_runner.precision import evaluates_faster_in_nhwc  # the layout evaluation read, recorded

    assert result["eval_channels_last"] is evaluates_faster_in_nhwc(torch.device("cpu"))
    assert report["ceiling"]["forward_nhwc_images_per_s"] > 0
