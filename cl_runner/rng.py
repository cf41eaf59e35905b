"""Random-generator states in checkpoints and between processes.

`Generator.set_state` and `torch.set_rng_state` accept only CPU byte tensors, while checkpoints
and rank 0's after-task state are loaded with `map_location=device`, which would move a saved
state onto the GPU. States are therefore stored as plain `bytes`, which no map_location
touches, and turned back into CPU byte tensors when restored.
"""

import torch


def pack(state: torch.Tensor) -> bytes:
    return state.cpu().numpy().tobytes()


def unpack(data: bytes | torch.Tensor) -> torch.Tensor:
    """A CPU byte tensor (a tensor from an older checkpoint is moved back to the CPU)."""
    if isinstance(data, torch.Tensor):
        return data.cpu()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def restore_cuda(states: list) -> None:
    """One saved state per device visible when it was saved: restore those that exist now (a
    run may resume with fewer or more visible GPUs, or on the CPU)."""
    if not states or not torch.cuda.is_available():
        return
    for index, state in enumerate(states[: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(unpack(state), index)
