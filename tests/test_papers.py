"""The paper registry (cl_runner/papers/): every number with its source, keyed by the preset that
runs the paper's protocol; runs never hold them, so a corrected number stops no resume."""

import json

import pytest
from omegaconf import OmegaConf

from cl_runner.errors import ConfigError
from cl_runner.papers import lookup, registry
from cl_runner.report import group_runs
from cl_runner.spec import RunSpec, check_resumable

from .conftest import CONFIGS, TINY, make_cfg, options

CONFIDENCE = ("read in the paper's own table", "quoted by a second source", "uncertain")


@pytest.mark.parametrize("preset", sorted(registry()))
def test_every_row_names_a_preset_a_method_and_where_it_was_read(preset):
    assert preset in options("experiment")
    cfg = make_cfg(f"experiment={preset}", "device=cpu")
    tasks = len(cfg.sequence) if cfg.sequence else cfg.steps + (cfg.init_classes is not None)
    for row in registry()[preset]:
        assert row["method"] in options("method") or row["not_run"]  # a method not here says why
        assert row["source"] and row["confidence"] in CONFIDENCE
        assert row["metric"] in ("top1", "top5", "task_il")
        if row["metric"] == "task_il":  # a sequence: each task's accuracy after the last, and drop
            assert len(row["final_per_task"]) == tasks
            assert len(row.get("drop_per_task") or row["final_per_task"]) == tasks
        elif row.get("per_step"):  # the curve's mean and last entry are the table's numbers
            curve = row["per_step"]
            assert len(curve) == tasks
            assert sum(curve) / len(curve) == pytest.approx(row["avg_incremental_acc"], abs=0.006)
            assert curve[-1] == row["last_acc"]


def test_a_row_is_found_by_preset_method_and_the_values_that_tell_variants_apart():
    der = lookup("der_cifar100_b0_10", "der", {"method.prune": True})
    without = lookup("der_cifar100_b0_10", "der", {"method.prune": False})
    assert (der["avg_incremental_acc"], der["last_acc"], der["metric"]) == (74.64, 64.36, "top1")
    assert (without["avg_incremental_acc"], without["last_acc"]) == (75.36, 65.22)
    assert lookup("der_imagenet100_b0_10", "der", {"method.prune": True})["metric"] == "top5"
    assert lookup("lwf_imagenet_cub", "joint", {})["final_per_task"] == [55.3, 56.6]
    assert lookup("der_cifar100_b0_10", "finetune", {}) == {} and lookup(None, "der", {}) == {}


def metrics(tmp_path, name: str, config: dict, recipe: dict | None, seed: int, last: float) -> None:
    folder = tmp_path / name
    folder.mkdir()
    numbers = {"avg_forgetting": 1, "bwt": -1}
    summary = {"class_il": {"avg_incremental_acc": last + 10, "last_acc": last, **numbers},
               "task_il": {"avg_incremental_acc": 90, "last_acc": 90, **numbers}}  # fmt: skip
    steps = [{"seen_acc": last + 10, "seen_acc_top5": 99}, {"seen_acc": last, "seen_acc_top5": 98}]
    run = {"config": {**config, "seed": seed}, "choices": {"method": "der", "dataset": "cifar100",
           "backbone": "resnet18"}, "finished": True, "summary": summary, "steps": steps}  # fmt: skip
    if recipe is not None:
        run["recipe"] = recipe
    (folder / "metrics.json").write_text(json.dumps(run))


def test_cl_report_takes_the_paper_column_from_the_registry_and_old_runs_from_their_config(tmp_path):
    config = {"steps": 10, "init_classes": None, "method": {"prune": False}}
    for seed in (0, 1):
        metrics(tmp_path, f"new{seed}", config, {"preset": "der_cifar100_b0_10", "recipe": None}, seed, 60)
    old = {**config, "steps": 20, "paper": {"metric": "top1", "avg_incremental_acc": 1.5, "last_acc": 2.5}}
    metrics(tmp_path, "old", old, None, 0, 50)
    groups, skipped = group_runs(sorted(tmp_path.iterdir()))
    papers = {len(g.runs): g.paper for g in groups}
    assert not skipped and papers[2]["avg_incremental_acc"] == 75.36  # DER w/o P's row
    assert papers[1]["avg_incremental_acc"] == 1.5  # what the old run's preset carried


def test_a_run_started_before_the_registry_resumes_and_paper_numbers_are_not_compared(tmp_path):
    """Checkpoints from before the registry hold `paper` keys in their config; a resume now
    compares only what changes results, so it continues (and would whatever the numbers are)."""
    spec = RunSpec.from_config(make_cfg(*TINY), config_root=CONFIGS)
    saved = OmegaConf.to_container(make_cfg(*TINY), resolve=True)
    saved.pop("train")["first_task"]  # keys added since are absent from an old checkpoint...
    saved["train"] = {k: v for k, v in spec.config["train"].items() if k != "first_task"}
    saved["paper"] = {"metric": "top1", "avg_incremental_acc": 74.64, "last_acc": 64.36}
    saved["paper_by_method"] = {}
    check_resumable(saved, spec)  # ... and count as equal at their default
    with pytest.raises(ConfigError, match=r"train.first_task.epochs \(None -> 3\)"):
        longer = make_cfg(*TINY, "train.first_task.epochs=3")
        check_resumable(saved, RunSpec.from_config(longer, config_root=CONFIGS))
