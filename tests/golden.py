"""Golden numbers: every method on the embedded digits with a short schedule and a fixed seed.
Each case's accuracy matrices (class-IL, task-IL, NME), parameter counts and the mean of every
loss part in every epoch are stored in tests/golden.json and compared by tests/test_golden.py.

    python -m tests.golden                 # run every case, print what moved; exit 1 if anything did
    python -m tests.golden --update        # rewrite tests/golden.json (say why in the commit)
    python -m tests.golden lwf der         # only these cases
    python -m tests.golden --perturb       # each loss weight x1.1: does the comparison catch it?
    python -m tests.golden --jobs 1        # one case at a time (default: one process per core, up to 2)

The runs compute in float64. In float32 a class-incremental run is chaotic: the last-bit
differences between two CPUs' kernels (AVX2 against AVX-512) grow a thousandfold within five
SGD steps at these learning rates and move accuracies by tens of points by the last task, so no
tolerance could both absorb them and catch a changed loss. In float64 the same runs agree to
1e-7 across vector ISAs and thread counts (docs/golden.md has the measurements).

Each case computes on one thread, in a process of its own (`--jobs` of them side by side), so
the numbers do not depend on how many cores a machine has. On the machine type they were made
on (same CPU model, vector ISA and torch version: `fingerprint()`) they must be equal to the last
bit; elsewhere within `TOLERANCE`.
`--perturb` shows that a 10% change of each method's loss weights moves numbers far outside it.
"""

import argparse
import json
import math
import multiprocessing
import os
import platform
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

GOLDEN = Path(__file__).with_name("golden.json")

# A short schedule on the 8x8 digits: 5 tasks of 2 classes, 2 epochs each, ResNet-20.
BASE = [
    "dataset=digits", "backbone=resnet20", "train.epochs=2", "device=cpu", "seed=0",
    "logger=local", "logger.plots=false", "checkpoint.every_minutes=0",
]  # fmt: skip
MEMORY = ["memory.size=100"]
CASES: dict[str, list[str]] = {
    "finetune": ["method=finetune"],
    "finetune_memory": ["method=finetune", *MEMORY],
    "joint": ["method=joint"],
    "lwf": ["method=lwf"],
    "lwf_sd": ["method=lwf", "addon=sd"],
    "sd": ["method=sd"],
    "mas": ["method=mas"],
    "ewc": ["method=ewc"],
    "si": ["method=si"],
    "icarl": ["method=icarl", *MEMORY],
    "wa": ["method=wa", *MEMORY],
    "der": ["method=der", *MEMORY, "method.balanced_epochs=2"],
    "der_wo_p": ["method=der", "method.prune=false", *MEMORY, "method.balanced_epochs=2"],
    "feature_extraction": ["method=feature_extraction", "method.hidden=64"],
    "finetune_fc": ["method=finetune_fc"],
    "imm": ["method=imm"],
    "imm_drop": ["method=imm", "method.drop=0.5"],
    "ebll": ["method=ebll", "method.ae_epochs=2"],
    "rpsnet": [
        "method=rpsnet",
        "backbone=rpsnet",
        "backbone.width=16",
        "backbone.modules=3",
        *MEMORY,
        "validation=10",
        "method.candidates=2",
    ],
    "ucir": ["method=ucir", "memory.per_class=10", "method.cbf_epochs=2"],
    "bic": ["method=bic", *MEMORY, "validation=10", "method.val_per_class=10", "method.bias_epochs=2"],
    "podnet": ["method=podnet", "memory.per_class=10", "method.cbf_epochs=2", "method.proxies=3"],
}

# Each method's loss weights: the default, and the override that moves it by 10% (--perturb).
PERTURBATIONS: dict[str, list[str]] = {
    "lwf": ["method.lamb=1.1"],
    "lwf_sd": ["addon.kl_weight=1.1", "addon.mmd_weight=1.1"],
    "sd": ["addon.kl_weight=1.1", "addon.mmd_weight=1.1"],
    "mas": ["method.lamb=1.1"],
    "ewc": ["method.lamb=5500"],
    "si": ["method.c=0.11"],
    "wa": ["method.T=2.2"],
    "der": ["method.aux_weight=1.1", "method.sparsity_weight=1.1"],
    "der_wo_p": ["method.aux_weight=1.1"],
    "feature_extraction": ["method.lr_scale=5.5"],
    "imm": ["method.l2=0.011"],
    "imm_drop": ["method.drop=0.55"],
    "ebll": ["method.code_alpha=0.11", "method.ae_alpha=0.11", "method.lamb=1.1"],
    "rpsnet": ["method.rigidness=2.75", "method.T=2.2"],
    "ucir": ["method.lambda_base=5.5", "method.mr_weight=1.1"],
    "bic": ["method.T=2.2", "method.beta_penalty=0.055"],
    "podnet": ["method.spatial_weight=3.3", "method.flat_weight=1.1"],
}

