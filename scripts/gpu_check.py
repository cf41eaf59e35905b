"""One check of everything that only a GPU can show, in about 8 minutes on one GPU; one JSON and
a one-screen summary. `scripts/gpu_check.sh` runs it (`--device cpu --smoke`: the same steps in
seconds, which is how the test suite checks the script itself).

1. the tests that need CUDA (`pytest -m gpu`);
2. short DER and LwF runs on generated CIFAR-100 files with `train.amp=true
   train.channels_last=true`, and LwF once more with `train.compile=true`;
3. a run with `train.deterministic=true` killed with SIGKILL mid-task, resumed, and compared
   with an uninterrupted one: its accuracy matrices must be identical;
4. `scripts/bench.py`: the training ceiling and the methods' images/s, and the whole protocol
   of fine-tuning for the first tasks.

Each step's failure is recorded and the next step runs; the exit code is 1 if any failed.
"""

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

# Generated CIFAR-100 files: enough images per task for several full batches on a GPU.
SIZES = {
    "full": {"train_per_class": 100, "test_per_class": 20, "steps": 5, "epochs": 3, "bench_tasks": 3},
    "smoke": {"train_per_class": 4, "test_per_class": 2, "steps": 2, "epochs": 2, "bench_tasks": 1},
}


def environment(device: str) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "device": device}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gb=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            bf16=torch.cuda.is_bf16_supported(),
        )
    return info


def run_overrides(method: str, root: Path, sizes: dict, device: str, *extra: str) -> list[str]:
    """A short run of `method` on the generated files: the paper recipe with its epochs cut."""
    overrides = [
        f"method={method}", "dataset=cifar100", f"dataset.root={root}", f"steps={sizes['steps']}",
        f"train.epochs={sizes['epochs']}", "train.warmup_epochs=0", "train.milestones=[]",
        f"device={device}", "logger=local", "logger.plots=false", "checkpoint.every_epochs=1",
    ]  # fmt: skip
    if method == "der":
        overrides += ["memory.size=200", "method.balanced_epochs=2"]
    if sizes is SIZES["smoke"]:  # a CPU check of the script itself: a backbone a CPU runs in seconds
        overrides += ["~method_dataset", "backbone=resnet20"]
    return [*overrides, *extra]


def cl_run(args: list[str], folder: Path, timeout: float) -> dict:
    """`cl-run` in a fresh process; its wall time, exit code and the run's metrics."""
    start = time.perf_counter()
    where = [] if any(a.startswith("resume=") for a in args) else [f"hydra.run.dir={folder}"]
    proc = subprocess.run(
        [sys.executable, "-m", "cl_runner.train", *args, *where],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    result = {"wall_s": round(time.perf_counter() - start, 1), "returncode": proc.returncode}
    if proc.returncode != 0:
        raise RuntimeError(f"cl-run {' '.join(args)} failed: {proc.stderr.strip()[-1500:]}")
    return {**result, **metrics_of(folder)}


def metrics_of(folder: Path) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text())
    return {
        "finished": metrics["finished"],
        "summary": metrics["summary"],
        "accuracy_matrix": metrics["accuracy_matrix"],
        "phase_seconds": [step["phase_seconds"] for step in metrics["steps"]],
        "peak_memory_mb": max(step["peak_memory_mb"] for step in metrics["steps"]),
    }


