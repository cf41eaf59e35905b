"""Run one PyCIL method on the CIFAR-format MNIST subset and write its curves as JSON.

PyCIL keeps each method's hyper-parameters as module constants in models/<method>.py; this
launcher reads them there, cuts the epochs (milestones scaled in proportion) and gives the first
task the later tasks' schedule (cl_runner has one schedule for every task). Everything else is
PyCIL's own code, patched only where it cannot run here:

- iCIFAR10.download_data reads our files (torchvision's CIFAR10 with its md5 check off);
- trainer._set_device gives the CPU (its own parser turns "-1" into cuda:-1);
- trainer._set_random seeds torch with the run's seed (--weight-seed): PyCIL's own always seeds 1
  (its seed list sets the class order only), which makes every seed of a pair one draw of the
  weights and the shuffling; cl_runner's seed sets both, so each side's seeds are now alike;
- the exemplar quota per class is capped at the class's size (their herding loop fails past it);
- DataLoaders run in the main process (num_workers=0): worker processes would add CPU cores
  that the 1-thread wall-time comparison does not allow;
- BaseLearner.eval_task is wrapped to record the CNN and NME top-1 after each task, and its
  top-k cut to the classes seen (PyCIL's top-5 fails in torch.topk with 2 classes; top-1,
  the only number used here, is unchanged);
- with --trace-task T, F.cross_entropy in the method's module is wrapped to record every
  loss it computes during task T (DER: the classifier's, then the auxiliary one's, per batch);
- with --tasks N, the run stops after the N-th task's evaluation (first_task.py's study).

Usage: pycil.py --repo PyCIL --method wa --seed 1993 --epochs 3 --out result.json
"""

import argparse
import os
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLASSES_PER_TASK, Clock, one_thread, scale_milestones, summary, write_result  # noqa: E402

DATA = "/work/scratch/data"


