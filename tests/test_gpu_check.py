"""scripts/gpu_check.py: what can be checked without a GPU. Every run it asks for composes and
validates; a failed step is recorded and the others still run; the summary fits one screen;
and the whole check runs on the CPU with tiny sizes (slow)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import make_cfg, spec_of

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_check  # noqa: E402


@pytest.mark.parametrize("size", ["full", "smoke"])
@pytest.mark.parametrize("method", ["der", "lwf"])
def test_every_run_of_the_check_composes_and_validates(tmp_path, size, method):
    extra = ["train.amp=true", "train.channels_last=true", "train.compile=true", "train.deterministic=true"]
    args = gpu_check.run_overrides(method, tmp_path, gpu_check.SIZES[size], "cpu", *extra)
    settings = spec_of(make_cfg(*args)).training
    assert settings.epochs == gpu_check.SIZES[size]["epochs"] and settings.amp and settings.compile


def test_a_failed_step_is_recorded_and_the_next_one_runs():
    report = {}

    def broken():
        raise RuntimeError("no kernel image is available")

    gpu_check.step(report, "short_runs", broken)
    gpu_check.step(report, "kill_and_resume", lambda: {"identical": True})
    assert report["short_runs"]["ok"] is False
    assert report["short_runs"]["error"] == "RuntimeError: no kernel image is available"
    assert report["kill_and_resume"]["ok"] is True and report["kill_and_resume"]["identical"] is True


def test_the_summary_fits_one_screen_and_names_what_failed():
    run = {"wall_s": 12.0, "peak_memory_mb": 900.0,
           "summary": {"class_il": {"avg_incremental_acc": 40.0, "last_acc": 30.0}}}  # fmt: skip
    report = {
        "environment": {"device": "cuda", "gpu": "H100", "torch": "2.14", "cuda": "13.0", "bf16": True},
        "gpu_tests": {"ok": True, "seconds": 20.0, "result": "5 passed in 19.8s"},
        "short_runs": {"ok": True, "seconds": 60.0, "der": run, "lwf": run},
        "kill_and_resume": {"ok": False, "seconds": 30.0, "error": "RuntimeError: numbers differ"},
        "bench": {"ok": False, "seconds": 1.0, "error": "RuntimeError: bench methods failed"},
    }
    lines = gpu_check.summary(report)
    assert lines[0].startswith("gpu_check on H100  torch 2.14  cuda 13.0  bf16 True")
    assert "5 passed in 19.8s" in lines[2]
    assert any("der" in line and "avg inc  40.0" in line for line in lines)
    failed = [line for line in lines if "FAILED" in line]
    assert [line.split()[0] for line in failed] == ["kill_and_resume", "bench"]
    assert "RuntimeError: numbers differ" in lines[lines.index(failed[0]) + 1]
    assert len(lines) <= 25


@pytest.mark.slow
@pytest.mark.long  # every step of the GPU check on the CPU: make test-all
def test_the_whole_check_runs_on_the_cpu_with_tiny_sizes(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        ["scripts/gpu_check.sh", "--device", "cpu", "--smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["gpu_tests"]["ok"] and report["gpu_tests"]["skipped"] == "no CUDA device"
    assert set(report["short_runs"]) >= {"der", "lwf"} and report["short_runs"]["der"]["finished"]
    assert report["kill_and_resume"]["identical"] is True
    assert report["kill_and_resume"]["killed_at"]["task"] == 1
    assert report["bench"]["methods"]["ceiling"]["train_images_per_s"] > 0
    assert "written to" in proc.stdout and len(proc.stdout.splitlines()) <= 26
