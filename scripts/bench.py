"""Training speed of the runner against the hardware's ceiling, and peak memory.

    python scripts/bench.py                       # resnet32, batch 128, CIFAR-shaped data, all methods
    python scripts/bench.py --methods finetune,der --out bench.json
    python scripts/bench.py --protocol            # the whole protocol a user waits for, phase by phase

Each measurement runs in a fresh process (so peak resident memory is its own):

- ceiling: images/s of forward + backward + SGD step of the backbone and a linear head on
  normalised tensors already in memory, at the same batch size and thread count; and of a
  forward pass alone (eval mode, no autograd), which old networks cost; each the fastest of
  `--repeats` timings;
- each method: the runner's images/s in the last epoch of every step, on generated
  CIFAR-shaped data (3x32x32, 100 classes), loggers off.

`--protocol` times what a user waits for instead: every phase of every task (training,
BatchNorm recalibration, memory update, the method's after-task work, evaluation, checkpoint,
logging) on CIFAR-100-sized data (500 training and 100 test images per class, B0 10 steps,
1 epoch per task, CIFAR-100's defaults), beside the pure training time the cost model allows at the ceiling.

The cost model says what each method should reach: finetune, MAS and IMM one training pass (c),
LwF, UCIR, BiC and PODNet one pass plus one teacher forward (f), DER at step t one pass plus t forwards of the
frozen extractors, SD two passes (two views). `vs_model` is measured / predicted: 1.0 means the
runner adds nothing over the arithmetic the method needs. Results go to JSON and a table.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ["finetune", "lwf", "mas", "der", "sd"]
TEACHER = ("lwf", "ucir", "bic", "podnet")  # one forward of the old network per batch beside the pass


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def overrides(args) -> list[str]:
    return [
        "dataset=synthetic",
        f"dataset.num_classes={args.classes}",
        "dataset.size=32",
        "dataset.channels=3",
        f"dataset.source.train_per_class={args.train_per_class}",
        f"dataset.source.test_per_class={args.test_per_class}",
        "dataset.augment.crop_padding=4",
        f"backbone={args.backbone}",
        f"train.batch_size={args.batch_size}",
        f"train.epochs={args.epochs}",
        "train.lr=0.01",
        f"steps={args.steps}",
        f"device={args.device}",
        "logger=local",
        "logger.plots=false",
        "checkpoint.every_epochs=0",
        *([f"train.precise_bn={cifar100_default('train.precise_bn')}"] if args.protocol else []),
    ]


def compose(args, *extra: str, data: bool = True):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from cl_runner.paths import config_dir

    given = [*(overrides(args) if data else []), *extra]  # before Hydra starts: overrides() may compose too
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return hydra_compose("train", overrides=given)


def cifar100_default(key: str):
    """What `cl-run dataset=cifar100` sets: the protocol stands for it on generated data of its shape."""
    return OmegaConf.select(compose(None, "dataset=cifar100", data=False), key)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_ceiling(args) -> dict:
    from torch import nn

    from cl_runner.instantiate import build
    from cl_runner.spec import resolve_device

    cfg = compose(args)
    device = resolve_device(cfg.device)
    backbone = build(cfg.backbone, in_channels=3, image_size=32)
    model = nn.Sequential(backbone, nn.Linear(backbone.feature_dim, args.classes)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(args.classes, (args.batch_size,), device=device)

    def train_step():
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def forward(inputs=x):
        with torch.inference_mode():
            model(inputs)

    x_nhwc = x.contiguous(memory_format=torch.channels_last)

    def forward_nhwc():  # what evaluation reads on AVX-512 CPUs (precision.evaluates_faster_in_nhwc)
        forward(x_nhwc)

    def best_rate(step) -> float:
        """The fastest of `repeats` timings: a ceiling is what the machine can do, and a shared
        machine's stalls only ever slow a timing down (one timing swung 280-400 images/s here)."""
        for _ in range(3):
            step()
        rates = []
        for _ in range(args.repeats):
            sync(device)
            start = time.perf_counter()
            for _ in range(args.iterations):
                step()
            sync(device)
            rates.append(args.iterations * args.batch_size / (time.perf_counter() - start))
        return max(rates)

    model.train()
    train = best_rate(train_step)
    model.eval()
    return {
        "train_images_per_s": train,
        "forward_images_per_s": best_rate(forward),
        "forward_nhwc_images_per_s": best_rate(forward_nhwc),
    }


