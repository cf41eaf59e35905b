"""The CUDA-only branches, checked on the CPU: which BatchNorm, AMP dtype and scaler a GPU run
gets, that per-batch work makes no host copies or syncs, that a CPU run leaves CUDA alone, and
the switches for deterministic GPU runs."""

import pytest
import torch
from torch import nn

from cl_runner import checkpoint
from cl_runner.data.files import FileLoader
from cl_runner.data.loader import Augment
from cl_runner.distributed import GlobalBatchNorm, Ranks, use_global_batchnorm
from cl_runner.errors import ConfigError
from cl_runner.precision import (
    autocast_dtype,
    configure_backends,
    forward_batch_size,
    needs_grad_scaler,
    prefers_channels_last,
    select_device,
)
from cl_runner.runner import STOP_POLL, Runner, polls
from cl_runner.train import build_runner, run

from .conftest import TINY, make_cfg, spec_of
from .test_files_data import write_imagenet


def test_cuda_runs_use_syncbatchnorm_and_gloo_the_global_one():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.BatchNorm1d(3))
    swapped = use_global_batchnorm(net, torch.device("cuda"))
    assert len(swapped) == 2
    assert isinstance(net[1], nn.SyncBatchNorm) and isinstance(net[1], nn.BatchNorm2d)
    assert net[1].process_group is None  # the whole world
    for module, kind in swapped:
        module.__class__ = kind
    use_global_batchnorm(net, torch.device("cpu"))
    assert isinstance(net[1], GlobalBatchNorm) and not isinstance(net[1], nn.SyncBatchNorm)


class CopyCounter:
    """Counts `Tensor.to` calls on index (int64) tensors and float64 constants."""

    def __init__(self, monkeypatch):
        self.calls: list[torch.dtype] = []
        original = torch.Tensor.to

        def to(tensor, *args, **kwargs):
            if tensor.dtype in (torch.int64, torch.float64):
                self.calls.append(tensor.dtype)
            return original(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "to", to)


def test_normalisation_constants_are_copied_to_the_device_once(monkeypatch):
    augment = Augment([0.5, 0.4], [0.2, 0.3])
    images = torch.randint(0, 256, (4, 2, 3, 3), dtype=torch.uint8)
    first = augment.normalize(images)
    counter = CopyCounter(monkeypatch)
    for _ in range(5):
        assert torch.equal(augment.normalize(images), first)
    assert counter.calls == []  # before: two float64 copies to the device per call


def test_file_loader_picks_labels_on_the_device_without_a_copy_per_batch(tmp_path, monkeypatch):
    write_imagenet(tmp_path)
    from cl_runner.data.imagenet import imagenet

    train = imagenet(str(tmp_path), 32, workers=0).train
    loader = FileLoader(train.images, train.labels, 5, True, torch.Generator().manual_seed(0))
    counter = CopyCounter(monkeypatch)
    batches = list(loader.shards(None, 0, Ranks()))
    assert len(batches) == 5 and counter.calls == []  # before: one index copy per batch
    order = loader.order
    for span, _, labels in batches:
        assert torch.equal(labels, train.labels[order[span.start : span.start + span.global_size]])


def test_stop_flag_is_all_reduced_every_few_batches_under_torchrun(tmp_path, monkeypatch):
    """One process reads its own flag each batch (no sync); several all-reduce it only every
    STOP_POLL batches and at the epoch's last, the same batches on every rank."""
    assert [b for b in range(40) if polls(b, 40)] == [15, 31, 39]
    runner = build_runner(make_cfg(*TINY), tmp_path)
    reduced = []
    runner.ranks = Ranks(0, 2)
    monkeypatch.setattr(Ranks, "any", lambda self, flag, device: reduced.append(flag) or flag)
    asked = [runner.stop_requested(b, 40) for b in range(40)]
    assert len(reduced) == 3 and not any(asked)
    runner.signal = 15
    assert runner.stop_requested(STOP_POLL - 1, 40) and not runner.stop_requested(0, 40)
    runner.ranks = Ranks()
    assert runner.stop_requested(0, 40)  # a single process: every batch, no collective


