"""What a sweeper optimises: the held-out split's accuracy where `validation` is set, never the
test set's; the held-out split's matrices and summary in metrics.json beside the test set's."""

import json
import logging

import pytest

from cl_runner.errors import ConfigError
from cl_runner.spec import RunSpec
from cl_runner.train import build_runner, objective_value, train

from .conftest import TINY, make_cfg


def fit(tmp_path, *overrides, scramble_test=False):
    runner = build_runner(make_cfg(*TINY, "steps=2", *overrides), tmp_path)
    if scramble_test:  # another test set: the labels rolled by one class
        test = runner.benchmark.test
        test.labels.copy_((test.labels + 1) % 10)
    return train(runner)


def test_metrics_json_gains_the_held_out_splits_matrices_and_summary(tmp_path):
    results = fit(tmp_path, "validation=0.25")
    held = json.loads((tmp_path / "metrics.json").read_text())["validation"]
    assert set(held) == {"accuracy_matrix", "summary"}
    matrix = held["accuracy_matrix"]["class_il"]
    assert len(matrix) == 2 and matrix[0][1] is None and all(0 <= a <= 100 for a in matrix[1])
    assert held["summary"]["class_il"]["avg_incremental_acc"] == pytest.approx(
        sum(results.validation["seen_class_il"]) / 2
    )
    plain = fit(tmp_path / "plain")
    assert "validation" not in json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert not plain.validation


def test_the_objective_follows_the_held_out_split_not_the_test_set(tmp_path):
    a = fit(tmp_path / "a", "validation=0.25")
    b = fit(tmp_path / "b", "validation=0.25", scramble_test=True)
    assert a.summary()["class_il"] != b.summary()["class_il"]  # the test set changed the reported numbers
    assert objective_value(a, "auto", True) == objective_value(b, "auto", True)  # but not the objective
    assert objective_value(a, "auto", True) == a.validation_summary()["class_il"]["avg_incremental_acc"]
    c = fit(tmp_path / "c", "validation=0.35")  # another held-out split: another objective
    assert objective_value(c, "auto", True) != objective_value(a, "auto", True)


def test_without_a_split_a_sweep_is_told_it_tunes_on_the_test_set(tmp_path, caplog):
    results = fit(tmp_path)
    with caplog.at_level(logging.WARNING, logger="cl_runner"):
        value = objective_value(results, "auto", sweeping=True)
    assert value == results.summary()["class_il"]["last_acc"]
    assert "this sweep optimises the test set's last_acc" in caplog.text
    caplog.clear()
    objective_value(results, "auto", sweeping=False)  # a single run: nothing to say
    assert not caplog.text


def test_a_validation_objective_without_a_split_is_a_config_error():
    with pytest.raises(ConfigError, match="objective=validation.last_acc needs a held-out split"):
        RunSpec.from_config(make_cfg(*TINY, "objective=validation.last_acc"))
    with pytest.raises(ConfigError, match="objective='best' is invalid"):
        RunSpec.from_config(make_cfg(*TINY, "objective=best"))
