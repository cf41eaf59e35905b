"""Checkpoints load onto another device: generator states stay CPU byte tensors.

On a GPU, checkpoints (and rank 0's after-task state) are loaded with `map_location=cuda`,
and `Generator.set_state` refuses anything but a CPU byte tensor. Here the tensors are mapped to
`meta`, which no generator accepts either, so a state that followed the map would fail the same
way a GPU one does."""

import pytest
import torch

from cl_runner import checkpoint, rng
from cl_runner.checkpoint import set_rng_state
from cl_runner.data.memory import ExemplarMemory
from cl_runner.train import build_runner

from .conftest import TINY, make_cfg

KINDS = {
    "finetune": ["method=finetune"],
    "lwf": ["method=lwf"],
    "mas": ["method=mas"],
    "der": ["method=der", "memory.size=20", "method.balanced_epochs=1"],
    "sd": ["method=sd"],
    "memory": ["method=finetune", "memory.size=20", "memory.selection=random"],
}


@pytest.mark.parametrize("kind", KINDS)
def test_every_checkpoint_kind_loads_with_tensors_on_another_device(tmp_path, kind):
    runner = build_runner(make_cfg(*TINY, "steps=2", *KINDS[kind]), tmp_path)
    runner.learn(runner.benchmark.tasks[0])  # writes a checkpoint after the task
    on_cpu = checkpoint.load(tmp_path, torch.device("cpu"))
    moved = checkpoint.load(tmp_path, torch.device("meta"))
    weights = [v for v in moved["model"].values() if torch.is_tensor(v)]
    assert weights and all(w.device.type == "meta" for w in weights)  # the map did apply

    generator = torch.Generator()
    set_rng_state(moved["rng"], generator)  # raised "expected a CPU ByteTensor" before
    assert torch.equal(generator.get_state(), rng.unpack(on_cpu["rng"]["generator"]))
    assert torch.equal(torch.get_rng_state(), rng.unpack(on_cpu["rng"]["torch"]))
    memory = ExemplarMemory()
    memory.load_state_dict(moved["memory"], torch.device("meta"))
    assert memory.generator.get_state().device.type == "cpu"
    assert torch.equal(memory.generator.get_state(), rng.unpack(on_cpu["memory"]["generator"]))


def test_a_checkpoint_from_an_older_version_with_tensor_states_still_restores():
    generator = torch.Generator().manual_seed(3)
    old_style = generator.get_state()  # a tensor, as earlier checkpoints stored it
    restored = torch.Generator()
    restored.set_state(rng.unpack(old_style))
    assert torch.equal(restored.get_state(), old_style)


def test_cuda_states_restore_onto_the_devices_visible_now(monkeypatch):
    """Saved with 2 visible GPUs, resumed with 1 (or saved on the CPU: no states at all)."""
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, index: restored.append((state, index)))
    saved = [rng.pack(torch.full((4,), 7, dtype=torch.uint8)), rng.pack(torch.zeros(4, dtype=torch.uint8))]
    rng.restore_cuda(saved)
    ((state, index),) = restored
    assert index == 0 and state.device.type == "cpu" and state.dtype == torch.uint8 and state[0] == 7
    rng.restore_cuda([])  # a CPU run resumed on a GPU
    assert len(restored) == 1
