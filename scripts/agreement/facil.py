"""Run one FACIL approach on the CIFAR-format MNIST subset and write its curves as JSON.

FACIL's own main_incremental.main() runs with its command line; the launcher changes only what
cl_runner cannot express or what would make the two sides see different inputs, each below:

1. the data set: an entry in FACIL's dataset_config (our normalisation, pad 4 + crop 32, flip,
   and the class order RandomState(seed).permutation(10), given explicitly). FACIL reads only
   CIFAR-100 files; its loader is pointed at our CIFAR-10 files (torchvision CIFAR10, md5 check
   off). The entry's name must contain "cifar100" to reach that loader and not "mnist", which is
   tested first (data_loader.py:69-74).
2. the distortion: FACIL turns pad + crop into Pad(4) + RandomResizedCrop(32)
   (data_loader.py:171-178), a much stronger distortion than the padded random crop of
   cl_runner, PyCIL and iCaRL; it is replaced by RandomCrop(32, padding=4) + flip.
3. no validation split (FACIL holds out 10% of the training data by default, get_loaders
   validation=.1) and a fixed schedule instead of FACIL's patience scheme, which restores the
   best model on that split (incremental_learning.py:98-157): lr divided by FACIL's
   lr_factor 3 at 1/2 and 3/4 of the epochs, the last weights kept. The approaches' own
   train_loop/train_epoch/criterion/post_train_process run unchanged.
4. the network: FACIL's resnet32 has projection shortcuts (1x1 conv + BN, resnet32.py
   _make_layer); cl_runner and PyCIL use option A (strided identity, zero-padded channels).
   --shortcut A (default) swaps FACIL's downsample modules for option A; --shortcut B keeps them.
5. herding quota capped at the smallest class (FACIL asserts exemplars_per_class <= class size,
   and ceil(2000 / 2) = 1000 > 400 after the first task).

Usage: facil.py --repo FACIL --method lwf --seed 1993 --epochs 4 --out result.json
"""

import argparse
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Clock, one_thread, scale_milestones, summary, write_result  # noqa: E402