class Enough(Exception):
    """--tasks N: the N-th task has been evaluated."""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repo", required=True)
    p.add_argument("--method", required=True, choices=["finetune", "lwf", "icarl", "wa", "ewc", "der"])
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--data", default=DATA, help="folder holding cifar-10-batches-py/")
    p.add_argument("--workdir", default="/work/scratch/agreement/pycil_work", help="PyCIL writes logs/ here")
    p.add_argument("--trace-task", type=int, default=None, help="record every cross-entropy of this task")
    p.add_argument("--weight-seed", type=int, default=None, help="torch's seed [the run's]; 1: PyCIL's")
    p.add_argument("--tasks", type=int, default=None, help="stop after this many tasks")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    weight_seed = a.seed if a.weight_seed is None else a.weight_seed
    out = str(Path(a.out).resolve())  # before the chdir below
    clock = Clock()
    one_thread()

    repo = str(Path(a.repo).resolve())
    sys.path.insert(0, repo)
    Path(a.workdir).mkdir(parents=True, exist_ok=True)
    os.chdir(a.workdir)  # PyCIL writes logs/<method>/... relative to the working directory

    import importlib

    import numpy as np
    import torch
    import torch.nn.functional as F
    import torchvision.datasets.cifar as tv_cifar
    import trainer
    import utils.data
    from models import base
    from torch.utils.data import DataLoader
    from torchvision.datasets import CIFAR10

    # --- the data: our files through PyCIL's own iCIFAR10 (transforms and all) -----------------
    tv_cifar.check_integrity = lambda *args, **kwargs: True  # our files are not the official archive

    def download_data(self):
        train, test = (
            CIFAR10(a.data, train=True, download=False),
            CIFAR10(a.data, train=False, download=False),
        )
        self.train_data, self.train_targets = train.data, np.array(train.targets)
        self.test_data, self.test_targets = test.data, np.array(test.targets)

    utils.data.iCIFAR10.download_data = download_data

    # --- the method's own constants, epochs cut, first task = later tasks ------------------------
    module = importlib.import_module(f"models.{a.method}")
    full = {
        "epochs": module.epochs,
        "milestones": list(module.milestones),
        "lr": module.lrate,
        "weight_decay": module.weight_decay,
        "batch_size": module.batch_size,
        "init_epoch": module.init_epoch,
        "init_milestones": list(module.init_milestones),
        "init_lr": module.init_lr,
        "init_weight_decay": module.init_weight_decay,
    }
    for name in ("T", "lamda", "fishermax"):
        if hasattr(module, name):
            full[name] = getattr(module, name)
    milestones = scale_milestones(module.milestones, module.epochs, a.epochs)
    module.epochs, module.milestones = a.epochs, milestones
    module.init_epoch, module.init_milestones = a.epochs, milestones
    module.init_lr, module.init_weight_decay = module.lrate, module.weight_decay
    module.init_lr_decay = module.lrate_decay
    module.num_workers = 0

    def main_process_loader(*args, **kwargs):
        kwargs["num_workers"] = 0
        return DataLoader(*args, **kwargs)

    for m in (base, module):
        m.DataLoader = main_process_loader

    trainer._set_device = lambda args: args.update(device=[torch.device("cpu")])

    def set_random():  # PyCIL's sets torch.manual_seed(1) and cuDNN's determinism flags
        torch.manual_seed(weight_seed)

    trainer._set_random = set_random

    # PyCIL's herding loop (base.py _construct_exemplar) takes argmin over an empty array once a
    # class has fewer images than its quota (2000 // 2 = 1000 > 400 here after task 0): cap the
    # quota at the smallest class, which keeps every image of a class, as cl_runner does.
    smallest = int(np.bincount(CIFAR10(a.data, train=True, download=False).targets).min())
    quota = base.BaseLearner.samples_per_class
    base.BaseLearner.samples_per_class = property(lambda self: min(quota.fget(self), smallest))

    # --- records ---------------------------------------------------------------------------------
    cnn, nme = [], []
    eval_task = base.BaseLearner.eval_task

    def recording_eval_task(self, *args, **kwargs):
        self.topk = min(5, self._total_classes)  # top-5 of 2 classes fails in torch.topk
        cnn_accy, nme_accy = eval_task(self, *args, **kwargs)
        for accy in filter(None, (cnn_accy, nme_accy)):  # the trainer logs "top5": give it the top-k
            accy.setdefault("top5", accy[f"top{self.topk}"])
        cnn.append(float(cnn_accy["top1"]))
        if nme_accy is not None:
            nme.append(float(nme_accy["top1"]))
        if len(cnn) == a.tasks:
            raise Enough
        return cnn_accy, nme_accy

    base.BaseLearner.eval_task = recording_eval_task

    trace = []
    if a.trace_task is not None:
        learner = {}
        init = module.BaseLearner.__init__

        def remembering_init(self, args):  # the learner, to read its current task in the wrapper
            init(self, args)
            learner["it"] = self

        module.BaseLearner.__init__ = remembering_init

        def traced_cross_entropy(*args, **kwargs):
            loss = F.cross_entropy(*args, **kwargs)
            if learner["it"]._cur_task == a.trace_task and torch.is_grad_enabled():
                trace.append(float(loss))
            return loss

        module.F = types.SimpleNamespace(**{k: getattr(F, k) for k in dir(F) if not k.startswith("__")})
        module.F.cross_entropy = traced_cross_entropy

    args = {
        "prefix": "agreement",
        "dataset": "cifar10",
        "memory_size": 2000,
        "memory_per_class": 20,
        "fixed_memory": False,
        "shuffle": True,
        "init_cls": CLASSES_PER_TASK,
        "increment": CLASSES_PER_TASK,
        "model_name": a.method,
        "convnet_type": "resnet32",
        "device": ["cpu"],
        "seed": [a.seed],
    }
    try:
        trainer.train(args)
    except Enough:
        pass

    uses_memory = a.method in ("icarl", "wa", "der")
    result = {
        "side": "pycil",
        "method": a.method,
        "seed": a.seed,
        "weight_seed": weight_seed,
        "epochs": a.epochs,
        "settings": {
            "full": full,
            "run": {"epochs": a.epochs, "milestones": milestones, "memory": 2000 if uses_memory else 0},
        },
        "class_order": np.random.RandomState(a.seed).permutation(10).tolist(),
        "cnn": summary(cnn),
        "nme": summary(nme),
        "task_il": None,
        "wall_seconds": clock.seconds(),
    }
    if trace:
        result["trace"] = {"task": a.trace_task, "cross_entropies": trace}
    write_result(out, result)
    print(
        f"pycil {a.method} seed {a.seed}: CNN {result['cnn']}, NME {result['nme']}, "
        f"{result['wall_seconds']:.0f} s"
    )


if __name__ == "__main__":
    main()
