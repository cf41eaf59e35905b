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
import hashlib
import importlib
import json
import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from cl_runner.dicts import flatten
from cl_runner.labels import KINDS, NME, method_label, protocol_label
from cl_runner.papers import lookup, registry
from cl_runner.stats import ALPHA, confidence_interval, holm, paired

METRICS = ("avg_incremental_acc", "last_acc", "avg_forgetting", "bwt")
NME_METRICS = ("avg_incremental_acc", "last_acc")  # iCaRL's classifier beside the network's (PyCIL)
SHORT = {"avg_incremental_acc": "avg", "last_acc": "last", "avg_forgetting": "forgetting", "bwt": "BWT"}
LABEL = ("method", "dataset", "backbone", "schedule", "differs")  # a row's name in plots and task tables
NOT_GROUPED = ("seed", "device", "resume", "logger", "checkpoint")  # keys that never change results


@dataclass
class Group:
    columns: dict[str, str]  # method, dataset, backbone, schedule, and what else tells it apart
    runs: list[dict] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    @property
    def label(self) -> str:
        """method | data set | backbone | schedule (| what differs): the protocol's other keys
        are in the table's title."""
        return " | ".join(self.columns[c] for c in LABEL if self.columns.get(c))

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

    def by_seed(self, kind: str, metric: str) -> dict:
        """seed -> value, for pairing a method's runs with a baseline's."""
        return {
            run["config"].get("seed"): run["summary"][kind][metric]
            for run in self.runs
            if (run["summary"].get(kind) or {}).get(metric) is not None
        }

    def comparable_runs(self, metric: str) -> list[float]:
        """Each run's value of the paper's metric (top-1 summary or top-5 curve)."""
        if self.curve_key == "seen_acc":
            return self.values("class_il", metric)
        return [sum(c) / len(c) if metric == "avg_incremental_acc" else c[-1] for c in self.curves() if c]

    def params_millions(self) -> list[float]:
        """Each run's parameter count after its last task, in millions."""
        counts = [run["steps"][-1].get("params") for run in self.runs if run["steps"]]
        return [c / 1e6 for c in counts if c is not None]

    def curves(self) -> list[list[float]]:
        return [[s[self.curve_key] for s in run["steps"]] for run in self.runs]

    def comparable(self, metric: str) -> float | None:
        """Our mean over seeds of the paper's metric: average incremental or last accuracy,
        class-IL, top-1 (the summary) or top-5 (from the per-step curve)."""
        return mean_std(self.comparable_runs(metric))[0]


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
    """A row's label columns: the protocol's (`PROTOCOL`: one table each) and what legitimately
    differs between the methods of one table (backbone, epochs, exemplar selection)."""
    config, choices = run["config"], run.get("choices", {})
    memory = config.get("memory") or {}
    train = config.get("train") or {}
    return {
        "method": method_label(choices),
        "dataset": choices.get("dataset", "?"),
        "backbone": choices.get("backbone", "?"),
        "schedule": protocol_label(config),
        "memory": memory_label(memory),
        "class order": order_label(config),
        "validation": validation_label(config),
        "epochs": str(train.get("epochs", "?")),
        "selection": memory.get("selection", "-") if memory_label(memory) != "no memory" else "-",
        "differs": "",
    }


def memory_label(memory: dict) -> str:
    if memory.get("size"):
        return f"{memory['size']} exemplars"
    return f"{memory['per_class']} per class" if memory.get("per_class") else "no memory"


def order_label(config: dict) -> str:
    """The class order: a listed one (named by a short digest), or the seed of the permutation."""
    listed = config.get("class_order")
    if listed:
        digest = hashlib.sha1(json.dumps(list(listed)).encode()).hexdigest()[:6]
        return f"listed ({digest})"
    seed = config.get("class_order_seed")
    return f"seed {seed}" if seed is not None else "0..C-1"