# Elsewhere than on the fingerprint's machine type: accuracies within one test image of a digits
# task (1.4 points), loss means and parameter counts within these relative differences. The
# largest difference measured (other ISA, other MKL code path, 1 thread): 1e-7 in DER's losses.
TOLERANCE = {"accuracy": 1.5, "loss": 1e-5, "params": 1e-3}


THREADS = 1  # per case: the threads that split reductions decide last bits too


def fingerprint() -> dict:
    """What decides the last bits of a CPU run: the CPU, the kernels torch picks for it, the
    torch build and the threads that split reductions (`THREADS`, in every case's process)."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
        model = names[0] if names else model
    return {
        "cpu": model,
        "isa": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "threads": THREADS,
    }


def one_thread() -> None:
    """Each worker process: its case on one thread, as `fingerprint()` says."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    torch.set_num_threads(THREADS)


def run_all(jobs: list[tuple[str, list[str]]], workers: int):
    """`run_case(name, extra)` for each job in its own worker process, in the jobs' order."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state from the caller
    with ProcessPoolExecutor(max(1, min(workers, len(jobs))), context, initializer=one_thread) as pool:
        yield from pool.map(run_case, *zip(*jobs, strict=True))


def run_case(name: str, extra: list[str] = ()) -> dict:
    """One case's numbers: accuracy matrices, parameters per step, loss means per epoch."""
    from cl_runner.loggers import Logger, Loggers
    from cl_runner.train import build_runner, train

    from .conftest import make_cfg

    cfg = make_cfg(*BASE, *CASES[name], *extra)
    epochs: list[dict] = []
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # weights, inputs and losses: see the module's docstring
    try:
        with tempfile.TemporaryDirectory() as folder:
            runner = build_runner(cfg, folder)

            class EpochMeans(Logger):
                stage = "main"

                def stage_start(self, task, stage, epochs, batches_per_epoch):
                    self.stage = stage

                def epoch_end(self, task, epoch, stats):
                    parts = {k: v for k, v in stats.items() if k not in ("images_per_s", "lr")}
                    epochs.append({"task": task.index, "stage": self.stage, "epoch": epoch, **parts})

            runner.logger = Loggers(EpochMeans())  # no console tables: the numbers are what counts
            results = train(runner).to_dict()
    finally:
        torch.set_default_dtype(dtype)
    return {
        "overrides": [*CASES[name], *extra],
        "accuracy_matrix": results["accuracy_matrix"],
        "params": [step["params"] for step in results["steps"]],
        "losses": epochs,
    }


EPOCH = ("task", "stage", "epoch")  # where an epoch's loss means were taken


