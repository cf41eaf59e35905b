"""FACIL's continual hyper-parameter framework (cl_runner/hparams.py): the plasticity search and
the stability decay on hand-made trial scores, then for real on digits without the test set."""

import pytest

from cl_runner.hparams import ContinualSearch, choose, learning_rates
from cl_runner.train import build_runner, train

from .conftest import make_cfg

SEARCH = ContinualSearch()


def test_learning_rates_first_task_then_the_largest_below_its_choice():
    assert learning_rates(SEARCH, None) == [0.5, 0.1, 0.05]
    assert learning_rates(SEARCH, 0.1) == [0.05, 0.01, 0.005]  # strictly below, the 3 largest
    assert learning_rates(SEARCH, 0.5) == [0.1, 0.05, 0.01]


def test_plasticity_then_stability_decay_until_within_the_threshold():
    plastic = {0.1: 70.0, 0.05: 80.0, 0.01: 75.0}  # 0.05 is the plastic optimum: 80
    stable = {10.0: 50.0, 5.0: 60.0, 2.5: 65.0}  # 0.8 x 80 = 64: 2.5 is the first accepted
    tried = []

    def trial(lr, value):
        tried.append((lr, value))
        return plastic[lr] if value == 0.0 else stable[value]

    choice = choose(SEARCH, 1, trial, 0.5, "lamb", 10.0)
    assert (choice.lr, choice.value, choice.plastic_acc) == (0.05, 2.5, 80.0)
    assert tried == [(0.1, 0.0), (0.05, 0.0), (0.01, 0.0), (0.05, 10.0), (0.05, 5.0), (0.05, 2.5)]
    assert choice.as_dict()["lamb"] == 2.5 and len(choice.as_dict()["trials"]) == 6


def test_a_value_never_accepted_decays_once_more_after_the_last_try_as_facil_does():
    search = ContinualSearch(max_searches=3)
    choice = choose(search, 2, lambda lr, value: 90.0 if value == 0.0 else 10.0, 0.1, "c", 8.0)
    assert choice.value == 8.0 * 0.5**3  # tried 8, 4, 2; FACIL's loop then halves once more
    assert [t.get("c") for t in choice.trials if t["phase"] == "stability"] == [8.0, 4.0, 2.0]


def test_the_first_task_searches_the_rate_only():
    choice = choose(SEARCH, 0, lambda lr, value: {0.5: 1.0, 0.1: 3.0, 0.05: 2.0}[lr], None, "lamb", 10.0)
    assert choice.lr == 0.1 and choice.value is None and "lamb" not in choice.as_dict()


def run_search(tmp_path, method, scramble_test=False):
    cfg = make_cfg("dataset=digits", "backbone=resnet20", "train.epochs=1", "device=cpu", "logger=local",
                   "steps=2", f"method={method}", "validation=0.1", "hparams_search=continual",
                   "search.max_searches=3")  # fmt: skip
    runner = build_runner(cfg, tmp_path)
    if scramble_test:  # another test set: the labels rolled by one class
        runner.benchmark.test.labels.copy_((runner.benchmark.test.labels + 1) % 10)
    return train(runner)


@pytest.mark.parametrize("method, start, scramble", [("lwf", 10.0, True), ("ewc", 10000.0, False)])
def test_a_value_per_task_chosen_on_held_out_images_never_the_test_set(tmp_path, method, start, scramble):
    results = run_search(tmp_path / "a", method)
    chosen = results.hparams
    assert [c["task"] for c in chosen] == [0, 1]
    assert chosen[0]["lr"] in (0.5, 0.1, 0.05) and "lamb" not in chosen[0]
    assert chosen[1]["lr"] in learning_rates(SEARCH, chosen[0]["lr"])
    assert chosen[1]["lamb"] in [start * 0.5**k for k in range(4)]  # decayed at most 3 times
    if not scramble:  # one method shows it: the search reads no test image
        return
    again = run_search(tmp_path / "b", method, scramble_test=True)
    assert again.summary()["class_il"] != results.summary()["class_il"]  # the test set did change
    assert again.hparams == chosen  # the choice did not


def test_a_trial_restores_the_method_with_its_references_to_the_live_network(tmp_path):
    """The state before the search is copied, except the network itself: a method's reference
    to a live parameter (a penalty's cached parameter list) must still reach the live one after
    a restore, or its proximal step would move a copy."""
    runner = build_runner(make_cfg("dataset=synthetic", "backbone=resnet20", "device=cpu", "logger=local",
                                   "method=ewc"), tmp_path)  # fmt: skip
    runner.model.add_head(2)
    live = next(runner.model.parameters())
    runner.method.reference = live
    before = runner.snapshot()
    runner.method.reference = None
    runner.restore_snapshot(before)
    assert runner.method.reference is live
    assert before["model"] is not None and before["method"] is not runner.method
