"""Run cl_runner with the settings of one pair and write its curves in the launchers' JSON shape.

The other toolbox's hyper-parameters for each method are listed here with where they come from;
pycil.py and facil.py record what they actually ran (`settings` in their JSON) and compare.py
checks the two agree. cl_runner runs as `python -m cl_runner.train` from --repo (a plain clone
of the commit under test), one thread.

Usage: ours.py --repo CLONE --pair pycil --method wa --seed 1993 --epochs 2 --out result.json
       [--set method.clip=false ...]   extra overrides: the switches that reproduce the other code
       [--weight-seed W]               `seed=W` (weights, shuffling, distortions) instead of the run's seed
       [--tasks N]                     stop after N tasks (first_task.py's study)
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Clock, scale_milestones, summary, write_result  # noqa: E402

DATA = "/work/scratch/data"

# PyCIL at 87cc411, models/<method>.py module constants (the incremental tasks' schedule; the
# first task is given the same one on both sides). lr 0.1, momentum 0.9, batch 128 everywhere.
PYCIL = {
    "finetune": dict(epochs=80, milestones=[40, 70], wd=2e-4, memory=0, overrides=["method=finetune"]),
    "lwf": dict(
        epochs=250,
        milestones=[60, 120, 180, 220],
        wd=2e-4,
        memory=0,
        overrides=["method=lwf", "method.lamb=3", "method.T=2"],
    ),  # lwf.py: lamda = 3, T = 2
    "icarl": dict(epochs=170, milestones=[80, 120], wd=2e-4, memory=2000, overrides=["method=icarl"]),
    "wa": dict(
        epochs=170, milestones=[60, 100, 140], wd=2e-4, memory=2000, overrides=["method=wa", "method.T=2"]
    ),
    "ewc": dict(
        epochs=180, milestones=[70, 120, 150], wd=2e-4, memory=0, overrides=["method=ewc", "method.lamb=1000"]
    ),  # ewc.py: lamda = 1000
    "der": dict(
        epochs=170,
        milestones=[80, 120, 150],
        wd=2e-4,
        memory=2000,
        overrides=["method=der", "method.prune=false"],
    ),  # PyCIL's DER has no masks: "w/o P"
}
# PyCIL's iCIFAR10 (utils/data.py): crop 4, flip, ColorJitter(brightness=63/255), its std.
PYCIL_DATA = ["dataset.std=[0.2023,0.1994,0.2010]", "++dataset.augment.brightness=0.24705882352941178"]

# FACIL at e09d2c8: main_incremental.py's defaults lr 0.1, momentum 0, weight decay 0; batch 128
# as in its scripts/script_cifar100.sh; its patience scheme replaced by a fixed /3 (its lr_factor)
# at 1/2 and 3/4 of the epochs (facil.py). Approach parameters: src/approach/<method>.py defaults.
FACIL = {
    "lwf": dict(overrides=["method=lwf", "method.lamb=1", "method.T=2"], memory=0),
    # ewc.py: lamb 5000, alpha 0.5 (F = 0.5 F_old + 0.5 F_new, F starting at 0), max_pred labels over
    # all heads. cl_runner's online EWC (F = gamma F_old + F_new) with gamma 0.5 and lamb 2500 is
    # the same penalty after every task: 2500 (0.5 F_old + F_new) = 5000 (0.25 F_old + 0.5 F_new).
    "ewc": dict(
        overrides=[
            "method=ewc",
            "method.lamb=2500",
            "method.fisher_labels=argmax",
            "method.accumulate=online",
            "method.gamma=0.5",
            "method.output=all",
        ],
        memory=0,
    ),
    # mas.py: lamb 1 on sum Omega (theta - theta*)^2 / 2 -> cl_runner's lamb (no /2) = 0.5;
    # alpha 0.5 merge; importance from the outputs of all heads.
    "mas": dict(
        overrides=[
            "method=mas",
            "method.lamb=0.5",
            "method.output=all",
            "method.accumulate=alpha",
            "method.alpha=0.5",
        ],
        memory=0,
    ),
    "si": dict(
        overrides=["method=si", "method.c=0.1", "method.xi=0.1"], memory=0
    ),  # path_integral.py: lamb, damping
    "icarl": dict(overrides=["method=icarl"], memory=2000),
}
FACIL_TRAIN = dict(epochs=100, milestones=[50, 75], wd=0.0, momentum=0.0)


def overrides(
    pair: str, method: str, seed: int, epochs: int, data: str, weight_seed: int | None = None
) -> tuple[list[str], dict]:
    table = PYCIL if pair == "pycil" else FACIL
    spec = dict(table[method])
    if pair == "facil":
        spec.update(FACIL_TRAIN)
    milestones = scale_milestones(spec["milestones"], spec["epochs"], epochs)
    common = [
        "dataset=cifar10",
        f"dataset.root={data}",
        "steps=5",
        "backbone=resnet32",
        f"train.epochs={epochs}",
        f"train.milestones=[{','.join(map(str, milestones))}]",
        "train.lr=0.1",
        f"train.weight_decay={spec['wd']}",
        f"train.momentum={spec.get('momentum', 0.9)}",
        "train.batch_size=128",
        f"memory.size={spec['memory']}",
        "memory.selection=herding",
        f"class_order_seed={seed}",
        f"seed={seed if weight_seed is None else weight_seed}",
        "train.precise_bn=false",
        "device=cpu",
        "logger=local",
        "logger.plots=false",
    ]
    if pair == "pycil":
        common += PYCIL_DATA
    else:  # FACIL's own optimiser: no momentum, no weight decay; its lr_factor 3 as the drop
        common += ["train.gamma=0.3333333333333333"]
    if method == "der":  # the balanced classifier stage (30 epochs, x0.1 at 15) cut like the main one
        stage = max(1, int(30 * epochs / spec["epochs"] + 0.5))
        common += [f"method.balanced_epochs={stage}", f"method.balanced_milestones=[{int(stage / 2 + 0.5)}]"]
    settings = {
        "epochs": epochs,
        "milestones": milestones,
        "weight_decay": spec["wd"],
        "memory": spec["memory"],
    }
    return spec["overrides"] + common, settings


# --trace-task: the method's training_loss is wrapped to record its parts on every batch of that
# task (DER: ce and aux), as pycil.py records PyCIL's cross-entropies.
TRACER = """
import atexit, importlib, json, sys
module, name, task, path = sys.argv[1:5]
cls = getattr(importlib.import_module(module), name)
loss_of, records = cls.training_loss, []
def traced(self, batch, model):
    loss, parts = loss_of(self, batch, model)
    if batch.task.index == int(task):
        records.append({k: float(v) for k, v in {"loss": loss, **parts}.items()})
    return loss, parts
