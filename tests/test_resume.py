"""Checkpoints and resumption: a run stopped anywhere ends with the numbers of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cl_runner.errors import ConfigError, NonFiniteLossError
from cl_runner.train import build_runner, run

from .conftest import TINY, make_cfg

# Long enough to be caught mid-task: 3 tasks, 100 training images per class, 5 epochs per task.
SETTING = [
    *TINY, "dataset.num_classes=6", "steps=3", "train.epochs=5", "dataset.source.train_per_class=100",
    "train.batch_size=50", "checkpoint.every_epochs=1",
]  # fmt: skip
METHODS = {
    "finetune": ["method=finetune"],
    "lwf": ["method=lwf", "method.head_epochs=1", "memory.size=30"],
    "mas": ["method=mas"],
    "sd": ["method=sd"],
    "der": ["method=der", "memory.size=30", "method.balanced_epochs=2"],
    "ewc": ["method=ewc"],
    "si": ["method=si"],
    "icarl": ["method=icarl", "memory.size=30"],
    "wa": ["method=wa", "memory.size=30"],
    "imm": ["method=imm", "method.drop=0.5"],  # drop-transfer's masks too
    "ebll": ["method=ebll", "method.head_epochs=1", "method.ae_epochs=3"],
    "rpsnet": [
        "method=rpsnet",
        "backbone=rpsnet",
        "backbone.width=16",
        "backbone.modules=3",
        "memory.size=30",
        "method.candidates=1",
        "method.jump=1",
    ],  # a new path each task: its draws and freezing resumed
    "ucir": ["method=ucir", "memory.per_class=5", "method.cbf_epochs=2"],
    "bic": [
        "method=bic",
        "memory.size=30",
        "validation=10",
        "method.val_per_class=6",
        "method.bias_epochs=2",
    ],
    "podnet": ["method=podnet", "memory.per_class=5", "method.cbf_epochs=2", "method.proxies=3"],
}
TIMINGS = ("train_seconds", "peak_memory_mb", "phase_seconds")


def numbers(folder: Path) -> dict:
    metrics = json.loads((Path(folder) / "metrics.json").read_text())
    steps = [{k: v for k, v in s.items() if k not in TIMINGS} for s in metrics["steps"]]
    return {"matrix": metrics["accuracy_matrix"], "summary": metrics["summary"], "steps": steps}


_REFERENCES: dict[str, dict] = {}


def reference(tmp_path, method) -> dict:
    """The uninterrupted run's numbers, computed once per method for the whole session."""
    if method not in _REFERENCES:
        run(make_cfg(*SETTING, *METHODS[method]), tmp_path / "reference")
        _REFERENCES[method] = numbers(tmp_path / "reference")
    return _REFERENCES[method]


class Crash(Exception):
    pass


@pytest.mark.parametrize("method", list(METHODS))
def test_crash_mid_task_then_resume_gives_identical_metrics(method, tmp_path):
    expected = reference(tmp_path, method)
    folder = tmp_path / "crashed"
    runner = build_runner(make_cfg(*SETTING, *METHODS[method]), folder)
    crash_on = runner.logger.epoch_end

    def epoch_end(task, epoch, stats):
        crash_on(task, epoch, stats)
        if task.index == 1 and epoch == 2:
            raise Crash  # after epoch 3 of task 1, before its checkpoint: resume redoes it

    runner.logger.epoch_end = epoch_end
    with pytest.raises(Crash):
        runner.run()
    position = json.loads((folder / "checkpoint.json").read_text())
    assert position == {"task": 1, "stage": "main", "epoch": 2, "batch": 0, "fresh": False}
    run(make_cfg(*SETTING, *METHODS[method], "resume=true"), folder)
    assert numbers(folder) == expected


@pytest.mark.parametrize("work", ["memory", "after_task"])
def test_a_stop_after_training_abandons_the_work_and_resumes_exactly(work, tmp_path):
    """Ctrl-C in herding or DER's classifier re-training stops there, not after a minute: the
    checkpoint is the state training ended in, and the resumed run redoes the work."""
    from cl_runner.runner import Interrupted

    expected = reference(tmp_path, "der")
    folder = tmp_path / "stopped"
    runner = build_runner(make_cfg(*SETTING, *METHODS["der"]), folder)
    owner = runner.memory if work == "memory" else runner.method
    name = "update" if work == "memory" else "after_task"
    original, finished = getattr(owner, name), []

    def interrupted(*args):
        if runner.checkpointer.position.task == 1:
            os.kill(os.getpid(), signal.SIGINT)
        original(*args)
        finished.append(True)

    setattr(owner, name, interrupted)
    with pytest.raises(Interrupted):
        runner.run()
    assert len(finished) == 1  # task 0's work finished, task 1's was cut short
    position = json.loads((folder / "checkpoint.json").read_text())
    assert position == {"task": 1, "stage": "main", "epoch": 5, "batch": 0, "fresh": False}
    run(make_cfg(*SETTING, *METHODS["der"], "resume=true"), folder)
    assert numbers(folder) == expected


