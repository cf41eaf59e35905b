"""What only a CUDA device can show (`pytest -m gpu`; scripts/gpu_check.sh runs them). Skipped
where there is no CUDA device: the CPU-testable logic of these paths is in test_gpu_paths.py."""

import pytest
import torch

from cl_runner.precision import autocast_dtype, needs_grad_scaler
from cl_runner.train import build_runner, run

from .conftest import TINY, make_cfg

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
GPU = [*(o for o in TINY if o != "device=cpu"), "device=cuda", "steps=2"]


def matrices(results) -> dict:
    return results.to_dict()["accuracy_matrix"]


def test_a_run_keeps_the_network_the_memory_and_the_data_on_the_gpu(tmp_path):
    runner = build_runner(make_cfg(*GPU, "method=lwf", "memory.size=20"), tmp_path)
    results = runner.run()
    assert {p.device.type for p in runner.model.parameters()} == {"cuda"}
    assert runner.benchmark.train.images.device.type == "cuda"
    assert runner.memory.indices().device.type == "cuda"
    assert results.finished and all(step["peak_memory_mb"] > 0 for step in results.steps)


def test_amp_autocasts_to_bf16_without_a_scaler_where_the_gpu_has_it(tmp_path):
    device = torch.device("cuda")
    dtype = autocast_dtype(device)
    assert dtype == (torch.bfloat16 if torch.cuda.get_device_capability()[0] >= 8 else torch.float16)
    assert needs_grad_scaler(dtype) is (dtype == torch.float16)
    results = run(make_cfg(*GPU, "method=der", "memory.size=20", "method.balanced_epochs=1",
                           "train.amp=true", "train.channels_last=true"), tmp_path)  # fmt: skip
    assert results.finished
    assert all(0 <= acc <= 100 for row in results.matrices["class_il"] for acc in row)


def test_channels_last_reaches_the_convolutions(tmp_path):
    runner = build_runner(make_cfg(*GPU, "train.channels_last=true"), tmp_path)
    runner.run()
    conv = next(m for m in runner.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_deterministic_runs_repeat_to_the_last_bit(tmp_path):
    overrides = [*GPU, "method=mas", "train.deterministic=true"]
    first = run(make_cfg(*overrides), tmp_path / "a")
    second = run(make_cfg(*overrides), tmp_path / "b")
    assert matrices(first) == matrices(second)


def test_a_gpu_run_resumes_from_its_checkpoint_to_the_same_numbers(tmp_path):
    """Loaded with map_location=cuda, the checkpoint's generator states must still load."""
    first = run(make_cfg(*GPU, "method=lwf", "train.deterministic=true"), tmp_path)
    resumed = run(make_cfg(*GPU, "method=lwf", "train.deterministic=true", "resume=true"), tmp_path)
    assert matrices(resumed) == matrices(first)
