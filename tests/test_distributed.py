"""One run on several processes: the gloo backend on the CPU, 2 ranks.

In float64 the 2-process run must equal the single-process run (training is chaotic: float32
rounding differences between the two grow to visible accuracy differences within a few epochs,
float64 ones stay far below the tolerances here), and the ranks must end with identical
models, memories and method states.
"""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from cl_runner import distributed
from cl_runner.data.batch import Batch
from cl_runner.data.loader import Augment, DeviceLoader
from cl_runner.distributed import Ranks, use_global_batchnorm
from cl_runner.train import build_runner, train

from .conftest import cl_run, make_cfg
from .test_resume import _wait_until_mid_task, numbers

WORLD = 2


# -- the arithmetic of sharding, in one process ----------------------------------------------
@pytest.mark.parametrize(("total", "world"), [(1, 1), (5, 1), (2, 2), (5, 2), (8, 3), (13, 4), (4, 4)])
def test_ranks_shards_cover_a_batch_once_and_weights_average_to_one(total, world):
    rows = [Ranks(r, world).shard(total) for r in range(world)]
    covered = [i for r in rows for i in range(total)[r]]
    assert covered == list(range(total))
    sizes = [r.stop - r.start for r in rows]
    assert max(sizes) - min(sizes) <= 1
    # DDP averages the ranks' gradients: the weights make that the gradient of the batch's mean loss
    losses = torch.rand(total, dtype=torch.float64)
    averaged = sum(Ranks(r, world).weight(total) * losses[rows[r]].mean() for r in range(world)) / world
    assert float(averaged) == pytest.approx(float(losses.mean()), rel=1e-12)


def test_ranks_see_every_image_of_an_epoch_once_in_the_single_process_order():
    images = torch.arange(11, dtype=torch.uint8).view(11, 1, 1, 1).expand(11, 1, 2, 2).contiguous()
    labels = torch.arange(11)
    single = DeviceLoader(images, labels, 4, True, torch.Generator().manual_seed(3))
    expected = [y.tolist() for _, y in single.epoch()]  # batches of 4, 4, 3
    for world, kept_batches in ((2, 3), (4, 2)):  # 4 ranks cannot share the batch of 3: skipped
        per_rank = []
        for r in range(world):
            loader = DeviceLoader(images, labels, 4, True, torch.Generator().manual_seed(3))
            per_rank.append(
                [(span.index, y.tolist()) for span, _, y in loader.shards(None, 0, Ranks(r, world))]
            )
        for b in range(kept_batches):
            assert sum((ys for index, ys in (batches[b] for batches in per_rank)), []) == expected[b]
        assert all(len(batches) == kept_batches for batches in per_rank)


def test_random_draws_are_made_for_the_whole_batch():
    """Each rank's crops, flips and noise are its rows of what one process would draw."""
    images = torch.randint(0, 256, (7, 3, 6, 6), dtype=torch.uint8)
    augment = Augment([0.5] * 3, [0.25] * 3, crop_padding=2, flip=True)
    task = None
    whole = Batch(images, torch.zeros(7), task, augment, torch.Generator().manual_seed(5))
    expected_view, expected_noise = whole.view(), whole.randn_like(whole.view())
    views, noises = [], []
    for r in range(3):
        rows = Ranks(r, 3).shard(7)
        part = Batch(
            images[rows],
            torch.zeros(7)[rows],
            task,
            augment,
            torch.Generator().manual_seed(5),
            shard=rows,
            global_size=7,
        )
        views.append(part.view())
        noises.append(part.randn_like(part.view()))
    assert torch.equal(torch.cat(views), expected_view)
    assert torch.equal(torch.cat(noises), expected_noise)


# -- several processes ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(target, *args) -> None:
    """`target(rank, port, *args)` on WORLD gloo processes; fails if any of them fails."""
    port = free_port()
    context = mp.get_context("spawn")
    processes = [context.Process(target=_join, args=(target, r, port, *args)) for r in range(WORLD)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=600)
    assert [p.exitcode for p in processes] == [0] * WORLD


