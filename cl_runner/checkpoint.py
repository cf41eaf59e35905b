"""Checkpoints: everything a run needs to continue exactly where it stopped, written atomically.

`checkpoint.pt` holds the model, optimizer, method state (LwF's teacher, MAS's Omega and anchor),
exemplar memory, results so far, every random generator and the position in the schedule;
`checkpoint.json` repeats the position in plain text. Both are written to a temporary file and
renamed, so a crash mid-write leaves the previous checkpoint whole.
"""

import json
import os
import random
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from cl_runner import rng
from cl_runner.dicts import flatten
from cl_runner.errors import ConfigError

CHECKPOINT, POSITION = "checkpoint.pt", "checkpoint.json"
NOT_COMPARED = ("resume", "logger", "checkpoint")  # may change between a run and its resumption


@dataclass
class Position:
    """Where the run continues: task index, training stage, epochs done in it, batches done in
    the current epoch (non-zero only after an interruption). `fresh`: the task has not begun."""

    task: int = 0
    stage: str = "main"  # "warmup" (LwF's head-only epochs) or "main"
    epoch: int = 0
    batch: int = 0
    fresh: bool = True


def rng_state(generator: torch.Generator) -> dict:
    """Every generator, torch's as bytes (see rng.py): loading maps no state onto a GPU."""
    state = {
        "torch": rng.pack(torch.get_rng_state()),
        "generator": rng.pack(generator.get_state()),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_initialized():  # a CPU run on a GPU machine does not wake CUDA up
        state["cuda"] = [rng.pack(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(rng.unpack(state["torch"]))
    generator.set_state(rng.unpack(state["generator"]))
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    rng.restore_cuda(state.get("cuda", []))


def _replace_atomically(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(folder: Path, state: dict) -> None:
    folder = Path(folder)
    _replace_atomically(folder / CHECKPOINT, lambda tmp: torch.save(state, tmp))
    text = json.dumps(state["position"], indent=2)
    _replace_atomically(folder / POSITION, lambda tmp: Path(tmp).write_text(text))


def load(folder: Path, device: torch.device) -> dict:
    path = Path(folder) / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"resume: no {CHECKPOINT} in {folder}; nothing to continue")
    try:
        # Our own file, which also holds pickled modules (LwF's teacher): not weights-only.
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as error:
        raise ConfigError(f"resume: {path} is unreadable ({type(error).__name__}: {error})") from None


def check_same_config(saved: dict, current: dict) -> None:
    """Resuming with another config would silently mix two experiments: name the keys that differ."""
    old = {k: v for k, v in flatten(saved).items() if k.split(".")[0] not in NOT_COMPARED}
    new = {k: v for k, v in flatten(current).items() if k.split(".")[0] not in NOT_COMPARED}
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        details = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in changed[:6])
        more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        raise ConfigError(f"resume: the config differs from the checkpoint's in {details}{more}")


def position_dict(position: Position) -> dict:
    return asdict(position)
