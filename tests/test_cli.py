"""The installed `cl-run` console script, as a user calls it."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import TINY, cl_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

ROOT = Path(__file__).resolve().parents[1]


def test_end_to_end_run_writes_run_folder(tmp_path):
    out = tmp_path / "run"
    proc = cl_run(*TINY, "steps=2", f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "summary" in proc.stdout and "after task 1" in proc.stdout
    for name in ("metrics.json", "metrics.csv", "config.yaml", "train.log", ".hydra/overrides.yaml"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["choices"]["method"] == "finetune" and metrics["choices"]["dataset"] == "synthetic"
    assert len(metrics["steps"]) == 2
    assert "task 1 epoch 1" in (out / "train.log").read_text()


def test_multirun_makes_one_folder_per_job_named_by_overrides(tmp_path):
    proc = cl_run("-m", *TINY, "steps=1", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert len(jobs) == 2 and all("seed=" in job for job in jobs)
    for job in jobs:
        assert (tmp_path / "sweep" / job / "metrics.json").is_file()


# One case per path an error takes to the user; the values each path checks are tabled
# in-process (test_config.py, the methods' own tests).
BAD_INPUT = [
    (  # a config-group option that does not exist, found before Hydra starts
        ["method=nope"],
        "cl-run: error: method=nope is unknown; choose from: "
        "bic, der, ebll, ewc, feature_extraction, finetune, finetune_fc, icarl, imm, joint, lwf, mas, "
        "podnet, rpsnet, sd, si, ucir, wa",
    ),
    (["-m", "dataset=synthetic,imaginary"], "cl-run: error: dataset=imaginary is unknown"),  # in a sweep
    (["steps=[1"], "cl-run: error: cannot parse 'steps=[1'"),  # an override that does not parse
    (["train.epochz=3"], "cl-run: error: Could not override 'train.epochz'"),  # Hydra's composition
    (["steps=ten"], "cl-run: error: steps='ten' is invalid: expected an integer >= 1"),  # validation
    (  # a method's constructor
        ["method=mas", "method.lamb=-1"],
        "cl-run: error: method.lamb=-1 is invalid: expected a number >= 0",
    ),
    (["memory.size=100000"], "cl-run: error: memory.size=100000 exceeds the 200 training images"),
    (  # a data set's loader
        ["dataset=cifar100", "dataset.root=/nonexistent"],
        "cifar100 not found in /nonexistent/cifar-100-python",
    ),
    (["resume=/nonexistent"], "cl-run: error: resume=/nonexistent: not a cl-run run folder"),
    (  # a method that rehearses, without a memory
        ["method=icarl", "memory.size=0"],
        "cl-run: error: method=icarl rehearses exemplars: set memory.size or memory.per_class",
    ),
    (  # a memory too small for one exemplar of every class (BiC keeps 90% of it for training)
        ["method=bic", "memory.size=10", "validation=2"],
        "cl-run: error: 9 exemplars (90% of memory.size=10) cannot keep one exemplar for each of the "
        "10 classes",
    ),
    (["resume=true"], "cl-run: error: resume=true needs the run folder"),
    (["sequence=[]"], "cl-run: error: sequence=[] is invalid: expected a list of data set names"),
    (  # a recipe's pinned backbone
        ["method=der", "dataset=cifar100", "backbone=resnet32"],
        "cl-run: error: method_dataset/der_cifar100 pins backbone=resnet18 (the recipe's); "
        "add ~method_dataset to run backbone=resnet32 without the recipe",
    ),
]


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory) -> list:
    """Every BAD_INPUT command line through cl-run's entry point, in one fresh process (tests.commands)."""
    folder = tmp_path_factory.mktemp("bad_input")
    commands = []
    for i, (args, _) in enumerate(BAD_INPUT):
        dataset = [] if any(a.startswith("dataset=") for a in args) else ["dataset=synthetic"]
        run_dir = [] if args == ["resume=true"] else [f"hydra.run.dir={folder / str(i)}"]
        commands.append([*dataset, *args, "logger=local", *run_dir])
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # tests.commands
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, "-m", "tests.commands", json.dumps(commands)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", range(len(BAD_INPUT)), ids=lambda i: " ".join(BAD_INPUT[i][0]))
def test_bad_input_is_one_line_and_exit_code_2(bad_input_results, case):
    code, stderr = bad_input_results[case]
    assert code == 2
    assert BAD_INPUT[case][1] in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stderr


def test_full_error_shows_the_traceback(tmp_path):
    proc = cl_run(
        "steps=ten",
        "dataset=synthetic",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        env={"HYDRA_FULL_ERROR": "1"},
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_wheel_ships_the_configs(tmp_path):
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([*pip_wheel, "-w", str(tmp_path), str(ROOT)], check=True, env=env)
    (wheel,) = tmp_path.glob("cl_runner-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        str(p.relative_to(ROOT)).replace("configs/", "cl_runner/configs/", 1)
        for p in (ROOT / "configs").rglob("*.yaml")
    }
    assert shipped <= names
    assert "cl_runner/configs/train.yaml" in names
    papers = {f"cl_runner/papers/{p.name}" for p in (ROOT / "cl_runner" / "papers").glob("*.yaml")}
    assert papers and papers <= names  # the paper registry cl-report reads


def test_unwritable_run_folder_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("")
    proc = cl_run(*TINY, f"hydra.run.dir={tmp_path / 'a-file' / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == f"cl-run: error: cannot create the run folder {tmp_path / 'a-file' / 'run'}: "
        f"{tmp_path / 'a-file'} is not a folder"
    )


def test_corrupt_checkpoint_and_changed_config_on_resume(tmp_path):
    folder = tmp_path / "run"
    assert cl_run(*TINY, "steps=2", f"hydra.run.dir={folder}", cwd=tmp_path).returncode == 0
    proc = cl_run(f"resume={folder}", "train.lr=0.01", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "cl-run: error: resume: the config differs from the checkpoint's in train.lr (0.05 -> 0.01)"
    )
    (folder / "checkpoint.pt").write_bytes(b"not a checkpoint")
    proc = cl_run(f"resume={folder}", cwd=tmp_path)
    assert proc.returncode == 2 and "checkpoint.pt is unreadable" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_the_recipe_a_run_applies_is_announced_and_recorded(tmp_path):
    """`cl-run method=wa dataset=cifar100` becomes PyCIL's WA recipe: the console's first line
    says so with every key it set, and metrics.json and the choices record it."""
    from synthetic_cifar import write

    write(tmp_path / "data", 100, 2, 1)
    proc = cl_run("method=wa", "dataset=cifar100", f"dataset.root={tmp_path / 'data'}", "steps=2",
                  "train.epochs=1", "train.first_task.epochs=1", "memory.size=100", "backbone=resnet32",
                  "logger=local", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("recipe wa_cifar100 sets: ")
    assert "train.first_task.weight_decay=0.0005" in proc.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["recipe"]["recipe"] == "wa_cifar100" and metrics["recipe"]["preset"] is None
    assert metrics["recipe"]["sets"]["wa_cifar100"]["train.first_task.epochs"] == 1  # the value it ran with
    choices = metrics["choices"]
    assert (choices["method_dataset"], choices["backbone"]) == ("wa_cifar100", "resnet32")