def _join(target, rank: int, port: int, *args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        target(rank, *args)
    finally:
        dist.destroy_process_group()


def _batchnorm_rank(rank: int, out: Path) -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4, momentum=0.3)
    x = torch.randn(7, 4, 3, 3, dtype=torch.float64).mul(3).add(2).float()
    target = torch.randn(7, 4, 3, 3)
    use_global_batchnorm(bn, torch.device("cpu"))
    ranks = Ranks(rank, WORLD)
    rows = ranks.shard(7)
    part = x[rows].requires_grad_(True)
    # DDP would average the parameter gradients over ranks: the weight makes that the mean
    loss = F.mse_loss(bn(part), target[rows]) * ranks.weight(7)
    loss.backward()
    torch.save(
        {"x_grad": part.grad, "w_grad": bn.weight.grad, "b_grad": bn.bias.grad,
         "mean": bn.running_mean, "var": bn.running_var},
        out / f"bn{rank}.pt",
    )  # fmt: skip


def test_global_batchnorm_equals_batchnorm_over_the_whole_batch(tmp_path):
    spawn(_batchnorm_rank, tmp_path)
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4, momentum=0.3)
    x = torch.randn(7, 4, 3, 3, dtype=torch.float64).mul(3).add(2).float().requires_grad_(True)
    target = torch.randn(7, 4, 3, 3)
    F.mse_loss(bn(x), target).backward()
    ranks = [torch.load(tmp_path / f"bn{r}.pt") for r in range(WORLD)]
    # every rank's loss reaches every input through the shared statistics: the input gradients
    # are the world's sum, which DDP's average over ranks turns into the parameters' gradient
    assert torch.allclose(torch.cat([r["x_grad"] for r in ranks]) / WORLD, x.grad, atol=1e-6)
    assert torch.allclose(sum(r["w_grad"] for r in ranks) / WORLD, bn.weight.grad, atol=1e-6)
    assert torch.allclose(sum(r["b_grad"] for r in ranks) / WORLD, bn.bias.grad, atol=1e-6)
    for r in ranks:  # the running statistics are the whole batch's (unbiased variance), on every rank
        assert torch.allclose(r["mean"], bn.running_mean, atol=1e-6)
        assert torch.allclose(r["var"], bn.running_var, atol=1e-5)


def _replicate_rank(rank: int, out: Path) -> None:
    model = nn.Linear(2, 2)
    torch.manual_seed(7)
    with Ranks(rank, WORLD).replicate(model, torch.device("cpu")):
        during = torch.rand(3)  # dropout draws from this generator
    torch.save({"during": during, "after": torch.rand(3)}, out / f"rng{rank}.pt")


def test_ranks_draw_their_own_dropout_then_continue_with_rank_0s_generator(tmp_path):
    spawn(_replicate_rank, tmp_path)
    torch.manual_seed(7)
    single_during, single_after = torch.rand(3), torch.rand(3)
    ranks = [torch.load(tmp_path / f"rng{r}.pt") for r in range(WORLD)]
    assert torch.equal(ranks[0]["during"], single_during)  # rank 0 draws what one process would
    assert not torch.equal(ranks[1]["during"], single_during)  # the others, masks of their own
    assert all(torch.equal(r["after"], single_after) for r in ranks)  # then all go on as rank 0


def _run_rank(rank: int, overrides: list[str], out: Path) -> None:
    torch.set_default_dtype(torch.float64)
    runner = build_runner(make_cfg(*overrides), out / "run", ranks=Ranks(rank, WORLD))
    results = train(runner)
    torch.save(final_state(runner, results), out / f"rank{rank}.pt")


def final_state(runner, results) -> dict:
    return {
        "model": runner.model.state_dict(),
        "memory": runner.memory.state_dict(),
        "method": runner.method.state_dict(),
        "steps": results.steps,
        "matrix": results.matrix("class_il"),
    }