def gpu_tests(device: str, timeout: float) -> dict:
    if not device.startswith("cuda"):
        return {"skipped": "no CUDA device"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests"],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    if proc.returncode != 0:
        raise RuntimeError(f"pytest -m gpu: {tail}\n{proc.stdout[-3000:]}")
    return {"result": tail}


def short_runs(root: Path, sizes: dict, device: str, work: Path, timeout: float) -> dict:
    fast = ["train.amp=true", "train.channels_last=true"]
    runs = {
        "der": run_overrides("der", root, sizes, device, *fast),
        "lwf": run_overrides("lwf", root, sizes, device, *fast),
        "lwf_compile": run_overrides("lwf", root, sizes, device, *fast, "train.compile=true"),
    }
    if sizes is SIZES["smoke"]:
        del runs["lwf_compile"]  # compiling takes minutes on a CPU; on the GPU it is the point
    results = {}
    for name, args in runs.items():
        result = cl_run(args, work / name, timeout)
        result.pop("accuracy_matrix")
        results[name] = result
    return results


def wait_for_mid_task(folder: Path, proc: subprocess.Popen, timeout: float) -> dict:
    """Poll the run's position file until it stands inside task 1, past its first epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the run ended before it could be killed; give it more epochs")
        try:
            position = json.loads((folder / "checkpoint.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            position = None
        if position and position["task"] == 1 and not position["fresh"] and position["epoch"] >= 1:
            return position
        time.sleep(0.01)
    raise RuntimeError("no mid-task checkpoint appeared in time")


def kill_and_resume(root: Path, sizes: dict, device: str, work: Path, timeout: float) -> dict:
    """SIGKILL mid-task, resume, compare with an uninterrupted run: identical matrices."""
    args = run_overrides(
        "lwf", root, sizes, device, "train.deterministic=true", f"train.epochs={sizes['epochs'] + 2}"
    )
    reference = cl_run(args, work / "reference", timeout)
    folder = work / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cl_runner.train", *args, f"hydra.run.dir={folder}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        position = wait_for_mid_task(folder, proc, timeout)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    resumed = cl_run([f"resume={folder}"], folder, timeout)
    identical = resumed["accuracy_matrix"] == reference["accuracy_matrix"]
    result = {"killed_at": position, "identical": identical, "resumed_finished": resumed["finished"]}
    if not identical:
        raise RuntimeError(f"the resumed run's numbers differ from the uninterrupted run's: {result}")
    return result


def bench(device: str, sizes: dict, work: Path, timeout: float, smoke: bool) -> dict:
    small = ["--classes=4", "--steps=2", "--train-per-class=4", "--test-per-class=2", "--batch-size=8",
             "--backbone=resnet20", "--iterations=1", "--repeats=1", "--der-memory=8",
             "--balanced-epochs=1"] if smoke else []  # fmt: skip
    results = {}
    for name, extra in {
        "methods": ["--methods=finetune,lwf,der"],
        "protocol": ["--protocol", "--methods=finetune", f"--tasks={sizes['bench_tasks']}"],
    }.items():
        out = work / f"bench_{name}.json"
        command = [sys.executable, "scripts/bench.py", f"--device={device}", *extra, *small, f"--out={out}"]
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"bench {name} failed: {proc.stderr[-1500:]}")
        results[name] = json.loads(out.read_text())
    return results


def step(report: dict, name: str, action) -> None:
    """Run one step; its result or its error goes into the report, with its seconds."""
    start = time.perf_counter()
    try:
        report[name] = {"ok": True, **action()}
    except Exception as error:  # one failed step must not hide the others' figures
        report[name] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
    report[name]["seconds"] = round(time.perf_counter() - start, 1)


def summary(report: dict) -> list[str]:
    """One screen: the device, then a line or two per step."""
    env = report["environment"]
    lines = [f"gpu_check on {env.get('gpu', env['device'])}  torch {env['torch']}  "
             f"cuda {env.get('cuda', '-')}  bf16 {env.get('bf16', '-')}"]  # fmt: skip
    for name in ("gpu_tests", "short_runs", "kill_and_resume", "bench"):
        result = report.get(name, {})
        status = "ok" if result.get("ok") else "FAILED"
        lines.append(f"{name:16s} {status:6s} {result.get('seconds', 0):6.1f} s")
        if not result.get("ok"):
            lines.append(f"    {result.get('error', 'not run')[:300]}")
            continue
        if name == "gpu_tests":
            lines.append(f"    {result.get('result', result.get('skipped'))}")
        elif name == "short_runs":
            for run, r in ((k, v) for k, v in result.items() if isinstance(v, dict)):
                s = r["summary"]["class_il"]
                accuracy = f"avg inc {s['avg_incremental_acc']:5.1f}  last {s['last_acc']:5.1f}"
                lines.append(
                    f"    {run:12s} wall {r['wall_s']:6.1f} s  {accuracy}  peak {r['peak_memory_mb']:.0f} MB"
                )
        elif name == "kill_and_resume":
            lines.append(f"    killed at {result['killed_at']}, resumed run identical: {result['identical']}")
        elif name == "bench":
            ceiling = result["methods"]["ceiling"]
            lines.append(f"    ceiling: train {ceiling['train_images_per_s']:.0f} images/s, "
                         f"forward {ceiling['forward_images_per_s']:.0f} images/s")  # fmt: skip
            for method, r in result["methods"]["methods"].items():
                rates = ", ".join(f"{x:.0f}" for x in r["images_per_s_per_step"])
                lines.append(f"    {method:10s} images/s per step: {rates}")
            for method, r in result["protocol"]["protocol"].items():
                lines.append(f"    protocol {method}: wall {r['wall_s']:.1f} s, "
                             f"{r['wall_vs_pure_training']:.2f}x pure training")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the same steps in seconds")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--timeout", type=float, default=300, help="seconds any one command may take")
    args = parser.parse_args(argv)
    from synthetic_cifar import write

    sizes = SIZES["smoke" if args.smoke else "full"]
    os.environ.setdefault("WANDB_MODE", "disabled")
    report = {"environment": environment(args.device), "sizes": sizes}
    with tempfile.TemporaryDirectory() as scratch:
        work, root = Path(scratch), Path(scratch) / "data"
        write(root, 100, sizes["train_per_class"], sizes["test_per_class"])
        step(report, "gpu_tests", lambda: gpu_tests(args.device, args.timeout))
        step(report, "short_runs", lambda: short_runs(root, sizes, args.device, work, args.timeout))
        step(report, "kill_and_resume", lambda: kill_and_resume(root, sizes, args.device, work, args.timeout))
        step(report, "bench", lambda: bench(args.device, sizes, work, args.timeout, args.smoke))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(summary(report)))
    print(f"written to {args.out}")
    return 0 if all(report[k]["ok"] for k in ("gpu_tests", "short_runs", "kill_and_resume", "bench")) else 1


if __name__ == "__main__":
    sys.exit(main())
