"""The first task alone, many weight draws on both sides: is its accuracy one distribution?

Task 0 is the same plain cross-entropy training in every PyCIL pair, so a gap there is either a
difference of the two codes' training (data pipeline, initialisation, optimiser) or the spread
of one run. This trains PyCIL's and cl_runner's first task with the pair's settings for every
class order (SEEDS) and weight seeds 1..N on both sides (`--weight-seed`; PyCIL's own code
always seeds 1), and prints each side's accuracies and their means.

Usage: first_task.py PYCIL_CHECKOUT [--method finetune] [--weights 5] [--jobs 2]
Results: $OUT/first_task/<side>-<method>-<order>-<weight seed>.json (kept: a rerun continues).
"""

import argparse
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import SEEDS  # noqa: E402
from compare import mean_std  # noqa: E402


def run(side: str, checkout: str, method: str, order: int, weight: int, folder: Path) -> Path:
    out = folder / f"{side}-{method}-{order}-{weight}.json"
    if out.exists():
        return out
    common = ["--method", method, "--seed", str(order), "--weight-seed", str(weight), "--epochs", "4"]
    common += ["--tasks", "1", "--data", os.environ.get("DATA", "/work/scratch/data"), "--out", str(out)]
    if side == "pycil":
        python = os.environ.get("THEIR_PY", "python3")
        command = [python, str(HERE / "pycil.py"), "--repo", checkout]
        command += ["--workdir", str(folder / "pycil_work")]
    else:
        repo = os.environ.get("OURS", str(HERE.parents[1]))
        python = os.environ.get("OURS_PY", f"{repo}/.venv/bin/python")
        rundir = folder / "runs" / out.stem
        command = [python, str(HERE / "ours.py"), "--repo", repo, "--python", python, "--pair", "pycil"]
        command += ["--rundir", str(rundir)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(out.with_suffix(".log"), "w") as log:
        subprocess.run(command + common, env=env, check=True, stdout=log, stderr=subprocess.STDOUT)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("pycil")
    p.add_argument("--method", default="finetune")
    p.add_argument("--weights", type=int, default=5, help="weight seeds 1..N on each side")
    p.add_argument("--jobs", type=int, default=1, help="trainings side by side (one thread each)")
    a = p.parse_args()
    folder = Path(os.environ.get("OUT", "/work/scratch/agreement")) / "first_task"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(side, o, w) for o in SEEDS for w in range(1, a.weights + 1) for side in ("pycil", "ours")]
    with ThreadPoolExecutor(a.jobs) as pool:
        paths = list(pool.map(lambda j: run(j[0], a.pycil, a.method, j[1], j[2], folder), jobs))
    first = {}  # (side, order, weight seed) -> task 0's accuracy
    for job, path in zip(jobs, paths, strict=True):
        first[job] = json.loads(path.read_text())["cnn"]["curve"][0]
    weights = range(1, a.weights + 1)
    print(f"Task 0 accuracy ({a.method}'s settings), weight seeds {weights.start}-{weights.stop - 1}\n")
    print("| class order (seed) | PyCIL | cl_runner |\n| --- | --- | --- |")
    for o in SEEDS:
        cells = [", ".join(f"{first[(s, o, w)]:.1f}" for w in weights) for s in ("pycil", "ours")]
        print(f"| {o} | {cells[0]} | {cells[1]} |")
    sides = {s: [first[(s, o, w)] for o in SEEDS for w in weights] for s in ("pycil", "ours")}
    (mp, sp), (mo, so) = mean_std(sides["pycil"]), mean_std(sides["ours"])
    se = math.sqrt((sp**2 + so**2) / len(sides["ours"]))
    print(f"| all ({len(sides['ours'])} runs) | {mp:.1f} ± {sp:.1f} | {mo:.1f} ± {so:.1f} |")
    low = {s: sum(v < 70 for v in sides[s]) for s in sides}
    print(f"\ncl_runner − PyCIL: {mo - mp:+.1f} (SE {se:.1f}); ", end="")
    print(f"below 70%: PyCIL {low['pycil']} runs, cl_runner {low['ours']}.")


if __name__ == "__main__":
    main()
