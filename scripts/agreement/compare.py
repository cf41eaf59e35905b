"""Read the launchers' result JSONs and print the markdown tables of docs/agreement.md.

Files are RESULTS/<pair>-<method>-<seed>-<side>.json, side = theirs | ours | switch (cl_runner
with the switch that reproduces the other code). Per pair: each seed's average incremental and
last accuracy (CNN, NME where there is a memory, task-IL where the toolbox reports it), the mean
and sample std over seeds, ours - theirs, the mean seen-class curves and wall times. The target:
|mean(ours) - mean(theirs)| of the average incremental accuracy <= max(3, 2 SE), SE the standard
error of that difference of means.

Usage: compare.py RESULTS_DIR
"""

import json
import math
import sys
from collections import defaultdict
from pathlib import Path

SIDES = {"theirs": None, "ours": "cl_runner", "switch": "cl_runner + switch"}
METRICS = [("cnn", "CNN"), ("nme", "NME"), ("task_il", "task-IL")]
NOTES = {
    ("pycil", "icarl"): "PyCIL's iCaRL trains with softmax CE + KD (icarl.py:160-167), not the paper's "
    "sigmoid BCE that cl_runner follows: its CNN accuracy is no reference for ours; NME is comparable.",
    ("facil", "icarl"): "FACIL's iCaRL reports the nearest-mean classifier only (icarl.py eval/classify), "
    "and trains with softmax CE + sigmoid-BCE distillation (icarl.py:179-190), not the all-BCE loss.",
    ("pycil", "der"): "PyCIL's DER aligns the classifier's weights after each task (der.py:120-125) "
    "where DER (and cl_runner) re-trains it on balanced data.",
}


def mean_std(values):
    n = len(values)
    if n == 0:
        return None, None
    m = sum(values) / n
    return m, (math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


def fmt(m, s=None):
    if m is None:
        return "–"
    return f"{m:.2f}" if s is None else f"{m:.2f} ± {s:.2f}"


def load(folder: Path):
    runs = defaultdict(lambda: defaultdict(dict))  # (pair, method) -> side -> seed -> result
    for path in sorted(folder.glob("*.json")):
        pair, method, seed, side = path.stem.split("-")
        runs[(pair, method)][side][int(seed)] = json.loads(path.read_text())
    return runs


def value(result, metric, key):
    block = result.get(metric)
    return None if block is None else block[key]


def weight_seed(result) -> int:
    """torch's seed of a run: recorded since PyCIL's runs were seeded per run; PyCIL's own code
    seeds 1 (results written before that), FACIL and cl_runner use the run's seed."""
    return result.get("weight_seed", 1 if result["side"] == "pycil" else result["seed"])


def table(pair, method, sides) -> list[str]:
    lines = [f"### {pair}: {method}", ""]
    if (pair, method) in NOTES:
        lines += [f"*{NOTES[(pair, method)]}*", ""]
    theirs_name = "PyCIL" if pair == "pycil" else "FACIL"
    names = {"theirs": theirs_name, **{k: v for k, v in SIDES.items() if v}}
    present = [
        m
        for m, _ in METRICS
        if any(value(r, m, "avg") is not None for s in sides.values() for r in s.values())
    ]
    head = ["side", "seed"] + [
        f"{label} {k}" for m, label in METRICS if m in present for k in ("avg", "last")
    ]
    head += ["wall s"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    stats = {}
    for side in ("theirs", "ours", "switch"):
        if side not in sides:
            continue
        seeds = sorted(sides[side])
        for seed in seeds:
            r = sides[side][seed]
            row = [names[side], str(seed)]
            row += [fmt(value(r, m, k)) for m in present for k in ("avg", "last")]
            lines.append("| " + " | ".join(row + [f"{r['wall_seconds']:.0f}"]) + " |")
        cells, stats[side] = [], {}
        for m in present:
            for k in ("avg", "last"):
                vals = [value(sides[side][s], m, k) for s in seeds]
                vals = [v for v in vals if v is not None]
                stats[side][(m, k)] = (mean_std(vals), len(vals))
                m_, s_ = mean_std(vals)
                cells.append("–" if not vals else fmt(m_, s_ if len(vals) > 1 else None))
        wall = mean_std([sides[side][s]["wall_seconds"] for s in seeds])[0]
        lines.append(
            "| "
            + " | ".join([f"**{names[side]}**", f"mean ± std ({len(seeds)})"] + cells + [f"{wall:.0f}"])
            + " |"
        )
    verdicts = []
    for side in ("ours", "switch"):
        if side not in stats or "theirs" not in stats:
            continue
        cells = []
        for m in present:
            for k in ("avg", "last"):
                (a, sa), na = stats[side][(m, k)]
                (b, sb), nb = stats["theirs"][(m, k)]
                if a is None or b is None:
                    cells.append("–")
                    continue
                cells.append(f"{a - b:+.2f}")
                if k == "avg":
                    se = math.sqrt(sa**2 / na + sb**2 / nb)
                    limit = max(3.0, 2 * se)
                    ok = abs(a - b) <= limit
                    verdicts.append(
                        f"{names[side]} − {theirs_name}, {dict(METRICS)[m]} avg: {a - b:+.2f} "
                        f"(limit {limit:.2f}, n = {na}/{nb}): **{'met' if ok else 'not met'}**"
                    )
        lines.append("| " + " | ".join([f"{names[side]} − {theirs_name}", ""] + cells + [""]) + " |")
    lines += [""] + [f"- {v}" for v in verdicts]
    draws = {names[k]: sorted({weight_seed(r) for r in sides[k].values()}) for k in SIDES if k in sides}
    lines.append("- weight seeds: " + "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in draws.items()))
    # the mean curves: seen-class accuracy after each task
    lines += ["", "Mean seen-class accuracy after each task:", ""]
    for side in ("theirs", "ours", "switch"):
        for m in present:
            curves = [
                sides[side][s][m]["curve"] for s in sorted(sides.get(side, {})) if sides[side][s].get(m)
            ]
            if curves:
                mean = [sum(c[i] for c in curves) / len(curves) for i in range(len(curves[0]))]
                lines.append(f"- {names[side]} {dict(METRICS)[m]}: " + ", ".join(f"{v:.1f}" for v in mean))
    return lines + [""]


def main() -> None:
    runs = load(Path(sys.argv[1]))
    order = [("pycil", m) for m in ("finetune", "lwf", "icarl", "wa", "ewc", "der")]
    order += [("facil", m) for m in ("lwf", "ewc", "mas", "si", "icarl")]
    for key in order:
        if key in runs and "theirs" in runs[key]:
            print("\n".join(table(*key, runs[key])))


if __name__ == "__main__":
    main()