BALANCED = ["method=der", "memory.size=30", "method.balanced_epochs=3", "method.balanced_batch_size=16"]


@pytest.mark.parametrize("where", ["stage", "evaluation"])
def test_sigint_in_ders_balanced_stage_or_after_it_resumes_exactly(where, tmp_path):
    """The runner runs DER's classifier stage: Ctrl-C inside it stops at the batch with a
    checkpoint of the stage (its class-balanced subset, optimizer, position); Ctrl-C in the
    evaluation after it keeps the finished stage. Either resumes to the uninterrupted numbers."""
    from cl_runner.runner import Interrupted

    run(make_cfg(*SETTING, *BALANCED), tmp_path / "reference")
    expected = numbers(tmp_path / "reference")
    folder = tmp_path / "stopped"
    runner = build_runner(make_cfg(*SETTING, *BALANCED), folder)
    if where == "stage":
        stage_loss = runner.method.balanced_loss

        def loss(batch, model):
            p = runner.checkpointer.position
            if p.task == 1 and p.epoch == 1 and batch.index == 1:
                os.kill(os.getpid(), signal.SIGINT)
            return stage_loss(batch, model)

        runner.method.balanced_loss = loss
    else:
        evaluate = runner.evaluate

        def interrupted(task, clock):
            if task.index == 1:
                os.kill(os.getpid(), signal.SIGINT)
            return evaluate(task, clock)

        runner.evaluate = interrupted
    started = time.monotonic()
    with pytest.raises(Interrupted):
        runner.run()
    assert time.monotonic() - started < 60
    position = json.loads((folder / "checkpoint.json").read_text())
    if where == "stage":
        assert position == {"task": 1, "stage": "balanced", "epoch": 1, "batch": 2, "fresh": False}
        assert torch.load(folder / "checkpoint.pt", weights_only=False)["subset"] is not None
    else:
        assert position == {"task": 1, "stage": "balanced", "epoch": 3, "batch": 0, "fresh": False}
    run(make_cfg(*SETTING, *BALANCED, "resume=true"), folder)
    assert numbers(folder) == expected


def test_a_second_signal_stops_at_once(tmp_path):
    runner = build_runner(make_cfg(*SETTING), tmp_path)
    original = runner.method.training_loss

    def twice(batch, model):
        os.kill(os.getpid(), signal.SIGINT)  # the first asks for a checkpoint at the batch's end
        os.kill(os.getpid(), signal.SIGINT)  # the second does not wait for it
        return original(batch, model)

    runner.method.training_loss = twice
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    assert not (tmp_path / "checkpoint.pt").exists()


