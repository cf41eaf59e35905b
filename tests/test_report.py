"""`cl-report` on run folders whose numbers are known."""

import csv
import json

import pytest

from cl_runner.report import main, mean_std


def write_run(
    folder, method, seed, class_il_avg, class_il_last, forgetting=None, paper=None, finished=True, steps=2
):
    folder.mkdir(parents=True)
    summary = {
        "avg_incremental_acc": class_il_avg,
        "last_acc": class_il_last,
        "avg_forgetting": forgetting,
        "bwt": None,
    }
    config = {
        "seed": seed,
        "steps": steps,
        "init_classes": None,
        "train": {"lr": 0.1},
        "sd": {"enabled": False},
        "method": {"seed": seed, "lamb": 1.0},  # a copy of the seed (DER's method.seed) groups too
    }
    if paper:
        config["paper"] = paper
    metrics = {
        "config": config,
        "choices": {"method": method, "dataset": "mnist5k", "backbone": "resnet32"},
        "finished": finished,
        "accuracy_matrix": {
            "class_il": [[90.0, None], [40.0, 95.0]],
            "task_il": [[90.0, None], [80.0, 95.0]],
        },
        "summary": {"class_il": summary, "task_il": {**summary, "last_acc": class_il_last + 10}},
        "steps": [{"seen_acc": class_il_avg + 10}, {"seen_acc": class_il_last}][: steps if finished else 1],
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def multirun(tmp_path):
    root = tmp_path / "multirun"
    write_run(root / "method=finetune,seed=0", "finetune", 0, 50.0, 20.0, forgetting=70.0)
    write_run(root / "method=finetune,seed=1", "finetune", 1, 54.0, 24.0, forgetting=76.0)
    write_run(
        root / "method=joint,seed=0",
        "joint",
        0,
        90.0,
        88.0,
        paper={"avg_incremental_acc": 91.5, "last_acc": 87.0},
    )
    write_run(
        root / "method=joint,seed=1",
        "joint",
        1,
        96.0,
        92.0,
        paper={"avg_incremental_acc": 91.5, "last_acc": 87.0},
    )
    write_run(root / "method=joint,seed=2", "joint", 2, 0.0, 0.0, finished=False)
    (root / "broken").mkdir()
    (root / "broken" / "metrics.json").write_text("{not json")
    return root


def test_means_stds_and_paper_column(multirun, capsys):
    assert main([str(multirun)]) == 0
    rows = {r["method"]: r for r in csv.DictReader((multirun / "report.csv").open())}
    # finetune: avg (50, 54) -> 52 ± 2.83 (sample std: sqrt(8)); last (20, 24) -> 22 ± 2.83
    assert rows["finetune"]["class-IL avg"] == "52.00 ± 2.83"
    assert rows["finetune"]["class-IL last"] == "22.00 ± 2.83"
    assert rows["finetune"]["class-IL forgetting"] == "73.00 ± 4.24"  # (70, 76): sqrt(18)
    assert rows["finetune"]["class-IL BWT"] == "-"
    assert rows["finetune"]["task-IL last"] == "32.00 ± 2.83"
    assert rows["finetune"]["seeds"] == "2" and rows["joint"]["seeds"] == "2"
    # joint: avg (90, 96) -> 93 ± 4.24, paper 91.5 -> +1.50; last (88, 92) -> 90, paper 87 -> +3.00
    assert rows["joint"]["class-IL avg"] == "93.00 ± 4.24"
    assert rows["joint"]["paper avg"] == "91.50" and rows["joint"]["Δ avg"] == "1.50"
    assert rows["joint"]["paper last"] == "87.00" and rows["joint"]["Δ last"] == "3.00"
    assert rows["finetune"]["paper avg"] == "-"
    out = capsys.readouterr().out
    assert "skipped" in out and "unfinished (1 of 2 steps)" in out and "unreadable metrics.json" in out
    md = (multirun / "report.md").read_text()
    # the protocol in the title, the rest of the row under it (epochs not in these configs, no #P)
    assert "### mnist5k | B0 2 steps | no memory | class order 0..C-1 | validation none" in md
    assert "| joint | resnet32 | ? | - |  | 2 | - | 93.00 ± 4.24 |" in md
    assert "Skipped:" in md
    png = (multirun / "report_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_runs_differing_in_a_hidden_key_are_separate_rows(tmp_path):
    write_run(tmp_path / "a", "finetune", 0, 50.0, 20.0)
    write_run(tmp_path / "b", "finetune", 0, 60.0, 30.0)
    cfg_b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    cfg_b["config"]["train"]["lr"] = 0.01
    (tmp_path / "b" / "metrics.json").write_text(json.dumps(cfg_b))
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    rows = list(csv.DictReader((tmp_path / "out" / "report.csv").open()))
    assert sorted(r["differs"] for r in rows) == ["train.lr=0.01", "train.lr=0.1"]


def test_mean_std():
    assert mean_std([1.0]) == (1.0, None)
    assert mean_std([]) == (None, None)
    m, s = mean_std([2.0, 4.0, 6.0])
    assert m == 4.0 and s == pytest.approx(2.0)


def test_nothing_to_report_is_exit_code_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err
    assert main([str(tmp_path / "nope")]) == 2
    assert "no such path" in capsys.readouterr().err


def test_top5_paper_numbers_compare_with_top5_and_the_paper_curve_is_drawn(tmp_path, monkeypatch):
    """ImageNet presets carry top-5 numbers (`metric: top5`): Δ comes from seen_acc_top5, and the
    paper's per-step curve is drawn dashed beside ours in report_curves.png."""
    import matplotlib.figure

    paper = {"avg_incremental_acc": 90.0, "last_acc": 85.0, "metric": "top5", "per_step": [95.0, 85.0]}
    for seed, top5 in ((0, (96.0, 86.0)), (1, (94.0, 88.0))):
        write_run(tmp_path / f"s{seed}", "der", seed, 70.0, 60.0, paper=paper)
        run = json.loads((tmp_path / f"s{seed}" / "metrics.json").read_text())
        for step, value in zip(run["steps"], top5, strict=True):
            step["seen_acc_top5"] = value
        (tmp_path / f"s{seed}" / "metrics.json").write_text(json.dumps(run))
    drawn = []

    def record(fig, path, **kwargs):
        drawn.extend((line.get_linestyle(), list(line.get_ydata())) for line in fig.axes[0].lines)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    (row,) = csv.DictReader((tmp_path / "out" / "report.csv").open())
    # ours, top-5: avg (91, 91) -> 91 vs 90; last (86, 88) -> 87 vs 85 (not the top-1 summary)
    assert row["Δ avg"] == "1.00" and row["Δ last"] == "2.00"
    assert ("-", [95.0, 87.0]) in drawn  # ours, top-5 mean per step
    assert ("--", [95.0, 85.0]) in drawn


def test_checkpoint_settings_do_not_split_a_group(tmp_path):
    """How often a run checkpoints never changes its results (resume is crash-equal)."""
    write_run(tmp_path / "a", "finetune", 0, 50.0, 20.0)
    write_run(tmp_path / "b", "finetune", 1, 60.0, 30.0)
    run_b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    run_b["config"]["checkpoint"] = {"every_epochs": 1, "every_minutes": 10}
    (tmp_path / "b" / "metrics.json").write_text(json.dumps(run_b))
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    (row,) = csv.DictReader((tmp_path / "out" / "report.csv").open())
    assert row["seeds"] == "2" and row["class-IL avg"] == "55.00 ± 7.07"


def test_one_table_per_protocol_methods_within_it_and_nme_columns(tmp_path):
    """Runs of two protocols (2 and 3 steps): report.md has one table for each, its rows the
    methods; runs with a memory add the nearest mean of exemplars' average and last accuracy."""
    root = tmp_path / "runs"
    write_run(root / "icarl2", "icarl", 0, 70.0, 60.0)
    write_run(root / "finetune2", "finetune", 0, 50.0, 20.0)
    write_run(root / "icarl3", "icarl", 0, 72.0, 62.0, steps=3)
    for folder, nme in (("icarl2", (80.0, 75.0)), ("icarl3", (82.0, 77.0)), ("finetune2", None)):
        path = root / folder / "metrics.json"
        metrics = json.loads(path.read_text())
        metrics["config"]["method"]["_target_"] = folder[:-1]  # what tells the methods' configs apart
        if nme:
            metrics["summary"]["nme"] = {"avg_incremental_acc": nme[0], "last_acc": nme[1]}
        path.write_text(json.dumps(metrics))
    assert main([str(root)]) == 0
    text = (root / "report.md").read_text()
    two = text.index("### mnist5k | B0 2 steps")
    three = text.index("### mnist5k | B0 3 steps")
    first_table, second_table = text[two:three], text[three:]
    assert "| finetune |" in first_table and "| icarl |" in first_table
    assert first_table.index("| finetune |") < first_table.index("| icarl |")  # methods in order
    assert "| icarl |" in second_table and "finetune" not in second_table
    rows = list(csv.reader((root / "report.csv").open()))
    header = rows[0]
    nme_avg, nme_last = header.index("NME avg"), header.index("NME last")
    by_label = {(r[0], r[3]): r for r in rows[1:]}
    assert by_label[("icarl", "B0 2 steps")][nme_avg] == "80.00"
    assert by_label[("icarl", "B0 3 steps")][nme_last] == "77.00"
    assert by_label[("finetune", "B0 2 steps")][nme_avg] == "-"  # no memory, no NME


def test_der_table_in_the_papers_row_order_with_params_and_the_rows_nothing_ran(tmp_path):
    """Runs from DER's 10-step preset: WA before DER (the paper's order, not the alphabet), #P
    ours in millions beside the paper's, and every paper row nobody ran (UCIR, RPSNet, ...) with
    the paper's numbers only."""
    for method, prune, params in (("der", True, 9_000_000), ("wa", None, 11_220_000)):
        write_run(tmp_path / method, method, 0, 60.0, 50.0)
        metrics = json.loads((tmp_path / method / "metrics.json").read_text())
        metrics["recipe"] = {"preset": "der_cifar100_b0_10"}
        metrics["steps"][-1]["params"] = params
        if prune is not None:
            metrics["config"]["method"]["prune"] = prune
        (tmp_path / method / "metrics.json").write_text(json.dumps(metrics))
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    rows = list(csv.DictReader((tmp_path / "out" / "report.csv").open()))
    labels = [r["method"] if r["seeds"] != "0" else r["differs"] for r in rows]
    assert labels == [
        "paper only: Joint (bound)",
        "paper only: iCaRL",
        "paper only: UCIR",
        "paper only: BiC",
        "wa",
        "paper only: PODNet",
        "paper only: RPSNet",
        "paper only: DER w/o P",
        "der",
    ]
    wa, der = rows[4], rows[-1]
    assert wa["#P (M)"] == "11.22" and wa["paper #P (M)"] == "11.22"
    assert wa["paper avg"] == "69.46" and wa["Δ avg"] == f"{60.0 - 69.46:.2f}"
    assert der["#P (M)"] == "9.00" and der["paper avg"] == "74.64"
    rps = rows[6]
    assert rps["paper avg"] == "68.60" and rps["paper #P (M)"] == "56.50" and rps["class-IL avg"] == "-"


def test_runs_differing_in_a_protocol_key_never_share_a_table(tmp_path):
    """One result-changing key of the protocol (memory, class order, validation) apart: another
    table; the backbone and epochs (a method's recipe) apart: the same table, a column each."""
    base = {"memory": {"size": 200, "per_class": None, "selection": "herding"}, "class_order_seed": 1993,
            "validation": 0, "train": {"epochs": 5}}  # fmt: skip
    variants = {
        "a": ("finetune", "resnet32", {}),
        "b": ("lwf", "resnet18", {"train": {"epochs": 70}}),  # same table: recipe differences
        "memory": ("mas", "resnet32", {"memory": {"size": 500, "per_class": None, "selection": "herding"}}),
        "order": ("ewc", "resnet32", {"class_order": [1, 0], "class_order_seed": None}),
        "validation": ("si", "resnet32", {"validation": 0.1}),
    }
    for name, (method, backbone, change) in variants.items():
        write_run(tmp_path / name, method, 0, 50.0, 20.0)
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        metrics["config"].update({**base, **change})
        metrics["choices"]["backbone"] = backbone
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    titles = [line for line in md.splitlines() if line.startswith("### ")]
    assert len(titles) == 4, titles
    assert "### mnist5k | B0 2 steps | 200 exemplars | class order seed 1993 | validation none" in titles
    assert any("500 exemplars" in t for t in titles) and any("validation 0.1" in t for t in titles)
    assert any("class order listed (" in t for t in titles)
    shared = md.split("### mnist5k | B0 2 steps | 200 exemplars | class order seed 1993 | validation none")[1]
    shared = shared.split("###")[0]
    assert "| finetune | resnet32 | 5 | herding |" in shared and "| lwf | resnet18 | 70 | herding |" in shared
