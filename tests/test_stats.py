"""cl-report's statistics (cl_runner/stats.py) against hand-computed values and scipy, and the
report's --against and --check on written runs."""

import csv
import json
import math

import pytest
from scipy import stats

from cl_runner.report import main
from cl_runner.stats import confidence_interval, holm, paired


def test_confidence_interval_is_mean_plus_minus_t_s_over_root_n():
    # [1, 2, 3]: mean 2, s = 1, t_{0.975, 2} = 4.302653 -> 2 ± 4.302653 / sqrt(3) = 2 ± 2.484138
    low, high = confidence_interval([1.0, 2.0, 3.0])
    assert low == pytest.approx(2 - 2.484138, abs=1e-6) and high == pytest.approx(2 + 2.484138, abs=1e-6)
    assert (low, high) == pytest.approx(stats.t.interval(0.95, 2, loc=2.0, scale=1 / math.sqrt(3)))
    assert confidence_interval([5.0]) is None


def test_paired_tests_over_the_seeds_both_ran():
    method = {0: 10.0, 1: 12.0, 2: 15.0, 3: 99.0}  # seed 3: the baseline lacks it, so no pair
    baseline = {0: 8.0, 1: 9.0, 2: 11.0}
    c = paired(method, baseline)
    # differences 2, 3, 4: mean 3, sd 1, t = 3 sqrt(3) = 5.196; df 2: p = 1 - t / sqrt(2 + t^2)
    assert c.n == 3 and c.difference == pytest.approx(3.0)
    assert c.p_t == pytest.approx(1 - math.sqrt(27) / math.sqrt(29), rel=1e-9)
    assert c.p_t == pytest.approx(stats.ttest_rel([10, 12, 15], [8, 9, 11]).pvalue)
    assert c.p_wilcoxon == pytest.approx(0.25)  # exact: 2 of 2^3 sign patterns as extreme
    same = paired({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})
    assert same.p_t is None and same.p_wilcoxon is None and same.difference == 0
    assert paired({0: 1.0}, {1: 1.0}) is None


def test_holm_multiplies_the_kth_smallest_by_m_minus_k_plus_one_and_keeps_order():
    # sorted 0.01, 0.03, 0.04 -> 0.03, 0.06, max(0.06, 0.04) = 0.06; None stays out of m
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert holm([0.6, 0.5]) == [1.0, 1.0]


def write(folder, method, seed, avg, last=50.0, preset=None):
    folder.mkdir(parents=True)
    summary = {"avg_incremental_acc": avg, "last_acc": last, "avg_forgetting": None, "bwt": None}
    metrics = {
        "config": {"seed": seed, "steps": 2, "init_classes": None, "method": {"_target_": method}},
        "choices": {"method": method, "dataset": "cifar100", "backbone": "resnet18"},
        "recipe": {"preset": preset},
        "finished": True,
        "accuracy_matrix": {"class_il": [[90.0, None], [40.0, 95.0]]},
        "summary": {"class_il": summary, "task_il": summary},
        "steps": [{"seen_acc": avg}, {"seen_acc": last}],
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_against_a_baseline_pairs_seeds_and_marks_significance(tmp_path):
    for seed, (ft, good, same) in enumerate([(50.0, 60.0, 50.5), (52.0, 63.0, 51.0), (51.0, 61.5, 51.4)]):
        write(tmp_path / f"ft{seed}", "finetune", seed, ft)
        write(tmp_path / f"good{seed}", "lwf", seed, good)
        write(tmp_path / f"same{seed}", "mas", seed, same)
    assert main([str(tmp_path), "--out", str(tmp_path / "out"), "--against", "finetune"]) == 0
    rows = {r["method"]: r for r in csv.DictReader((tmp_path / "out" / "report.csv").open())}
    assert rows["finetune"]["vs finetune: Δ avg"] == "-"
    lwf, mas = rows["lwf"], rows["mas"]
    assert lwf["vs finetune: Δ avg"] == "+10.50" and lwf["pairs"] == "3"
    p_lwf = stats.ttest_rel([60, 63, 61.5], [50, 52, 51]).pvalue
    p_mas = stats.ttest_rel([50.5, 51, 51.4], [50, 52, 51]).pvalue
    holm_lwf, holm_mas = holm([p_lwf, p_mas])
    assert lwf["p (t, Holm)"] == f"{holm_lwf:.3f}*" and holm_lwf < 0.05  # significant after Holm
    assert mas["p (t, Holm)"] == f"{holm_mas:.3f}" and holm_mas > 0.05
    assert lwf["p (Wilcoxon)"] == "0.250"
    low, high = confidence_interval([60.0, 63.0, 61.5])
    assert lwf["class-IL avg 95% CI"] == f"[{low:.2f}, {high:.2f}]"


def test_check_exits_1_naming_the_rows_off_the_paper_and_0_when_all_agree(tmp_path, capsys):
    # DER's 10-step preset: WA's paper avg 69.46, last 53.78
    for seed, avg in enumerate((69.0, 70.0, 69.5)):
        write(tmp_path / "near" / str(seed), "wa", seed, avg, last=53.5, preset="der_cifar100_b0_10")
    assert main([str(tmp_path / "near"), "--out", str(tmp_path / "o1"), "--check"]) == 0
    assert "paper check: 2 numbers, all within" in capsys.readouterr().out
    for seed, avg in enumerate((60.0, 61.0, 60.5)):  # 9 points below, spread 0.5: off
        write(tmp_path / "far" / str(seed), "wa", seed, avg, last=53.5, preset="der_cifar100_b0_10")
    assert main([str(tmp_path / "far"), "--out", str(tmp_path / "o2"), "--check"]) == 1
    out = capsys.readouterr().out
    assert "paper check: 1 of 2 numbers off" in out and "avg 60.50 against the paper's 69.46" in out
    assert "last" not in out.split("paper check:")[1]  # 53.5 against 53.78: within the tolerance
