"""`cl-report PATH...`: many runs -> the tables papers print.

Reads run folders (anything holding a metrics.json, multirun folders included), groups runs by
their config without the seed, and reports mean ± std over seeds (sample std, n-1) of average
incremental accuracy, last accuracy, forgetting and BWT, class-IL and task-IL, and the nearest
mean of exemplars' average and last accuracy where runs had a memory. Rows come one table per
protocol (data set and schedule), the methods within it: one paper table each. A preset that
has the paper's numbers in the registry (cl_runner/papers/) adds a paper column and the
difference, computed on top-5 accuracy where the row's `metric: top5` (the ImageNet tables), and
its per-step curve drawn dashed beside ours. A sequence of data sets (the LwF and MAS tables) adds
each task's accuracy after the last task and its drop since it was learnt, beside the paper's.
Writes report.md, report.csv (report_tasks.csv) and report_curves.png; broken or unfinished runs
are listed as skipped with the reason.
"""

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cl_runner.dicts import flatten
from cl_runner.labels import KINDS, NME, method_label, protocol_label
from cl_runner.papers import lookup

METRICS = ("avg_incremental_acc", "last_acc", "avg_forgetting", "bwt")
NME_METRICS = ("avg_incremental_acc", "last_acc")  # iCaRL's classifier beside the network's (PyCIL)
SHORT = {"avg_incremental_acc": "avg", "last_acc": "last", "avg_forgetting": "forgetting", "bwt": "BWT"}
NOT_GROUPED = ("seed", "device", "resume", "logger", "checkpoint")  # keys that never change results