def validation_label(config: dict) -> str:
    """The held-out split of the protocol; a method that holds images out as part of itself
    (BiC's bias stage) runs the protocol without one."""
    held = config.get("validation") or 0
    target = (config.get("method") or {}).get("_target_", "")
    if held and holds_out_itself(target):
        return "none"
    return f"{held}" if held else "none"


def holds_out_itself(target: str) -> bool:
    module, _, name = target.rpartition(".")
    try:
        return bool(getattr(getattr(importlib.import_module(module), name), "needs_validation", False))
    except (ImportError, AttributeError, ValueError):
        return False


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


#: one table each: runs that differ in any of these never share one (the seed and the method's own
#: settings, its backbone, epochs and exemplar selection among them, may differ within it)
PROTOCOL = ("dataset", "schedule", "memory", "class order", "validation")


def protocol(group: Group) -> tuple[str, ...]:
    return tuple(group.columns[c] for c in PROTOCOL)


def table_rows(groups: list[Group], against: str | None = None) -> tuple[list[str], list[list[str]]]:
    """One row per setting, grouped by protocol: each protocol's rows are one paper table, in
    the paper's row order where the preset has paper numbers (then by method), with a row for
    each of the paper's methods that no run here matches (its own numbers only). #P: the
    network's parameters after the last task, in millions; the 95% confidence interval (t) of
    the class-IL average incremental accuracy. Nearest-mean-of-exemplars columns where a run had
    a memory. `against` (a method, or `best`): each row's class-IL average against that row of
    its table over the seeds both ran, paired t-test and Wilcoxon p-values, Holm-corrected over
    the table's comparisons, `*` where the corrected p is below 0.05."""
    header = ["method", "dataset", "backbone", "schedule", "memory", "class order", "validation", "epochs",
              "selection", "differs", "seeds", "#P (M)"]  # fmt: skip
    header += [f"{kind.replace('_il', '-IL')} {SHORT[m]}" for kind in KINDS for m in METRICS]
    header += ["class-IL avg 95% CI"]
    with_nme = any(run["summary"].get(NME) for g in groups for run in g.runs)
    if with_nme:
        header += [f"NME {SHORT[m]}" for m in NME_METRICS]
    with_paper = any(g.paper for g in groups)
    if with_paper:
        header += ["paper avg", "paper last", "Δ avg", "Δ last", "paper #P (M)"]
    if against:
        header += [f"vs {against}: Δ avg", "pairs", "p (t, Holm)", "p (Wilcoxon)"]
    table = []
    for key in sorted({protocol(g) for g in groups}):
        members = [g for g in groups if protocol(g) == key]
        paper_rows = [row for preset in presets_of(members) for row in registry().get(preset, [])]
        order = {id(row): i for i, row in enumerate(paper_rows)}
        tests = comparisons(members, against) if against else {}
        ranked = []  # (place in the paper's table, row): runs the paper lacks go last
        for g in members:
            row = [*g.columns.values(), str(len(g.runs)), fmt(*mean_std(g.params_millions()))]
            row += [fmt(*mean_std(g.values(kind, m))) for kind in KINDS for m in METRICS]
            row.append(fmt_interval(confidence_interval(g.values("class_il", "avg_incremental_acc"))))
            if with_nme:
                row += [fmt(*mean_std(g.values(NME, m))) for m in NME_METRICS]
            if with_paper:
                row += paper_cells(g.paper, {m: g.comparable(m) for m in PAPER_METRICS})
            if against:
                row += comparison_cells(tests.get(id(g)))
            ranked.append((order.get(id(g.paper), len(order)), g.label, row))
        ran = {id(g.paper) for g in members}
        for paper in paper_rows:  # the paper's rows that nothing here ran: its numbers alone
            if id(paper) in ran:
                continue
            why = f" ({paper['not_run']})" if paper.get("not_run") else ""
            columns = {**members[0].columns, "method": paper["method"], "backbone": "-", "epochs": "-",
                       "selection": "-", "differs": f"paper only: {paper['label']}{why}"}  # fmt: skip
            row = [*columns.values(), "0", "-"] + ["-"] * (len(KINDS) * len(METRICS) + 1)
            row += ["-"] * (len(NME_METRICS) if with_nme else 0)
            row += paper_cells(paper, {})
            row += comparison_cells(None) if against else []
            ranked.append((order[id(paper)], "", row))
        table += [row for *_, row in sorted(ranked, key=lambda r: r[:2])]
    return header, table