def method_overrides(args, method: str) -> list[str]:
    """`der_nop` is DER without pruning; DER's balanced stage runs `--balanced-epochs` epochs;
    RPSNet runs on its own network (its ratio is against the backbone's ceiling, not its own)."""
    der = ["method=der", f"memory.size={args.der_memory}", f"method.balanced_epochs={args.balanced_epochs}"]
    named = {
        "der": der,
        "der_nop": [*der, "method.prune=false"],
        "rpsnet": ["method=rpsnet", "backbone=rpsnet"],
    }
    return [*named.get(method, [f"method={method}"]), *args.extra]


def measure_protocol(args, method: str) -> dict:
    """The whole protocol: wall time, each phase summed over the tasks, images trained on."""
    from cl_runner.loggers import Loggers
    from cl_runner.train import build_runner

    with tempfile.TemporaryDirectory() as out:
        runner = build_runner(compose(args, *method_overrides(args, method)), out)
        runner.logger = Loggers()
        start = time.perf_counter()
        for task in runner.benchmark.tasks[: args.tasks or None]:
            runner.learn(task)
        wall = time.perf_counter() - start
    steps = runner.results.steps
    phases: dict[str, float] = {}
    for step in steps:
        for phase, sec in step["phase_seconds"].items():
            phases[phase] = phases.get(phase, 0.0) + sec
    epochs = runner.settings.epochs
    return {
        "wall_s": wall,
        "phase_seconds": phases,
        "images_trained_per_step": [step["train_images"] * epochs for step in steps],
        "last_seen_acc": steps[-1]["seen_acc"],
        "eval_channels_last": runner.settings.eval_channels_last,
    }


def measure_method(args, method: str) -> dict:
    from cl_runner.loggers import Logger
    from cl_runner.train import build_runner

    extra = method_overrides(args, method)

    class LastEpoch(Logger):
        def __init__(self):
            self.rates: dict[int, float] = {}

        def epoch_end(self, task, epoch, stats):
            self.rates[task.index] = stats["images_per_s"]  # the last epoch of each step wins

    with tempfile.TemporaryDirectory() as out:
        runner = build_runner(compose(args, *extra), out)
        runner.logger = LastEpoch()
        start = time.perf_counter()
        runner.run()
        wall = time.perf_counter() - start
    rates = [runner.logger.rates[t] for t in sorted(runner.logger.rates)]
    return {"images_per_s_per_step": rates, "wall_s": wall}


def predicted(method: str, step: int, c: float, f: float) -> float:
    """Images/s the cost model allows at `step` (0-based), from the ceiling's rates."""
    seconds = 1 / c
    if method in TEACHER and step > 0:
        seconds += 1 / f  # the teacher's forward
    if method.startswith("der"):
        seconds += step / f  # one forward per frozen extractor
    if method == "sd":
        seconds = 2 / c  # two views, each forward and backward
    return 1 / seconds


def child(args) -> None:
    torch.set_num_threads(args.threads)
    if args.child == "ceiling":
        result = measure_ceiling(args)
    elif args.protocol:
        result = measure_protocol(args, args.child)
    else:
        result = measure_method(args, args.child)
    result["peak_rss_mb"] = peak_rss_mb()
    print("BENCH " + json.dumps(result))