DATA = "/work/scratch/data"
NAME = "agreement_digits_as_cifar100"  # "cifar100" selects FACIL's CIFAR loader; "mnist" must not appear
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # configs/dataset/cifar10.yaml
APPROACH = {"lwf": "lwf", "ewc": "ewc", "mas": "mas", "si": "path_integral", "icarl": "icarl"}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repo", required=True)
    p.add_argument("--method", required=True, choices=sorted(APPROACH))
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--data", default=DATA)
    p.add_argument("--shortcut", default="A", choices=["A", "B"])
    p.add_argument("--workdir", default="/work/scratch/agreement/facil_work")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    clock = Clock()
    one_thread()
    sys.path.insert(0, str(Path(a.repo).resolve() / "src"))

    import main_incremental
    import networks
    import numpy as np
    import torch.nn.functional as F
    import torchvision.datasets.cifar as tv_cifar
    from approach.incremental_learning import Inc_Learning_Appr
    from datasets import data_loader
    from datasets.dataset_config import dataset_config
    from datasets.exemplars_selection import ExemplarsSelector
    from torch import nn
    from torchvision import transforms
    from torchvision.datasets import CIFAR10

    # 1. the data -------------------------------------------------------------------------------
    order = np.random.RandomState(a.seed).permutation(10).tolist()
    dataset_config[NAME] = {
        "path": a.data,
        "resize": None,
        "pad": 4,
        "crop": 32,
        "flip": True,
        "normalize": (MEAN, STD),
        "class_order": order,
        "extend_channel": None,
    }
    tv_cifar.check_integrity = lambda *args, **kwargs: True  # our files are not the official archive
    data_loader.TorchVisionCIFAR100 = lambda path, train, download: CIFAR10(path, train=train, download=False)

    # 2. the distortion -------------------------------------------------------------------------
    def same_transforms(resize, pad, crop, flip, normalize, extend_channel):
        norm = transforms.Normalize(*normalize)
        train = [transforms.RandomCrop(crop, padding=pad)] + (
            [transforms.RandomHorizontalFlip()] if flip else []
        )
        return (
            transforms.Compose(train + [transforms.ToTensor(), norm]),
            transforms.Compose([transforms.ToTensor(), norm]),
        )

    data_loader.get_transforms = same_transforms

    # 3. no validation split, a fixed schedule ---------------------------------------------------
    main_incremental.get_loaders = functools.partial(data_loader.get_loaders, validation=0.0)
    milestones = scale_milestones([50, 75], 100, a.epochs)  # 1/2 and 3/4, rounded as cl_runner's side

    def fixed_schedule(self, t, trn_loader, val_loader):
        self.optimizer = self._get_optimizer()
        for e in range(self.nepochs):
            factor = (1 / self.lr_factor) ** sum(e >= m for m in milestones)
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr * factor
            self.train_epoch(t, trn_loader)

    Inc_Learning_Appr.train_loop = fixed_schedule

    # 4. option-A shortcuts ----------------------------------------------------------------------
    class OptionA(nn.Module):
        """Strided identity with zero-padded channels: no parameters."""

        def __init__(self, extra_channels: int, stride: int):
            super().__init__()
            self.extra, self.stride = extra_channels, stride

        def forward(self, x):
            return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))

    facil_resnet32 = networks.resnet32

    def resnet32(*args, **kwargs):
        model = facil_resnet32(*args, **kwargs)
        if a.shortcut == "A":
            for block in model.modules():
                if getattr(block, "downsample", None) is not None:
                    conv = block.downsample[0]
                    block.downsample = OptionA(conv.out_channels - conv.in_channels, conv.stride[0])
        return model

    networks.resnet32 = resnet32

    # 5. the herding quota ------------------------------------------------------------------------
    smallest = int(np.bincount(CIFAR10(a.data, train=True, download=False).targets).min())
    quota = ExemplarsSelector._exemplars_per_class_num
    ExemplarsSelector._exemplars_per_class_num = lambda self, model: min(quota(self, model), smallest)

    argv = [
        "--datasets",
        NAME,
        "--network",
        "resnet32",
        "--approach",
        APPROACH[a.method],
        "--nepochs",
        str(a.epochs),
        "--lr",
        "0.1",
        "--momentum",
        "0.0",
        "--weight-decay",
        "0.0",
        "--batch-size",
        "128",
        "--num-tasks",
        "5",
        "--seed",
        str(a.seed),
        "--num-workers",
        "0",
        "--results-path",
        a.workdir,
        "--exp-name",
        f"{a.method}_{a.seed}",
    ]
    if a.method == "icarl":
        argv += ["--num-exemplars", "2000", "--exemplar-selection", "herding"]
    acc_taw, acc_tag, _, _, _ = main_incremental.main(argv)

    def curve(acc):  # the mean over seen tasks = the pooled seen-class accuracy (equal test sizes)
        return [100 * float(acc[t, : t + 1].mean()) for t in range(len(acc))]

    tag, taw = summary(curve(acc_tag)), summary(curve(acc_taw))
    # FACIL's iCaRL evaluates by the nearest mean of exemplars once the means exist (icarl.py
    # eval/classify): its numbers are NME accuracy, task-IL included.
    result = {
        "side": "facil",
        "method": a.method,
        "seed": a.seed,
        "epochs": a.epochs,
        "shortcut": a.shortcut,
        "settings": {
            "run": {
                "epochs": a.epochs,
                "milestones": milestones,
                "gamma": 1 / 3,
                "lr": 0.1,
                "momentum": 0.0,
                "weight_decay": 0.0,
                "batch_size": 128,
                "memory": 2000 if a.method == "icarl" else 0,
            }
        },
        "class_order": order,
        "cnn": None if a.method == "icarl" else tag,
        "nme": tag if a.method == "icarl" else None,
        "task_il": taw,
        "wall_seconds": clock.seconds(),
        "acc_tag": acc_tag.tolist(),
        "acc_taw": acc_taw.tolist(),
    }
    write_result(a.out, result)
    print(f"facil {a.method} seed {a.seed}: class-IL {tag}, task-IL {taw}, {result['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