cls.training_loss = traced
atexit.register(lambda: json.dump(records, open(path, "w")))
sys.argv = ["cl-run", *sys.argv[5:]]
from cl_runner.train import main
main()
"""
# --tasks N: the runner's task list cut to its first N (the protocol, class order and seeds unchanged).
FIRST_TASKS = """
import sys
from cl_runner import train
tasks, built = int(sys.argv[1]), train.runner_for
def first_tasks(*args, **kwargs):
    runner = built(*args, **kwargs)
    runner.benchmark.tasks = runner.benchmark.tasks[:tasks]
    return runner
train.runner_for = first_tasks
sys.argv = ["cl-run", *sys.argv[2:]]
train.main()
"""
TRACED = {
    "der": ("cl_runner.methods.der", "DER"),
    "wa": ("cl_runner.methods.wa", "WA"),
    "icarl": ("cl_runner.methods.icarl", "ICaRL"),
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repo", required=True, help="the cl_runner checkout to run")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--pair", required=True, choices=["pycil", "facil"])
    p.add_argument("--method", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--data", default=DATA)
    p.add_argument("--set", nargs="*", default=[], help="extra overrides (a switch)")
    p.add_argument("--rundir", required=True, help="the run folder (hydra.run.dir)")
    p.add_argument(
        "--trace-task", type=int, default=None, help="record every batch's loss parts of this task"
    )
    p.add_argument("--weight-seed", type=int, default=None, help="cl_runner's seed [the run's seed]")
    p.add_argument("--tasks", type=int, default=None, help="stop after this many tasks")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if a.tasks is not None and a.trace_task is not None:
        p.error("--tasks and --trace-task do not combine")
    weight_seed = a.seed if a.weight_seed is None else a.weight_seed
    args, settings = overrides(a.pair, a.method, a.seed, a.epochs, a.data, weight_seed)
    args += a.set + [f"hydra.run.dir={a.rundir}"]
    env = dict(os.environ, PYTHONPATH=str(Path(a.repo).resolve()), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [a.python, "-m", "cl_runner.train", *args]
    trace_path = Path(a.rundir) / "trace.json"
    if a.trace_task is not None:
        command = [a.python, "-c", TRACER, *TRACED[a.method], str(a.trace_task), str(trace_path), *args]
    if a.tasks is not None:
        command = [a.python, "-c", FIRST_TASKS, str(a.tasks), *args]
    Path(a.rundir).mkdir(parents=True, exist_ok=True)
    clock = Clock()
    with open(Path(a.out).with_suffix(".log"), "w") as log:
        subprocess.run(command, cwd=a.repo, env=env, check=True, stdout=log, stderr=subprocess.STDOUT)
    wall = clock.seconds()
    m = json.loads((Path(a.rundir) / "metrics.json").read_text())
    steps = m["steps"]
    nme = [s["seen_acc_nme"] for s in steps] if steps[0].get("seen_acc_nme") is not None else None
    result = {
        "side": "ours",
        "pair": a.pair,
        "method": a.method,
        "seed": a.seed,
        "weight_seed": weight_seed,
        "epochs": a.epochs,
        "switch": a.set,
        "overrides": args,
        "settings": {"run": settings},
        "class_order": [c for s in steps for c in s["classes"]],
        "cnn": summary([s["seen_acc"] for s in steps]),
        "nme": summary(nme),
        "task_il": summary([s["seen_acc_task_il"] for s in steps]),
        "wall_seconds": wall,
        "train_seconds": sum(s["train_seconds"] for s in steps),
    }
    if a.trace_task is not None:
        result["trace"] = {"task": a.trace_task, "batches": json.loads(trace_path.read_text())}
    write_result(a.out, result)
    name = f"ours {a.pair} {a.method} seed {a.seed} {a.set}"
    print(f"{name}: CNN {result['cnn']}, NME {result['nme']}, {wall:.0f} s")


if __name__ == "__main__":
    main()