def _cl_run(args, **kwargs):
    exe = Path(sys.executable).with_name("cl-run")
    return subprocess.Popen(
        [str(exe), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs
    )


def _wait_until_mid_task(folder: Path, proc, task: int = 1, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before it could be stopped: {proc.stderr.read()}"
        try:
            position = json.loads((folder / "checkpoint.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            position = None
        if position and position["task"] == task and not position["fresh"] and position["epoch"] >= 1:
            return position
        time.sleep(0.02)
    raise AssertionError("no mid-task checkpoint appeared")


# SIGKILL in a real process for every method with state of its own kind; the others' state is
# of a kind tested here already (test_crash_mid_task covers them all in every run): `long`.
# Plain: the network and a teacher. EWC: MAS's regularizer base. UCIR: PODNet's balanced stage.
SAME_KIND = ("finetune", "lwf", "sd", "icarl", "wa", "ewc", "ucir")


@pytest.mark.slow
@pytest.mark.parametrize(
    "method", [pytest.param(m, marks=pytest.mark.long) if m in SAME_KIND else m for m in METHODS]
)
def test_sigkill_then_resume_gives_identical_metrics(method, tmp_path):
    """Killed mid-task in a real process, whatever it was writing; resumed from what is on disk
    (in this process: `cl-run resume=PATH` itself is test_sigint_and_sigterm's)."""
    expected = reference(tmp_path, method)
    folder = tmp_path / "killed"
    proc = _cl_run([*SETTING, *METHODS[method], f"hydra.run.dir={folder}"])
    _wait_until_mid_task(folder, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not json.loads((folder / "metrics.json").read_text())["finished"]
    run(make_cfg(*SETTING, *METHODS[method], "resume=true"), folder)
    assert numbers(folder) == expected


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_write_a_checkpoint_and_resume_exactly(signum, tmp_path):
    expected = reference(tmp_path, "finetune")
    folder = tmp_path / "stopped"
    proc = _cl_run([*SETTING, f"hydra.run.dir={folder}"])
    _wait_until_mid_task(folder, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum
    name = signal.Signals(signum).name
    assert f"cl-run: {name} received; checkpoint written. Continue with: cl-run resume={folder}" in stderr
    position = json.loads((folder / "checkpoint.json").read_text())
    assert position["task"] >= 1 and not position["fresh"]
    exe = str(Path(sys.executable).with_name("cl-run"))
    resumed = subprocess.run([exe, f"resume={folder}"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert numbers(folder) == expected


def test_resume_with_another_config_names_the_keys(tmp_path):
    folder = tmp_path / "run"
    run(make_cfg(*TINY, "steps=2"), folder)
    with pytest.raises(
        ConfigError, match=r"resume: the config differs from the checkpoint's in train.lr \(0.05 -> 0.01\)"
    ):
        build_runner(make_cfg(*TINY, "steps=2", "train.lr=0.01", "resume=true"), folder)


def test_resume_without_or_with_a_corrupt_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match=r"resume: no checkpoint.pt in"):
        build_runner(make_cfg(*TINY, "resume=true"), tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00garbage")
    with pytest.raises(ConfigError, match=r"resume: .*checkpoint.pt is unreadable"):
        build_runner(make_cfg(*TINY, "resume=true"), tmp_path)


def test_checkpoint_is_replaced_atomically(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    run(make_cfg(*TINY, "steps=2"), folder)
    before = (folder / "checkpoint.pt").read_bytes()

    def dies_mid_write(obj, path):
        Path(path).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_mid_write)
    runner = build_runner(make_cfg(*TINY, "steps=2", "resume=true"), folder)
    with pytest.raises(OSError, match="disk full"):
        runner.save()
    assert (folder / "checkpoint.pt").read_bytes() == before
    assert not [p for p in folder.iterdir() if p.name.startswith(".checkpoint.pt.")]


def test_non_finite_loss_leaves_the_last_good_checkpoint(tmp_path):
    folder = tmp_path / "run"
    runner = build_runner(make_cfg(*TINY, "steps=2", "train.epochs=2"), folder)
    normal = runner.method.training_loss

    def explodes_in_task_1(batch, model):
        loss, parts = normal(batch, model)
        return (loss * float("nan") if batch.task.index == 1 else loss), parts

    runner.method.training_loss = explodes_in_task_1
    with pytest.raises(NonFiniteLossError, match=r"task 1, epoch 1, batch 1"):
        runner.run()
    saved = torch.load(folder / "checkpoint.pt", weights_only=False)
    assert saved["position"] == {"task": 1, "stage": "main", "epoch": 0, "batch": 0, "fresh": True}
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_finished_run_resumes_to_the_same_numbers(tmp_path):
    folder = tmp_path / "run"
    run(make_cfg(*TINY, "steps=2"), folder)
    first = numbers(folder)
    run(make_cfg(*TINY, "steps=2", "resume=true"), folder)
    assert numbers(folder) == first


def test_unwritable_run_folder_fails_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"cannot write to the run folder .*a-file/run"):
        build_runner(make_cfg(*TINY), blocker / "run")
    assert os.path.exists(blocker)


def test_full_disk_fails_before_training(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 5 * 2**20, 5 * 2**20))
    with pytest.raises(ConfigError, match=r"only 5 MB free in .*; checkpoints and metrics need more"):
        build_runner(make_cfg(*TINY), tmp_path / "run")


def test_the_training_end_state_is_copied_not_shared():
    """What a stop after training checkpoints must not change with the work that follows."""
    from collections import namedtuple

    from cl_runner.runner import host_copy

    Pair = namedtuple("Pair", "a b")
    weights = torch.ones(3)
    state = {"model": {"w": weights}, "rng": ("MT19937", [1, 2]), "pair": Pair(weights, 2)}
    copied = host_copy(state)
    weights.add_(1)  # the work after training moves the weights in place
    assert torch.equal(copied["model"]["w"], torch.ones(3)) and copied["model"]["w"].device.type == "cpu"
    assert copied["rng"] == ("MT19937", [1, 2]) and isinstance(copied["pair"], Pair)
    assert torch.equal(copied["pair"].a, torch.ones(3))
