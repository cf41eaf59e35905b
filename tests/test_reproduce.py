"""scripts/reproduce.sh: a paper table's sweep and its report, here in its --smoke form."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cl_runner.papers import lookup

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "reproduce.sh"


def reproduce(*args: str, out: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, **(env or {}), "OUT": str(out), "PYTHON": sys.executable,
           "CL_RUN": str(bin_dir / "cl-run"), "CL_REPORT": str(bin_dir / "cl-report")}  # fmt: skip
    command = ["bash", str(SCRIPT), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=out.parent)


@pytest.mark.parametrize("args", [["nope"], ["der_imagenet100", "--smoke"], []])
def test_unknown_table_or_impossible_smoke_is_refused(tmp_path, args):
    proc = reproduce(*args, out=tmp_path / "out")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # eight small runs: under a minute on two cores
def test_der_cifar100_smoke_reproduces_the_table_with_the_paper_column(tmp_path):
    """Two of the table's protocols (PRESETS narrows them): DER and DER w/o P with the paper's
    numbers beside them, and the iCaRL and WA rows with their nearest-mean-of-exemplars columns."""
    protocols = ("b0_5", "b50_2")
    presets = ",".join(f"der_cifar100_{name}" for name in protocols)
    proc = reproduce("der_cifar100", "--smoke", "device=cpu", out=tmp_path / "out", env={"PRESETS": presets})
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "out" / "der_cifar100_smoke"
    jobs = [p for p in folder.iterdir() if (p / "metrics.json").is_file()]
    assert len(jobs) == 8  # 2 protocols x DER / DER w/o P / iCaRL / WA, one seed
    with (folder / "report" / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and (folder / "report" / "report.md").is_file()
    for name in protocols:
        preset = OmegaConf.load(ROOT / "configs" / "experiment" / f"der_cifar100_{name}.yaml")
        base, steps = preset.init_classes, preset.steps
        schedule = f"B{base or 0} {steps} steps"
        for prune in ("True", "False"):
            differs = f"method.prune={prune}"
            (row,) = [r for r in rows if r["schedule"] == schedule and r["differs"] == differs]
            paper = lookup(f"der_cifar100_{name}", "der", {"method.prune": prune == "True"})
            assert float(row["paper avg"]) == pytest.approx(paper["avg_incremental_acc"])
            assert float(row["paper last"]) == pytest.approx(paper["last_acc"])
            assert row["NME avg"] != "-"  # DER keeps a memory too
        for method in ("icarl", "wa"):
            (row,) = [r for r in rows if r["schedule"] == schedule and r["method"] == method]
            assert row["NME avg"] != "-" and row["paper avg"] == "-"  # numbers not filled in


@pytest.mark.slow  # eleven small AlexNet runs on generated files: about four minutes on two cores
@pytest.mark.parametrize(
    "table, preset, methods",
    [
        ("lwf_table", "lwf_imagenet_cub", ["feature_extraction", "finetune", "finetune_fc", "joint", "lwf"]),
        ("mas_table", "mas_flowers_birds", ["ewc", "finetune", "joint", "lwf", "mas", "si"]),
    ],
)
def test_sequence_table_smoke_runs_every_method_on_files_in_each_format(tmp_path, table, preset, methods):
    """The generated sets in their releases' formats, random weights where the pretrained ones
    would be (hub cache, Places365 path): every method of the table runs, and the per-task
    report carries the paper's numbers of the preset."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "PRESETS": preset,
           "CL_RUN": str(bin_dir / "cl-run"), "CL_REPORT": str(bin_dir / "cl-report")}  # fmt: skip
    command = ["bash", str(SCRIPT), table, "--smoke", "device=cpu"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "out" / f"{table}_smoke"
    jobs = sorted(p.name for p in folder.iterdir() if (p / "metrics.json").is_file())
    assert [j.split("method=")[1].split(",")[0] for j in jobs] == methods
    with (folder / "report" / "report_tasks.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(methods)  # two tasks each
    main = table.split("_")[0]
    ours = [r for r in rows if r["setting"].startswith(f"{main} |")]
    paper = lookup(preset, main, {})["final_per_task"]
    assert [float(r["paper accuracy"]) for r in ours] == pytest.approx(list(paper))