def baseline_of(members: list[Group], against: str) -> Group | None:
    """The table's row the others are compared with: the named method's (the one without a
    `differs` first), or `best`, the highest mean class-IL average incremental accuracy."""
    if against == "best":
        scored = [(mean_std(g.values("class_il", "avg_incremental_acc"))[0], g) for g in members]
        scored = [(m, g) for m, g in scored if m is not None]
        return max(scored, key=lambda x: x[0])[1] if scored else None
    named = [g for g in members if g.columns["method"] == against]
    return min(named, key=lambda g: (bool(g.columns.get("differs")), g.label)) if named else None


def comparisons(members: list[Group], against: str) -> dict:
    """id(group) -> its paired comparison with the table's baseline, Holm over the table."""
    base = baseline_of(members, against)
    if base is None:
        return {}
    metric = ("class_il", "avg_incremental_acc")
    found = {id(g): paired(g.by_seed(*metric), base.by_seed(*metric)) for g in members if g is not base}
    found = {k: v for k, v in found.items() if v is not None}
    adjusted = holm([c.p_t for c in found.values()])
    return {k: replace(c, p_holm=p) for (k, c), p in zip(found.items(), adjusted, strict=True)}


def comparison_cells(c) -> list[str]:
    if c is None:
        return ["-", "-", "-", "-"]
    star = "*" if c.p_holm is not None and c.p_holm < ALPHA else ""
    return [f"{c.difference:+.2f}", str(c.n), fmt_p(c.p_holm) + star, fmt_p(c.p_wilcoxon)]


def paper_check(groups: list[Group], tolerance: float) -> tuple[int, list[str]]:
    """Rows whose mean lies off the paper's number by more than max(tolerance, 2 std over
    seeds), for average incremental and last accuracy; and how many numbers were checked."""
    checked, off = 0, []
    for g in groups:
        for m in PAPER_METRICS:
            if g.paper.get(m) is None or not g.comparable_runs(m):
                continue
            checked += 1
            mean, std = mean_std(g.comparable_runs(m))
            allowed = max(tolerance, 2 * (std or 0.0))
            if abs(mean - g.paper[m]) > allowed:
                delta = mean - g.paper[m]
                off.append(f"{g.label}: {SHORT[m]} {mean:.2f} against the paper's {g.paper[m]:.2f} "
                           f"(Δ {delta:+.2f}, allowed ±{allowed:.2f}, n={len(g.runs)})")  # fmt: skip
    return checked, off


def fmt_p(p: float | None) -> str:
    return "-" if p is None else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def fmt_interval(interval: tuple[float, float] | None) -> str:
    return "-" if interval is None else f"[{interval[0]:.2f}, {interval[1]:.2f}]"


PAPER_METRICS = ("avg_incremental_acc", "last_acc")


def paper_cells(paper: dict, ours: dict[str, float | None]) -> list[str]:
    """The paper's average and last accuracy, ours minus the paper's, and the paper's #P."""
    cells = [fmt(paper.get(m), None) for m in PAPER_METRICS]
    cells += [
        fmt(ours[m] - paper[m], None) if paper.get(m) is not None and ours.get(m) is not None else "-"
        for m in PAPER_METRICS
    ]
    return cells + [fmt(paper.get("params_m"), None)]