def run_child(argv: list[str], name: str) -> dict:
    command = [sys.executable, __file__, "--child", name, *argv]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"bench: {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("BENCH ") :])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet32")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--train-per-class", type=int, default=64, help="64 x 20 classes = 10 full batches")
    parser.add_argument("--epochs", type=int, default=2, help="the last epoch of each step is timed")
    parser.add_argument("--iterations", type=int, default=20, help="timed batches of the ceiling")
    parser.add_argument("--repeats", type=int, default=5, help="timings of the ceiling; the fastest counts")
    parser.add_argument("--der-memory", type=int, default=2000)
    parser.add_argument("--balanced-epochs", type=int, default=30, help="DER's classifier re-training epochs")
    parser.add_argument("--protocol", action="store_true", help="time the whole protocol, phase by phase")
    parser.add_argument("--tasks", type=int, default=0, help="--protocol: only the first N tasks (0: all)")
    parser.add_argument("--test-per-class", type=int, default=10)
    parser.add_argument(
        "--extra", nargs="*", default=[], help="further cl-run overrides, e.g. train.amp=true"
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="bench.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    if "--protocol" in argv:  # CIFAR-100 sizes, B0 10 steps, 1 epoch per task, unless given
        given = {a.split("=", 1)[0] for a in argv}
        sizes = {"--train-per-class": "500", "--test-per-class": "100", "--steps": "10", "--epochs": "1"}
        argv = [*argv, *(f"{k}={v}" for k, v in sizes.items() if k not in given)]
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    if args.protocol:
        return protocol_report(args, argv)

    ceiling = run_child(argv, "ceiling")
    c, f = ceiling["train_images_per_s"], ceiling["forward_images_per_s"]
    report = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("child", "out")},
        "torch": torch.__version__,
        "ceiling": ceiling,
        "methods": {},
    }
    rows = [("ceiling (train step)", f"{c:.0f}", "", "1.00", "", f"{ceiling['peak_rss_mb']:.0f}")]
    rows.append(("ceiling (forward only)", f"{f:.0f}", "", "", "", ""))
    for method in args.methods.split(","):
        result = run_child(argv, method)
        rates = result["images_per_s_per_step"]
        result["vs_ceiling"] = [r / c for r in rates]
        result["vs_model"] = [r / predicted(method, t, c, f) for t, r in enumerate(rates)]
        report["methods"][method] = result
        for t, rate in enumerate(rates):
            rows.append((
                f"{method} step {t}" if len(rates) > 1 else method,
                f"{rate:.0f}",
                f"{predicted(method, t, c, f):.0f}",
                f"{result['vs_ceiling'][t]:.2f}",
                f"{result['vs_model'][t]:.2f}",
                f"{result['peak_rss_mb']:.0f}" if t == 0 else "",
            ))  # fmt: skip
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    header = ("", "images/s", "model", "vs ceiling", "vs model", "peak RSS MB")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [
            cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells))
    print(f"written to {args.out}")


def protocol_report(args, argv: list[str]) -> None:
    """Each method's whole protocol beside its pure training time at the ceiling."""
    ceiling = run_child(argv, "ceiling")
    c, f = ceiling["train_images_per_s"], ceiling["forward_images_per_s"]
    report = {"settings": {k: v for k, v in vars(args).items() if k not in ("child", "out")},
              "torch": torch.__version__, "ceiling": ceiling, "protocol": {}}  # fmt: skip
    report["settings"]["precise_bn"] = cifar100_default("train.precise_bn")
    rows = []
    for method in args.methods.split(","):
        result = run_child(argv, method)
        images = result["images_trained_per_step"]
        base = "der" if method.startswith("der") else method
        pure = sum(n / predicted(base, t, c, f) for t, n in enumerate(images))
        result["pure_training_s"] = pure
        result["wall_vs_pure_training"] = result["wall_s"] / pure
        report["protocol"][method] = result
        split = "  ".join(f"{p} {sec:.1f}" for p, sec in result["phase_seconds"].items())
        rows.append(f"{method:10s} wall {result['wall_s']:7.1f} s  pure training {pure:7.1f} s  "
                    f"ratio {result['wall_vs_pure_training']:.2f}  peak RSS {result['peak_rss_mb']:.0f} MB  "
                    f"| {split}")  # fmt: skip
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    nhwc = ceiling["forward_nhwc_images_per_s"]
    print(f"ceiling: train {c:.0f} images/s, forward {f:.0f} images/s ({nhwc:.0f} with NHWC inputs)")
    print("\n".join(rows))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