def differences(expected: dict, actual: dict, exact: bool) -> list[str]:
    """What moved between two cases' numbers, one line each (empty: nothing)."""
    moved = []

    def check(where: str, a, b, kind: str):
        if a is None or b is None:
            if a != b:
                moved.append(f"{where}: {a} -> {b}")
            return
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            ok = True
        elif exact:
            ok = a == b
        elif kind == "loss":
            ok = math.isclose(a, b, rel_tol=TOLERANCE["loss"], abs_tol=1e-6)
        else:
            ok = abs(a - b) <= TOLERANCE[kind] * (abs(a) if kind == "params" else 1)
        if not ok:
            moved.append(f"{where}: {a!r} -> {b!r}")

    kinds = sorted(expected["accuracy_matrix"].keys() | actual["accuracy_matrix"].keys())
    for kind in kinds:
        a_rows, b_rows = expected["accuracy_matrix"].get(kind), actual["accuracy_matrix"].get(kind)
        if a_rows is None or b_rows is None:
            moved.append(f"accuracy_matrix.{kind}: {'missing' if b_rows is None else 'new'}")
            continue
        for t, (a_row, b_row) in enumerate(zip(a_rows, b_rows, strict=True)):
            for j, (a, b) in enumerate(zip(a_row, b_row, strict=True)):
                check(f"{kind}[{t}][{j}]", a, b, "accuracy")
    for t, (a, b) in enumerate(zip(expected["params"], actual["params"], strict=True)):
        check(f"params[{t}]", a, b, "params")
    if len(expected["losses"]) != len(actual["losses"]):
        moved.append(f"losses: {len(expected['losses'])} epochs -> {len(actual['losses'])}")
        return moved
    for a, b in zip(expected["losses"], actual["losses"], strict=True):
        where = f"task {a['task']} {a['stage']} epoch {a['epoch']}"
        if any(a[key] != b[key] for key in EPOCH):
            moved.append(f"{where}: is now task {b['task']} {b['stage']} epoch {b['epoch']}")
            continue
        for part in sorted((a.keys() | b.keys()) - set(EPOCH)):
            check(f"{where} {part}", a.get(part), b.get(part), "loss")
    return moved


def load() -> dict:
    return json.loads(GOLDEN.read_text())


def compare(name: str, actual: dict, golden: dict | None = None) -> list[str]:
    """Exactly on the machine type the golden numbers were made on, within TOLERANCE elsewhere."""
    golden = golden or load()
    exact = golden["fingerprint"] == fingerprint()
    return differences(golden["cases"][name], actual, exact)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.golden", description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", help=f"cases to run (default: all): {', '.join(CASES)}")
    parser.add_argument("--update", action="store_true", help="rewrite tests/golden.json with these numbers")
    parser.add_argument("--perturb", action="store_true", help="each loss weight x1.1, with the tolerance")
    parser.add_argument("--out", type=Path, help="write the numbers to this JSON file as well")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="cases side by side")
    args = parser.parse_args(argv)
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    names = args.cases or list(CASES)
    golden = load() if GOLDEN.is_file() else {"fingerprint": None, "cases": {}}
    if args.perturb:
        return perturb([n for n in names if n in PERTURBATIONS], golden, args.jobs)
    numbers, moved_cases = {}, 0
    exact = golden["fingerprint"] == fingerprint()
    for name, result in zip(names, run_all([(name, []) for name in names], args.jobs), strict=True):
        numbers[name] = result
        if name not in golden["cases"]:
            print(f"{name}: new case")
            moved_cases += 1
            continue
        moved = differences(golden["cases"][name], numbers[name], exact)
        moved_cases += bool(moved)
        print(f"{name}: {'unchanged' if not moved else f'{len(moved)} numbers moved'}"
              f" ({'exact' if exact else 'within tolerance'})")  # fmt: skip
        for line in moved[:20]:
            print(f"  {line}")
    if args.out:
        args.out.write_text(json.dumps({"fingerprint": fingerprint(), "cases": numbers}, indent=1))
    if args.update:
        if golden["fingerprint"] not in (None, fingerprint()) and set(names) != set(CASES):
            print("error: the stored numbers are another machine type's: update every case", file=sys.stderr)
            return 2
        golden = {"fingerprint": fingerprint(), "cases": {**golden["cases"], **numbers}}
        golden["cases"] = {name: golden["cases"][name] for name in CASES if name in golden["cases"]}
        GOLDEN.write_text(json.dumps(golden, indent=1) + "\n")
        print(f"wrote {GOLDEN}: give the reason for the moved numbers in the commit message")
        return 0
    return 1 if moved_cases else 0


def perturb(names: list[str], golden: dict, workers: int) -> int:
    """Each loss weight moved by 10%, compared as on another machine type (with TOLERANCE)."""
    missed = 0
    jobs = [(name, [override]) for name in names for override in PERTURBATIONS[name]]
    for (name, (override,)), result in zip(jobs, run_all(jobs, workers), strict=True):
        moved = differences(golden["cases"][name], result, exact=False)
        missed += not moved
        verdict = "caught" if moved else "MISSED"
        print(f"{name} {override}: {verdict} ({len(moved)} numbers outside the tolerance)")
        for line in moved[:3]:
            print(f"  {line}")
    return 1 if missed else 0


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "disabled")
    sys.exit(main())