def presets_of(groups: list[Group]) -> list[str]:
    """The presets the runs of one protocol were started from, in first-seen order."""
    found = [(run.get("recipe") or {}).get("preset") for g in groups for run in g.runs]
    return list(dict.fromkeys(p for p in found if p))


TASK_HEADER = ["setting", "task", "accuracy", "drop since learnt", "paper accuracy", "paper drop"]


def task_rows(groups: list[Group]) -> list[list[str]]:
    """Each task of every sequence run, after the last task (the LwF and MAS tables)."""
    ordered = sorted(groups, key=lambda g: (protocol(g), g.label))
    return [row for g in ordered if g.sequence for row in g.final_per_task()]


def sections(header: list[str], table: list[list[str]]) -> dict[str, list[list[str]]]:
    """The rows of each protocol, in the order of `table_rows`, under a title that names it
    (data set, base + steps, memory, class order, validation); the rows keep the other columns."""
    where = [header.index(c) for c in PROTOCOL]
    found: dict[str, list[list[str]]] = {}
    for row in table:
        title = " | ".join(f"{c} {row[i]}" if c in ("class order", "validation") else row[i]
                           for c, i in zip(PROTOCOL, where, strict=True))  # fmt: skip
        found.setdefault(title, []).append([v for i, v in enumerate(row) if i not in where])
    return found


def shown(header: list[str]) -> list[str]:
    """A table's columns under its protocol's title: the protocol's own are in the title."""
    return [c for c in header if c not in PROTOCOL]


def markdown(header: list[str], table: list[list[str]], skipped: list[tuple[Path, str]], tasks=()) -> str:
    lines = []
    columns = shown(header)
    for title, body in sections(header, table).items():
        lines += [f"### {title}", ""]
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
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


def report(
    paths: list[Path], out_dir: Path, against: str | None = None
) -> tuple[list[Group], list[tuple[Path, str]]]:
    groups, skipped = group_runs(find_runs(paths))
    header, table = table_rows(groups, against)
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
    tables = [(f"{title}: {name}", shown(header), body) for name, body in sections(header, table).items()]
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
    parser.add_argument("--against", metavar="METHOD|best",
                        help="compare every row with this method's row of its table (or the best): paired "
                             "t-test and Wilcoxon over the seeds both ran, Holm-corrected")  # fmt: skip
    parser.add_argument("--check", action="store_true",
                        help="exit 1 naming the rows whose mean lies off the paper's number by more "
                             "than max(--tolerance, 2 std over seeds)")  # fmt: skip
    parser.add_argument("--tolerance", type=float, default=1.0, help="points, for --check (default 1.0)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"cl-report: error: no such path: {', '.join(missing)}", file=sys.stderr)
        return 2
    out_dir = args.out or (args.paths[0] if args.paths[0].is_dir() else args.paths[0].parent)
    groups, skipped = report(args.paths, out_dir, args.against)
    if not groups:
        print(f"cl-report: error: no finished runs under {', '.join(map(str, args.paths))}", file=sys.stderr)
        for path, why in skipped:
            print(f"  skipped {path}: {why}", file=sys.stderr)
        return 2
    header, table = table_rows(groups, args.against)
    print_table(header, table, skipped, task_rows(groups))
    print(f"wrote {out_dir / 'report.md'}, {out_dir / 'report.csv'}, {out_dir / 'report_curves.png'}")
    if args.against and not any(baseline_of([g for g in groups if protocol(g) == protocol(h)], args.against)
                                for h in groups):  # fmt: skip
        print(f"cl-report: warning: no table has a {args.against} row to compare with", file=sys.stderr)
    if not args.check:
        return 0
    checked, off = paper_check(groups, args.tolerance)
    if off:
        print(f"paper check: {len(off)} of {checked} numbers off the paper's:")
        for line in off:
            print(f"  {line}")
        return 1
    print(f"paper check: {checked} numbers, all within max({args.tolerance}, 2 std) of the paper's")
    return 0


def cli() -> None:
    sys.exit(main())
