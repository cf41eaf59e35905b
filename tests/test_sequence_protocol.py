"""What a sequence of data sets changes in the protocol: the later tasks' learning rate, fixed
BatchNorm statistics, old heads left as learnt, and each task's accuracy and drop reported."""

import csv
import json

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from cl_runner.data.schedule import Task
from cl_runner.loggers import Logger
from cl_runner.report import main as report_main
from cl_runner.results import Evaluation, Results
from cl_runner.train import build_runner

from .conftest import make_cfg, spec_of

CPU = ["device=cpu", "logger=local", "train.epochs=1"]
SEQUENCE = ["sequence=[synthetic,digits]", "backbone=resnet20", *CPU]


class LearningRates(Logger):
    def __init__(self):
        self.lr: dict[int, float] = {}

    def epoch_end(self, task, epoch, stats):
        self.lr[task.index] = stats["lr"]


@pytest.mark.parametrize(
    "overrides, factor, fix_bn",
    [
        (SEQUENCE, 0.1, True),  # from scratch: the first task plays the pretrained network
        ([*SEQUENCE, "train.later_lr_factor=0.5", "train.fix_bn=false"], 0.5, False),
        (["dataset=synthetic", "steps=2", *CPU], 1.0, False),  # a class split: unchanged
    ],
)
def test_auto_protocol_settings_and_the_rate_each_task_trains_at(tmp_path, overrides, factor, fix_bn):
    settings = spec_of(make_cfg(*overrides)).training
    assert (settings.later_lr_factor, settings.fix_bn) == (factor, fix_bn)
    runner = build_runner(make_cfg(*overrides, "train.lr=0.02"), tmp_path)
    runner.logger = recorder = LearningRates()
    runner.run()
    assert recorder.lr == pytest.approx({0: 0.02, 1: 0.02 * factor})


def test_pretrained_weights_keep_the_later_tasks_rate():
    cfg = make_cfg("sequence=[imagenet,cub200]", "backbone=alexnet", "backbone.weights=imagenet", *CPU)
    assert spec_of(cfg).training.later_lr_factor == 1.0  # presets give the fine-tuning rate itself


def test_fixed_batchnorm_and_old_heads_stay_as_the_first_task_left_them(tmp_path):
    runner = build_runner(make_cfg("method=finetune", *SEQUENCE), tmp_path)
    first, second = runner.benchmark.tasks
    runner.learn(first)
    norms = [m for m in runner.model.modules() if isinstance(m, _BatchNorm)]
    stats = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
    head = {k: v.clone() for k, v in runner.model.heads[0].state_dict().items()}
    scale = norms[0].weight.detach().clone()
    runner.learn(second)
    assert all(
        torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
        for m, (mean, var) in zip(norms, stats, strict=True)
    )
    assert all(torch.equal(v, runner.model.heads[0].state_dict()[k]) for k, v in head.items())
    assert not torch.equal(norms[0].weight, scale)  # BatchNorm's scale and shift still learn


def evaluation(task_il: list[float]) -> Evaluation:
    return Evaluation(task_il, task_il, 0.0, 0.0, 0.0, None, 0.0)


def test_final_per_task_accuracy_and_drop_by_hand():
    results = Results(2)
    results.add(Task(0, (0, 1), 0, "cub200"), evaluation([90.0]))
    results.add(Task(1, (2, 3), 2, "scenes67"), evaluation([80.0, 70.0]))
    assert results.final_per_task("task_il") == [
        {"name": "cub200", "acc": 80.0, "drop": -10.0},
        {"name": "scenes67", "acc": 70.0, "drop": 0.0},
    ]
    assert results.to_dict()["final_per_task"]["task_il"][0]["drop"] == -10.0


def write_run(folder, seed: int, old: float, new: float, learnt: float) -> None:
    config = {"seed": seed, "sequence": ["imagenet", "cub200"], "paper": None,
              "paper_by_method": {"lwf": {"final_per_task": [54.7, 57.7]}}}  # fmt: skip
    choices = {"method": "lwf", "dataset": "imagenet+cub200", "backbone": "alexnet"}
    results = Results(2, config=config, choices=choices)
    results.add(Task(0, (0,), 0, "imagenet"), evaluation([learnt]))
    results.add(Task(1, (1,), 1, "cub200"), evaluation([old, new]))
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(results.to_dict()))


def test_report_prints_each_task_mean_std_and_drop_beside_the_paper(tmp_path, capsys):
    write_run(tmp_path / "s0", 0, old=50.0, new=60.0, learnt=56.0)
    write_run(tmp_path / "s1", 1, old=52.0, new=62.0, learnt=56.0)
    assert report_main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    with (tmp_path / "report" / "report_tasks.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["task"] for r in rows] == ["0 imagenet", "1 cub200"]
    # old task: 50 and 52 -> 51.00 ± 1.41; drops -6 and -4 -> -5.00 ± 1.41
    assert (rows[0]["accuracy"], rows[0]["drop since learnt"]) == ("51.00 ± 1.41", "-5.00 ± 1.41")
    assert (rows[1]["accuracy"], rows[1]["paper accuracy"]) == ("61.00 ± 1.41", "57.70")
    assert rows[0]["setting"] == "lwf | imagenet+cub200 | alexnet | sequence"
    assert "Each task after the last" in (tmp_path / "report" / "report.md").read_text()


class Crash(Exception):
    pass


def test_a_sequence_crashed_mid_task_resumes_to_the_uninterrupted_numbers(tmp_path):
    from .test_resume import numbers

    setting = ["method=lwf", "method.head_epochs=1", *SEQUENCE, "train.epochs=2", "checkpoint.every_epochs=1"]
    run_cfg = make_cfg(*setting)
    build_runner(run_cfg, tmp_path / "reference").run()
    runner = build_runner(make_cfg(*setting), tmp_path / "crashed")
    crash_on = runner.logger.epoch_end

    def epoch_end(task, epoch, stats):
        crash_on(task, epoch, stats)
        if task.index == 1 and epoch == 0 and runner.checkpointer.position.stage == "main":
            raise Crash  # after the head stage and the first main epoch of the second set

    runner.logger.epoch_end = epoch_end
    with pytest.raises(Crash):
        runner.run()
    build_runner(make_cfg(*setting, "resume=true"), tmp_path / "crashed").run()
    assert numbers(tmp_path / "crashed") == numbers(tmp_path / "reference")