@pytest.mark.parametrize(
    "capability, dtype",
    [((7, 0), torch.float16), ((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)],
)
def test_amp_uses_float16_with_a_scaler_on_gpus_without_bf16(monkeypatch, capability, dtype):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert autocast_dtype(torch.device("cuda")) == dtype
    assert needs_grad_scaler(dtype) == (dtype == torch.float16)
    monkeypatch.setattr("cl_runner.precision.cpu_has_bf16", lambda: True)
    assert autocast_dtype(torch.device("cpu")) == torch.bfloat16 and not needs_grad_scaler(torch.bfloat16)


def test_amp_stays_float32_on_a_cpu_without_native_bf16(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert autocast_dtype(torch.device("cpu")) is None
    runner = build_runner(make_cfg(*TINY, "steps=1", "train.amp=true"), tmp_path)
    assert runner.amp_dtype is None
    assert any("no native bf16" in r.message for r in caplog.records)


@pytest.mark.parametrize(
    "kind, capability, cpu, expected",
    [("cuda", (7, 0), "", True), ("cuda", (6, 1), "", False), ("cpu", None, "AVX512", True),
     ("cpu", None, "AVX2", False), ("mps", None, "", False)],
)  # fmt: skip
def test_channels_last_auto_picks_nhwc_where_it_is_faster(monkeypatch, kind, capability, cpu, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: cpu)
    assert prefers_channels_last(torch.device(kind)) is expected


@pytest.mark.parametrize(
    "kind, cpu, channels_last, expected",
    [("cpu", "AVX512", "false", True), ("cpu", "AVX2", "false", False), ("cpu", "AVX2", "true", True),
     ("cuda", "AVX512", "false", False), ("cuda", "AVX512", "true", True)],
)  # fmt: skip
def test_evaluation_reads_nhwc_on_avx512_cpus_or_where_training_does(
    monkeypatch, kind, cpu, channels_last, expected
):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: cpu)
    monkeypatch.setattr("cl_runner.spec.resolve_device", lambda name: torch.device(kind))
    settings = spec_of(make_cfg(*TINY, f"train.channels_last={channels_last}")).training
    assert settings.eval_channels_last is expected


def test_auto_switches_are_decided_for_the_device(monkeypatch):
    cfg = make_cfg(*TINY, "train.channels_last=auto")
    monkeypatch.setattr("cl_runner.spec.prefers_channels_last", lambda device: True)
    spec = spec_of(cfg)
    settings, device = spec.training, torch.device(spec.device if spec.device != "auto" else "cpu")
    assert device.type == "cpu" and settings.eval_batch_size == 128 and settings.channels_last is True
    assert forward_batch_size(torch.device("cuda")) == 1024
    assert spec_of(make_cfg(*TINY, "train.eval_batch_size=64")).training.eval_batch_size == 64
    assert spec_of(make_cfg("dataset=imagenet")).training.eval_batch_size == 256  # the data set's own
    with pytest.raises(
        ConfigError, match="train.channels_last='yes' is invalid: expected true or false or auto"
    ):
        spec_of(make_cfg(*TINY, "train.channels_last=yes"))


def test_float16_training_goes_through_the_gradient_scaler(tmp_path, monkeypatch):
    """What a V100 or T4 run does, on the CPU: float16 autocast, loss scaled, steps unscaled."""
    monkeypatch.setattr("cl_runner.runner.autocast_dtype", lambda device: torch.float16)
    runner = build_runner(make_cfg(*TINY, "steps=1", "train.amp=true"), tmp_path)
    steps = []
    original = torch.amp.GradScaler.step
    monkeypatch.setattr(
        torch.amp.GradScaler,
        "step",
        lambda self, opt: steps.append((self.is_enabled(), self.get_scale())) or original(self, opt),
    )
    runner.learn(runner.benchmark.tasks[0])
    assert runner.amp_dtype == torch.float16
    assert steps and all(enabled and scale > 1 for enabled, scale in steps)  # the loss was scaled up
    assert runner.results.steps[0]["seen_acc"] > 0


def test_a_cpu_run_never_initialises_cuda(tmp_path, monkeypatch):
    """On a GPU machine, device=cpu must not create a CUDA context (it takes memory on every GPU)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def woken(*args, **kwargs):
        raise AssertionError("CUDA was initialised by a CPU run")

    monkeypatch.setattr(torch.cuda, "_lazy_init", woken)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", woken)
    monkeypatch.setattr(torch.cuda, "set_device", woken)
    results = run(make_cfg(*TINY, "steps=2", "checkpoint.every_epochs=1"), tmp_path)
    assert results.finished and (tmp_path / checkpoint.CHECKPOINT).is_file()


def test_device_cuda_n_becomes_the_current_device(monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: chosen.append(device))
    select_device(torch.device("cuda", 1))
    select_device(torch.device("cpu"))
    assert chosen == [torch.device("cuda", 1)]


def test_deterministic_switch(monkeypatch):
    try:
        configure_backends(torch.device("cuda"), deterministic=True)
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled()
        configure_backends(torch.device("cuda"), deterministic=False)
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.backends.cudnn.benchmark = torch.backends.cudnn.deterministic = False
        torch.use_deterministic_algorithms(False)


def test_cpu_runs_flush_subnormals_to_zero():
    """DER's masks make subnormals that x86 computes with ~75x slower; a CPU run treats them as 0."""
    try:
        torch.set_flush_denormal(False)  # an earlier runner in this process may have set it
        subnormal = torch.tensor([1e-39])
        assert (subnormal * 1.0).item() > 0
        configure_backends(torch.device("cpu"), deterministic=False)
        assert (subnormal * 1.0).item() == 0
        assert (torch.tensor([1e-30]) * 1.0).item() == pytest.approx(1e-30)  # normal floats untouched
    finally:
        torch.set_flush_denormal(False)


def test_runner_builds_with_the_deterministic_switch(tmp_path):
    try:
        runner = build_runner(make_cfg(*TINY, "train.deterministic=true"), tmp_path)
        assert isinstance(runner, Runner) and torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_checkpoints_within_a_task_are_time_based_by_default(tmp_path, monkeypatch):
    """A late DER model's checkpoint costs more than an epoch: by default one is written at the
    first epoch end ten minutes after the last, not at every epoch."""
    cfg = make_cfg(*TINY)
    assert (cfg.checkpoint.every_minutes, cfg.checkpoint.every_epochs) == (10, 0)
    runner = build_runner(cfg, tmp_path)
    progress = runner.checkpointer
    now = [1000.0]
    monkeypatch.setattr("cl_runner.checkpoint.time.monotonic", lambda: now[0])
    runner.save()
    progress.begin_task(0, "main")
    progress.end_epoch()
    now[0] += 599
    assert not progress.due()
    now[0] += 2
    assert progress.due()
    runner.save()  # the clock restarts
    progress.end_epoch()
    assert not progress.due()
    progress.every_epochs = 3
    progress.end_epoch()  # 3 epochs done
    assert progress.due()
    progress.end_epoch()
    assert not progress.due()
