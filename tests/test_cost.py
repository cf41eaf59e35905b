"""The cost beside the accuracy (metrics.json `cost`): parameters at the end and at their peak,
the exemplar memory in images and MB, the images trained on, the time and the device."""

import json

from cl_runner.train import build_runner, train

from .conftest import TINY, make_cfg


def test_cost_counts_images_memory_parameters_and_time(tmp_path):
    runner = build_runner(make_cfg(*TINY, "steps=2", "memory.size=20", "method=finetune"), tmp_path)
    shape = runner.benchmark.train.images.shape  # synthetic: uint8 [N, C, H, W]
    results = train(runner)
    cost = json.loads((tmp_path / "metrics.json").read_text())["cost"]
    # 10 classes of 20 images, 2 tasks of 5 classes, 1 epoch: 100 images, then 100 + 20 exemplars
    assert cost["images_trained"] == 100 + 120
    assert cost["exemplars"] == 20
    assert cost["exemplar_mb"] == 20 * shape[1] * shape[2] * shape[3] / 2**20
    assert cost["params_final"] == results.steps[-1]["params"] == cost["params_peak"]
    wall = sum(sum(step["phase_seconds"].values()) for step in results.steps)
    assert cost["wall_seconds"] == wall and cost["device_hours"] == wall / 3600
    assert cost["devices"] == 1 and cost["device"] not in ("", "unknown")


def test_peak_parameters_are_the_largest_network_before_pruning(tmp_path):
    runner = build_runner(make_cfg(*TINY, "steps=2", "method=der", "memory.size=20"), tmp_path)
    results = train(runner)
    cost = results.cost()
    largest = max(max(s["params"], s.get("params_unpruned") or 0) for s in results.steps)
    assert cost["params_peak"] == largest >= cost["params_final"]