@dataclass
class Group:
    columns: dict[str, str]  # method, dataset, backbone, schedule, and what else tells it apart
    runs: list[dict] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    @property
    def label(self) -> str:
        return " | ".join(v for v in self.columns.values() if v)

    @property
    def seeds(self) -> list:
        return [run["config"].get("seed") for run in self.runs]

    def values(self, kind: str, metric: str) -> list[float]:
        summaries = [run["summary"].get(kind) or {} for run in self.runs]  # nme: only with a memory
        return [s[metric] for s in summaries if s.get(metric) is not None]

    @property
    def paper(self) -> dict:
        """The paper's row for these runs: looked up in the registry (cl_runner/papers/) by the
        preset they were started from and their method; runs from before the registry carried
        their own (`paper`, or the method's row in `paper_by_method`)."""
        run = self.runs[0]
        config, method = run["config"], run.get("choices", {}).get("method")
        row = lookup((run.get("recipe") or {}).get("preset"), method, flatten(config))
        by_method = config.get("paper_by_method") or {}
        return row or config.get("paper") or by_method.get(method) or {}

    @property
    def sequence(self) -> list[str]:
        return self.runs[0]["config"].get("sequence") or []

    def final_per_task(self) -> list[list[str]]:
        """A sequence's tasks after the last: task-IL accuracy and drop since learnt, mean ± std
        over seeds, with the paper's where the preset pins them."""
        paper_acc = self.paper.get("final_per_task") or []
        paper_drop = self.paper.get("drop_per_task") or []
        table = []
        for j, name in enumerate(self.sequence):
            entries = [run["final_per_task"]["task_il"][j] for run in self.runs if "final_per_task" in run]
            acc = mean_std([e["acc"] for e in entries])
            drop = mean_std([e["drop"] for e in entries])
            table.append([self.label, f"{j} {name}", fmt(*acc), fmt(*drop),
                          fmt(paper_acc[j] if j < len(paper_acc) else None, None),
                          fmt(paper_drop[j] if j < len(paper_drop) else None, None)])  # fmt: skip
        return table

    @property
    def curve_key(self) -> str:
        """The per-step accuracy the paper's numbers are comparable with."""
        return "seen_acc_top5" if self.paper.get("metric") == "top5" else "seen_acc"

    def curves(self) -> list[list[float]]:
        return [[s[self.curve_key] for s in run["steps"]] for run in self.runs]

    def comparable(self, metric: str) -> float | None:
        """Our mean over seeds of the paper's metric: average incremental or last accuracy,
        class-IL, top-1 (the summary) or top-5 (from the per-step curve)."""
        if self.curve_key == "seen_acc":
            return mean_std(self.values("class_il", metric))[0]
        per_run = [sum(c) / len(c) if metric == "avg_incremental_acc" else c[-1] for c in self.curves() if c]
        return mean_std(per_run)[0]


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def fmt(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def find_runs(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        if path.is_file() and path.name == "metrics.json":
            found.append(path.parent)
        elif (path / "metrics.json").is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(p.parent for p in path.rglob("metrics.json"))
    return found


def load(folder: Path) -> tuple[dict | None, str | None]:
    """The run's metrics, or None and why it is skipped."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError) as error:
        return None, f"unreadable metrics.json ({type(error).__name__})"
    if not isinstance(metrics, dict) or not {"config", "summary", "steps"} <= metrics.keys():
        return None, "metrics.json lacks config/summary/steps"
    if not metrics.get("finished", False):
        total = len(metrics.get("accuracy_matrix", {}).get("class_il", [[]])[0])
        return None, f"unfinished ({len(metrics['steps'])} of {total} steps)"
    return metrics, None


def grouped(key: str) -> bool:
    """Whether a flattened config key makes runs different experiments. Copies of the run's
    seed inside a node (a `method.seed: ${seed}`, as earlier DER configs had) do not."""
    parts = key.split(".")
    return parts[0] not in NOT_GROUPED and parts[-1] != "seed"


def group_key(config: dict) -> str:
    items = {k: v for k, v in flatten(config).items() if grouped(k)}
    return json.dumps(items, sort_keys=True, default=str)


def columns_of(run: dict) -> dict[str, str]:
    config, choices = run["config"], run.get("choices", {})
    return {
        "method": method_label(choices),
        "dataset": choices.get("dataset", "?"),
        "backbone": choices.get("backbone", "?"),
        "schedule": protocol_label(config),
        "differs": "",
    }


def group_runs(folders: list[Path]) -> tuple[list[Group], list[tuple[Path, str]]]:
    groups: dict[str, Group] = {}
    skipped = []
    for folder in folders:
        run, why = load(folder)
        if run is None:
            skipped.append((folder, why))
            continue
        group = groups.setdefault(group_key(run["config"]), Group(columns_of(run)))
        group.runs.append(run)
        group.paths.append(folder)
    # Same label, different configs: name the keys that differ so rows can be told apart.
    by_label: dict[str, list[Group]] = {}
    for g in groups.values():
        by_label.setdefault(g.label, []).append(g)
    for same in by_label.values():
        if len(same) > 1:
            for g in same:
                g.columns["differs"] = differing(g, same)
    return list(groups.values()), skipped


def differing(group: Group, others: list[Group]) -> str:
    mine = flatten(group.runs[0]["config"])
    keys = sorted(
        k
        for o in others
        for k, v in flatten(o.runs[0]["config"]).items()
        if grouped(k) and not k.startswith("paper") and mine.get(k) != v  # paper numbers follow the rest
    )
    return ", ".join(f"{k}={mine.get(k)}" for k in dict.fromkeys(keys))


PROTOCOL = ("dataset", "schedule")  # one paper table: its methods may differ in backbone (DER's table)


def protocol(group: Group) -> tuple[str, ...]:
    return tuple(group.columns[c] for c in PROTOCOL)


def table_rows(groups: list[Group]) -> tuple[list[str], list[list[str]]]:
    """One row per setting, grouped by protocol and sorted by method within it: each protocol's
    rows are one paper table. Nearest-mean-of-exemplars columns where a run had a memory."""
    header = ["method", "dataset", "backbone", "schedule", "differs", "seeds"]
    header += [f"{kind.replace('_il', '-IL')} {SHORT[m]}" for kind in KINDS for m in METRICS]
    with_nme = any(run["summary"].get(NME) for g in groups for run in g.runs)
    if with_nme:
        header += [f"NME {SHORT[m]}" for m in NME_METRICS]
    with_paper = any(g.paper for g in groups)
    if with_paper:
        header += ["paper avg", "paper last", "Δ avg", "Δ last"]
    table = []
    for g in sorted(groups, key=lambda g: (protocol(g), g.label)):
        row = [*g.columns.values(), str(len(g.runs))]
        row += [fmt(*mean_std(g.values(kind, m))) for kind in KINDS for m in METRICS]
        if with_nme:
            row += [fmt(*mean_std(g.values(NME, m))) for m in NME_METRICS]
        if with_paper:
            paper = g.paper
            ours = {m: g.comparable(m) for m in ("avg_incremental_acc", "last_acc")}
            row += [fmt(paper.get(m), None) for m in ("avg_incremental_acc", "last_acc")]
            row += [
                fmt(ours[m] - paper[m], None) if paper.get(m) is not None and ours[m] is not None else "-"
                for m in ("avg_incremental_acc", "last_acc")
            ]
        table.append(row)
    return header, table


TASK_HEADER = ["setting", "task", "accuracy", "drop since learnt", "paper accuracy", "paper drop"]


def task_rows(groups: list[Group]) -> list[list[str]]:
    """Each task of every sequence run, after the last task (the LwF and MAS tables)."""
    ordered = sorted(groups, key=lambda g: (protocol(g), g.label))
    return [row for g in ordered if g.sequence for row in g.final_per_task()]


def sections(header: list[str], table: list[list[str]]) -> dict[str, list[list[str]]]:
    """The rows of each protocol (data set and schedule), in the order of `table_rows`."""
    where = [header.index(c) for c in PROTOCOL]
    found: dict[str, list[list[str]]] = {}
    for row in table:
        found.setdefault(" | ".join(row[i] for i in where), []).append(row)
    return found


def markdown(header: list[str], table: list[list[str]], skipped: list[tuple[Path, str]], tasks=()) -> str:
    lines = []
    parts = sections(header, table)
    for title, body in parts.items():
        if len(parts) > 1:
            lines += [f"### {title}", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        if len(parts) > 1:
            lines.append("")
    if tasks:
        lines += ["", "Each task after the last (task-IL, %; VOC: mAP):", ""]
        lines += ["| " + " | ".join(TASK_HEADER) + " |", "|" + "---|" * len(TASK_HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in tasks]
    if skipped:
        lines += ["", "Skipped:"] + [f"- {path}: {why}" for path, why in skipped]
    return "\n".join(lines) + "\n"


def plot_curves(groups: list[Group], path: Path) -> None:
    """Seen-class accuracy per step: mean line with a ±1 std band over seeds, one line per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for g in sorted(groups, key=lambda g: g.label):
        curves = g.curves()
        length = min(len(c) for c in curves)
        stats = [mean_std([c[t] for c in curves]) for t in range(length)]
        mean = [m for m, _ in stats]
        std = [s or 0.0 for _, s in stats]
        x = list(range(length))
        top5 = ", top-5" if g.curve_key == "seen_acc_top5" else ""
        (line,) = ax.plot(x, mean, marker="o", label=f"{g.label} (n={len(g.runs)}{top5})")
        ax.fill_between(
            x,
            [m - s for m, s in zip(mean, std, strict=True)],
            [m + s for m, s in zip(mean, std, strict=True)],
            alpha=0.2,
        )
        paper = g.paper.get("per_step")
        if paper:
            ax.plot(
                range(len(paper)), paper, linestyle="--", color=line.get_color(), label=f"{g.label}: paper"
            )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy on all seen classes (%, class-IL; dashed: paper)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(paths: list[Path], out_dir: Path) -> tuple[list[Group], list[tuple[Path, str]]]:
    groups, skipped = group_runs(find_runs(paths))
    header, table = table_rows(groups)
    tasks = task_rows(groups)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(markdown(header, table, skipped, tasks))
    with (out_dir / "report.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *table])
    if tasks:
        with (out_dir / "report_tasks.csv").open("w", newline="") as f:
            csv.writer(f).writerows([TASK_HEADER, *tasks])
    if groups:
        plot_curves(groups, out_dir / "report_curves.png")
    return groups, skipped


def print_table(header: list[str], table: list[list[str]], skipped, tasks=()) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=220)  # files and pipes get the whole row, not 80 columns
    title = "incremental results (mean ± std over seeds, %)"
    parts = sections(header, table)
    tables = [(title + (f": {name}" if len(parts) > 1 else ""), header, body) for name, body in parts.items()]
    tables.append(("each task after the last (task-IL, %)", TASK_HEADER, tasks))
    for title, columns, body in tables:
        if not body:
            continue
        t = Table(title=title, title_justify="left")
        for i, column in enumerate(columns):
            t.add_column(column, justify="left" if i == 0 else "right")
        for row in body:
            t.add_row(*row)
        console.print(t)
    for path, why in skipped:
        console.print(f"[yellow]skipped[/yellow] {path}: {why}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cl-report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders or multirun folders")
    parser.add_argument("--out", type=Path, help="where report.md/csv/png go (default: the first path)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"cl-report: error: no such path: {', '.join(missing)}", file=sys.stderr)
        return 2
    out_dir = args.out or (args.paths[0] if args.paths[0].is_dir() else args.paths[0].parent)
    groups, skipped = report(args.paths, out_dir)
    if not groups:
        print(f"cl-report: error: no finished runs under {', '.join(map(str, args.paths))}", file=sys.stderr)
        for path, why in skipped:
            print(f"  skipped {path}: {why}", file=sys.stderr)
        return 2
    header, table = table_rows(groups)
    print_table(header, table, skipped, task_rows(groups))
    print(f"wrote {out_dir / 'report.md'}, {out_dir / 'report.csv'}, {out_dir / 'report_curves.png'}")
    return 0


def cli() -> None:
    sys.exit(main())