EXACT = ["dataset=digits", "backbone=resnet20", "device=cpu", "logger=local", "logger.plots=false",
         "steps=2", "train.epochs=2", "train.batch_size=32", "train.lr=0.05"]  # fmt: skip
METHODS = {
    # herding memory, a new extractor per task, the auxiliary loss, classifier re-training
    "der": ["method=der", "memory.size=60", "method.balanced_epochs=2", "method.prune=false"],
    # the head warm-up stage, a teacher, exemplars
    "lwf": ["method=lwf", "memory.size=60", "method.head_epochs=1"],
    # importance after each task (looked up by parameter name) and the proximal update after each step
    "mas": ["method=mas"],
}


def run_single_and_two_processes(overrides: list[str], tmp_path: Path) -> tuple[dict, list[dict]]:
    spawn(_run_rank, overrides, tmp_path)
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)  # as each rank
    try:
        runner = build_runner(make_cfg(*overrides), tmp_path / "single")
        single = final_state(runner, train(runner))
    finally:  # later tests compare in-process runs with subprocess ones: leave no trace
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    # the ranks agree exactly: models (pruned shapes included), exemplars, method state
    for key in ("model", "memory", "method"):
        assert same(ranks[0][key], ranks[1][key]), key
    # only rank 0 wrote the run folder
    assert (tmp_path / "run" / "metrics.json").is_file() and (tmp_path / "run" / "checkpoint.pt").is_file()
    return single, ranks


def assert_same_steps(two: list[dict], one: list[dict]) -> None:
    for step_2p, step_1p in zip(two, one, strict=True):
        for key in ("seen_acc", "old_acc", "new_acc", "params", "params_unpruned", "memory_size"):
            assert step_2p.get(key) == pytest.approx(step_1p.get(key), abs=1e-6), key


@pytest.mark.parametrize(
    "method", [pytest.param(m, marks=[] if m == "der" else [pytest.mark.slow]) for m in METHODS]
)
def test_two_processes_equal_one_process(method, tmp_path):
    single, ranks = run_single_and_two_processes([*EXACT, *METHODS[method]], tmp_path)
    assert_same_steps(ranks[0]["steps"], single["steps"])
    flat = [[a for row in result["matrix"] for a in row if a is not None] for result in (ranks[0], single)]
    assert flat[0] == pytest.approx(flat[1], abs=1e-6)
    assert same(ranks[0]["memory"], single["memory"])
    for name, value in single["model"].items():
        if torch.is_tensor(value) and value.is_floating_point():
            assert torch.allclose(ranks[0]["model"][name], value, atol=1e-7), name


def test_two_processes_agree_on_der_pruning(tmp_path):
    """DER's masks are chaotic: in one process alone, a 1e-13 change of one weight moves the
    second task's accuracy by points (their gradient compensation multiplies differences by up
    to s_max^2). So the two runs are equal through the first task (masks, pruning, memory);
    after that, the ranks must still agree with each other exactly (checked inside)."""
    overrides = [*EXACT, "method=der", "memory.size=60", "method.balanced_epochs=2"]
    single, ranks = run_single_and_two_processes(overrides, tmp_path)
    assert_same_steps(ranks[0]["steps"][:1], single["steps"][:1])
    assert ranks[0]["steps"][0]["params"] < ranks[0]["steps"][0]["params_unpruned"]  # it did prune
    assert ranks[0]["steps"][1]["params"] < ranks[0]["steps"][1]["params_unpruned"]


def same(a, b) -> bool:
    """Equal nested states: tensors bit for bit, modules by their state."""
    if isinstance(a, nn.Module):
        return same(a.state_dict(), b.state_dict())
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# -- torchrun, as a user starts it ------------------------------------------------------------
def torchrun_command(*args: str) -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    cl_run_exe = Path(sys.executable).with_name("cl-run")
    return [
        str(exe),
        f"--nproc-per-node={WORLD}",
        f"--master-port={free_port()}",
        "--no-python",
        str(cl_run_exe),
        *args,
    ]


