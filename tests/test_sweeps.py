"""Sweeps: the joblib launcher for real, the SLURM launcher up to the submission, and
`resume=auto`, which lets a requeued or re-launched job continue its own checkpoint."""

import json
import os
import sys
from types import SimpleNamespace

import pytest
import yaml

from cl_runner.train import main, run

from .conftest import TINY, cl_run, make_cfg
from .test_resume import SETTING, Crash, numbers, reference

JOB = [*TINY, "steps=1"]


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    sweep = tmp_path / "sweep"
    proc = cl_run("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *JOB, "seed=0,1",
                  f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2 and all("seed=" in job for job in jobs)
    seeds = [json.loads((sweep / job / "metrics.json").read_text())["config"]["seed"] for job in jobs]
    assert sorted(seeds) == [0, 1]


class FakeJob:
    """Runs the submitted callable here, as a SLURM node would run it."""

    def __init__(self, function, args):
        self.function, self.args = function, args

    def results(self):
        return [self.function(*self.args)]


def test_slurm_launcher_submits_the_configured_array_and_its_jobs_run(tmp_path, monkeypatch):
    import submitit

    submitted: dict = {}

    class FakeExecutor:
        def __init__(self, cluster, folder, **init):
            submitted.update(cluster=cluster, folder=folder, init=init)

        def update_parameters(self, **params):
            submitted["params"] = params

        def map_array(self, function, *columns):
            submitted["jobs"] = list(zip(*columns, strict=True))
            return [FakeJob(function, args) for args in submitted["jobs"]]

    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    monkeypatch.setattr(submitit, "JobEnvironment", lambda: SimpleNamespace(job_id="4242_0"))
    sweep = tmp_path / "sweep"
    monkeypatch.setattr(sys, "argv", [
        "cl-run", "-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=90", *JOB, "seed=0,1", f"hydra.sweep.dir={sweep}",
    ])  # fmt: skip
    main()

    assert submitted["cluster"] == "slurm" and submitted["folder"] == f"{sweep}/.submitit/%j"
    assert submitted["init"] == {"slurm_max_num_timeout": 5}
    params = submitted["params"]
    assert params["slurm_partition"] == "gpu" and params["timeout_min"] == 90
    assert params["gpus_per_node"] == 1 and params["slurm_array_parallelism"] == 16
    assert params["slurm_signal_delay_s"] == 120
    assert params["slurm_setup"] == ["export CL_RUNNER_RESUME=auto"]
    overrides = [job[0] for job in submitted["jobs"]]
    assert [o for o in overrides[0] if o.startswith("seed=")] == ["seed=0"]
    assert [o for o in overrides[1] if o.startswith("seed=")] == ["seed=1"]
    assert all("hydra/launcher=slurm" not in o for o in overrides)
    for job in sweep.iterdir():
        if job.is_dir() and not job.name.startswith("."):
            assert (job / "metrics.json").is_file()

    # The batch script those parameters make: resources, warning signal, the resume switch.
    # (submitit looks for `srun` before writing one: a stand-in is enough, nothing is run.)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    executor = submitit.SlurmExecutor(folder=tmp_path / "submitit")
    generic = {k.removeprefix("slurm_"): v for k, v in params.items()}
    executor.update_parameters(**executor._convert_parameters(generic))
    script = executor._make_submission_file_text("python -u -m submitit.core._submit FOLDER", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=90",
                 "#SBATCH --signal=USR2@120", "export CL_RUNNER_RESUME=auto"):  # fmt: skip
        assert line in script, line


def test_requeued_job_continues_its_checkpoint(tmp_path, monkeypatch):
    expected = reference(tmp_path, "finetune")
    folder = tmp_path / "job"
    from cl_runner.train import build_runner

    runner = build_runner(make_cfg(*SETTING, "resume=auto"), folder)  # no checkpoint yet: starts
    crash_on = runner.logger.epoch_end

    def epoch_end(task, epoch, stats):
        crash_on(task, epoch, stats)
        if task.index == 1 and epoch == 2:
            raise Crash  # the job is preempted

    runner.logger.epoch_end = epoch_end
    with pytest.raises(Crash):
        runner.run()
    requeued = build_runner(make_cfg(*SETTING, "resume=auto"), folder)
    assert requeued.checkpointer.position.task == 1 and requeued.checkpointer.position.epoch == 2
    requeued.run()
    requeued.logger.run_end(requeued.results)
    assert numbers(folder) == expected
    run(make_cfg(*SETTING, "resume=auto"), folder)  # a finished job launched again changes nothing
    assert numbers(folder) == expected


def test_launcher_without_its_extra_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if "joblib_launcher" in name else real(name, *a)
    )
    from cl_runner.errors import ConfigError
    from cl_runner.paths import config_dir
    from cl_runner.preflight import check_overrides

    with pytest.raises(ConfigError) as error:  # cl-run says it in one line, exit code 2 (test_cli.py)
        check_overrides(["-m", "hydra/launcher=joblib", f"hydra.sweep.dir={tmp_path}"], config_dir())
    assert str(error.value) == "hydra/launcher=joblib needs the sweep extra: pip install 'cl_runner[sweep]'"


def test_optuna_search_maximises_the_held_out_accuracy_never_the_test_sets(tmp_path):
    """hparams_search=optuna, three trials on digits: the best trial the sweeper reports is the
    one with the highest validation average incremental accuracy, read from the trials' own
    metrics.json, whatever their test numbers."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    proc = cl_run("-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", "validation=0.1", "method=lwf",
                  "method.lamb=interval(0.1,100)", "dataset=digits", "train.epochs=1", "steps=2",
                  "logger=local", "device=cpu", f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert len(trials) == 3
    held = [t["validation"]["summary"]["class_il"]["avg_incremental_acc"] for t in trials]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(held))
    winner = trials[held.index(max(held))]
    assert best["best_params"]["method.lamb"] == pytest.approx(winner["config"]["method"]["lamb"])


def test_a_search_without_a_held_out_split_is_refused(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    proc = cl_run("-m", "hparams_search=optuna", "hydra.sweeper.n_trials=1", "dataset=synthetic",
                  "logger=local", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2
    assert "objective=validation.avg_incremental_acc needs a held-out split" in proc.stderr
