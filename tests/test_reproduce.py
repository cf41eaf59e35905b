"""scripts/reproduce.sh: a paper table's sweep and its report, here in its --smoke form."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


BASELINES = ["icarl", "ucir", "bic", "wa", "podnet"]  # DER's tables' rows beside DER and RPSNet


def test_der_imagenet100_runs_every_row_of_the_table(tmp_path):
    """ImageNet files cannot be generated to scale here: a stand-in cl-run records the sweeps. DER
    w/o P on both protocols, the five baselines on the standard ResNet-18 with their own recipes,
    RPSNet on its own network; every sweep over three seeds and resumable; then the report."""
    fake = tmp_path / "cl-run"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> "$OUT/calls.txt"\n')
    fake.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    env = {"CL_RUN": str(fake), "CL_REPORT": f"{fake} report", "OUT": str(out), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPT), "der_imagenet100", "device=cuda"], capture_output=True,
                          text=True, env={**os.environ, **env}, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    calls = [line.split() for line in (out / "calls.txt").read_text().splitlines()]
    protocols = "experiment=der_imagenet100_b0_10,der_imagenet100_b50_10"
    der, *apart, rpsnet, report = calls
    assert der[:3] == ["-m", protocols, "method.prune=false"]
    assert [sweep[:3] for sweep in apart] == [["-m", protocols, f"method={m}"] for m in BASELINES]
    assert all({"backbone=resnet18", "backbone.stem=imagenet"} <= set(sweep) for sweep in apart)
    assert rpsnet[:3] == ["-m", protocols, "method=rpsnet"] and "backbone=rpsnet" in rpsnet
    common = {"seed=0,1,2", "resume=auto", "device=cuda", f"hydra.sweep.dir={out}/der_imagenet100"}
    assert all(common <= set(sweep) for sweep in (der, *apart, rpsnet))
    assert report == ["report", f"{out}/der_imagenet100", "--out", f"{out}/der_imagenet100/report"]


@pytest.mark.slow  # five small runs: about a minute and a half on two cores
def test_der_cifar100_smoke_reproduces_the_table_with_the_paper_column(tmp_path):
    """One of the table's protocols (PRESETS narrows them) and three of the rows run apart from
    DER (METHODS: BiC and PODNet, with stages of their own, and RPSNet on its own network with
    two candidates a task): every row of DER's Table 1 in the paper's order, each run's row with
    the paper's numbers and #P beside it, the rows not run (iCaRL, UCIR, WA) with the paper's
    alone, and nearest-mean-of-exemplars columns for every method with a memory."""
    preset = "der_cifar100_b0_5"
    env = {"PRESETS": preset, "METHODS": "bic,podnet,rpsnet"}
    proc = reproduce("der_cifar100", "--smoke", "device=cpu", out=tmp_path / "out", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "out" / "der_cifar100_smoke"
    jobs = [p for p in folder.iterdir() if (p / "metrics.json").is_file()]
    assert len(jobs) == 5  # DER, DER w/o P, BiC, PODNet, RPSNet; one seed
    with (folder / "report" / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["icarl", "ucir", "bic", "wa", "podnet", "rpsnet", "der", "der"]
    assert [r["differs"] for r in rows][-2:] == ["method.prune=False", "method.prune=True"]  # DER w/o P, DER
    for row in rows:
        method, ran = row["method"], row["seeds"] == "1"
        when = {"method.prune": row["differs"] == "method.prune=True"} if method == "der" else {}
        paper = lookup(preset, method, when)
        if ran and paper.get("avg_incremental_acc") is not None:
            assert float(row["paper avg"]) == pytest.approx(paper["avg_incremental_acc"])
            assert float(row["paper last"]) == pytest.approx(paper["last_acc"])
        assert (row["NME avg"] != "-") == ran and (row["#P (M)"] != "-") == ran
        assert row["paper #P (M)"] == ("11.22" if method not in ("der", "rpsnet") else "-")
    assert [r["seeds"] for r in rows] == ["0", "0", "1", "0", "1", "1", "1", "1"]  # run or paper only
    assert rows[5]["paper avg"] == "-"  # the 5-step source has no RPSNet number
    assert float(rows[5]["#P (M)"]) < 1  # the path RPSNet runs through its narrowed bank
    assert (folder / "report" / "report.md").is_file()


@pytest.mark.slow  # small AlexNet runs on generated files: 1 to 2.5 minutes each on two cores
@pytest.mark.parametrize(
    "table, preset, methods",
    [
        # `long` (make test-all): the MAS table's smoke below runs the same path (presets, rows run
        # apart, generated files, random AlexNet weights, the paper column); these methods' numbers
        # are golden cases and CUB's release format has its loader test
        pytest.param(
            "lwf_table",
            "lwf_imagenet_cub",
            ["feature_extraction", "finetune", "finetune_fc", "joint", "lwf"],
            marks=pytest.mark.long,
        ),
        # the table's own method in its sweep and the rows run apart (IMM's two, mean and mode;
        # EBLL); all nine in `long`: the other five join MAS's sweep, and each is a golden case
        ("mas_table", "mas_flowers_birds", ["ebll", "imm", "imm", "mas"]),
        pytest.param(
            "mas_table",
            "mas_flowers_birds",
            ["ebll", "ewc", "finetune", "imm", "imm", "joint", "lwf", "mas", "si"],
            marks=pytest.mark.long,
        ),
    ],
)
def test_sequence_table_smoke_runs_every_method_on_files_in_each_format(tmp_path, table, preset, methods):
    """The generated sets in their releases' formats, random weights where the pretrained ones
    would be (hub cache, Places365 path): every method of the table runs, and the per-task
    report carries the paper's numbers of the preset."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "PRESETS": preset,
           "CL_RUN": str(bin_dir / "cl-run"), "CL_REPORT": str(bin_dir / "cl-report"),
           "METHODS": ",".join(dict.fromkeys(methods))}  # fmt: skip
    command = ["bash", str(SCRIPT), table, "--smoke", "device=cpu"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "out" / f"{table}_smoke"
    jobs = sorted(p.name for p in folder.iterdir() if (p / "metrics.json").is_file())
    assert sorted(j.split("method=")[1].split(",")[0] for j in jobs) == methods  # IMM: mean and mode
    with (folder / "report" / "report_tasks.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(methods)  # two tasks each
    main = table.split("_")[0]
    ours = [r for r in rows if r["setting"].startswith(f"{main} |")]
    paper = lookup(preset, main, {})["final_per_task"]
    assert [float(r["paper accuracy"]) for r in ours] == pytest.approx(list(paper))