def torchrun_environment(temp: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(temp)}


def torchrun(*args: str, cwd: Path, temp: Path) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node=2 --no-python cl-run ARGS`, as a user starts it."""
    command = torchrun_command(*args)
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=600, env=torchrun_environment(temp)
    )


def test_torchrun_runs_one_experiment_into_one_folder(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    result = torchrun(
        "dataset=digits", "backbone=resnet20", "method=der", "memory.size=60", "steps=2", "train.epochs=1",
        "method.balanced_epochs=1", "device=cpu", "logger=local", f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path, temp=temp,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["finished"] and len(metrics["steps"]) == 2
    assert metrics["steps"][1]["memory_size"] == 60
    # the results table is printed once (rank 0), and no rank left a folder of its own
    assert result.stdout.count("average incremental accuracy") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tmp"]
    assert not [p for p in temp.iterdir() if p.name.startswith("cl-run-rank")]


def test_torchrun_refuses_a_sweep_in_one_line(tmp_path):
    result = cl_run("-m", "seed=0,1", cwd=tmp_path, env={"WORLD_SIZE": "2", "RANK": "0"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "cl-run: error: torchrun runs one experiment on several processes; run sweeps (-m) without torchrun"
    )
    silent = cl_run("-m", "seed=0,1", cwd=tmp_path, env={"WORLD_SIZE": "2", "RANK": "1"})
    assert silent.returncode == 2 and silent.stderr == ""  # the other ranks do not repeat it


@pytest.mark.slow
def test_sigterm_to_torchrun_checkpoints_and_torchrun_resumes_exactly(tmp_path):
    setting = [*EXACT, "method=der", "memory.size=60", "method.balanced_epochs=1", "train.epochs=4",
               "checkpoint.every_epochs=1"]  # fmt: skip
    temp = tmp_path / "tmp"
    temp.mkdir()
    reference = torchrun(*setting, f"hydra.run.dir={tmp_path / 'reference'}", cwd=tmp_path, temp=temp)
    assert reference.returncode == 0, reference.stderr[-3000:]

    folder = tmp_path / "stopped"
    command = torchrun_command(*setting, f"hydra.run.dir={folder}")
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=torchrun_environment(temp),
    )
    _wait_until_mid_task(folder, proc)
    proc.send_signal(signal.SIGTERM)  # what SLURM sends before preemption; torchrun passes it on
    _, stderr = proc.communicate(timeout=120)
    message = (
        "cl-run: SIGTERM received; checkpoint written. "
        f"Continue with: the same torchrun command with resume={folder}"
    )
    assert stderr.count(message) == 1  # rank 0 says it, once
    assert not json.loads((folder / "metrics.json").read_text())["finished"]

    resumed = torchrun(f"resume={folder}", cwd=tmp_path, temp=temp)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert numbers(folder) == numbers(tmp_path / "reference")


def test_each_rank_takes_its_own_gpu_and_nccl(monkeypatch):
    """The CUDA branch of joining the processes, checked on the CPU with the calls recorded."""
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    device = distributed.start(Ranks(rank=5, world=8, local_rank=1), torch.device("cuda"))
    assert device == torch.device("cuda", 1)
    assert calls == [("set_device", torch.device("cuda", 1)), ("init", "nccl")]
    calls.clear()
    assert distributed.start(Ranks(1, 2, 1), torch.device("cpu")) == torch.device("cpu")
    assert calls == [("init", "gloo")]
    calls.clear()
    assert distributed.start(Ranks(), torch.device("cuda")) == torch.device("cuda")  # one process: as asked
    assert calls == []


def test_torchrun_environment_names_the_ranks(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.from_environment() == Ranks()
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.from_environment() == Ranks(rank=3, world=4, local_rank=1)
