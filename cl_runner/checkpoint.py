"""Checkpoints: everything a run needs to continue exactly where it stopped, written atomically.

`checkpoint.pt` holds the model, optimizer, method state (LwF's teacher weights, MAS's Omega and anchor),
exemplar memory, results so far, every random generator and the position in the schedule;
`checkpoint.json` repeats the position in plain text. Both are written to a temporary file and
renamed, so a crash mid-write leaves the previous checkpoint whole.
"""

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from cl_runner import rng
from cl_runner.atomic import replace_atomically, write_text
from cl_runner.distributed import SINGLE, Ranks
from cl_runner.errors import ConfigError

CHECKPOINT, POSITION = "checkpoint.pt", "checkpoint.json"


@dataclass
class Position:
    """Where the run continues: task index, training stage, epochs done in it, batches done in
    the current epoch (non-zero only after an interruption). `fresh`: the task has not begun."""

    task: int = 0
    stage: str = "main"  # "head" (a method's head-only epochs) or "main"
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


def save(folder: Path, state: dict) -> None:
    folder = Path(folder)
    replace_atomically(folder / CHECKPOINT, lambda tmp: torch.save(state, tmp))
    text = json.dumps(state["position"], indent=2)
    write_text(folder / POSITION, text)


def load(folder: Path, device: torch.device) -> dict:
    path = Path(folder) / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"resume: no {CHECKPOINT} in {folder}; nothing to continue")
    try:
        # Our own file, which also holds numpy and Python generator states: not weights-only.
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as error:
        raise ConfigError(f"resume: {path} is unreadable ({type(error).__name__}: {error})") from None


class Scratch:
    """A checkpointer that keeps nothing (the hyper-parameter search's trials): every stage
    starts at its first epoch and nothing is ever due."""

    pending_subset = None
    folder = None

    def continue_stage(self, stage: str) -> tuple[int, None]:
        return 0, None

    def restore_optimizer(self, optimizer, scaler) -> None:
        pass

    def begin_epoch(self, stage: str, epoch: int, continuing: bool) -> int:
        self.position = Position(0, stage, epoch, fresh=False)
        return 0

    def end_epoch(self) -> None:
        pass

    def stopped_after(self, batch: int) -> None:
        pass

    def due(self) -> bool:
        return False

    def save(self, *args, **kwargs) -> None:
        pass


class Checkpointer:
    """Where the run stands and how to continue it: the position in the schedule, the optimizer
    state and epoch order of a stage a resume continues mid-way, and when the next checkpoint
    is due. The runner says what happened (a task began, an epoch ended); this object keeps
    the position and writes and reads the checkpoint."""

    def __init__(
        self,
        folder: Path,
        every_epochs: int = 0,
        every_minutes: float = 0,
        ranks: Ranks = SINGLE,
        device: torch.device | None = None,
    ):
        self.folder, self.every_epochs, self.every_seconds = Path(folder), every_epochs, 60 * every_minutes
        self.ranks, self.device = ranks, device
        self.position = Position()
        self.pending: dict | None = None  # optimizer state and epoch order of a mid-stage resume
        self.last_saved = time.monotonic()

    # -- the position ----------------------------------------------------------------------------
    def begin_task(self, task: int, stage: str) -> None:
        self.position = Position(task, stage, fresh=False)

    def continue_stage(self, stage: str) -> tuple[int, torch.Tensor | None]:
        """The first epoch of `stage` to run and, when a resume continues inside an epoch, that
        epoch's order."""
        if self.position.stage != stage:
            self.pending = None
            return 0, None
        return self.position.epoch, (self.pending or {}).get("order")

    @property
    def pending_subset(self) -> torch.Tensor | None:
        """A class-balanced stage's positions, when a resume continues inside that stage."""
        return (self.pending or {}).get("subset")

    def restore_optimizer(self, optimizer, scaler) -> None:
        """A resume inside a stage: the optimizer and scaler as they were; then nothing is pending."""
        if self.pending is not None:
            optimizer.load_state_dict(self.pending["optimizer"])
            if self.pending.get("scaler"):
                scaler.load_state_dict(self.pending["scaler"])
            self.pending = None

    def begin_epoch(self, stage: str, epoch: int, continuing: bool) -> int:
        """The epoch's first batch: where the interrupted epoch stopped, else 0."""
        start_batch = self.position.batch if continuing else 0
        self.position = Position(self.position.task, stage, epoch, start_batch, fresh=False)
        return start_batch

    def stopped_after(self, batch: int) -> None:
        self.position.batch = batch + 1

    def end_epoch(self) -> None:
        p = self.position
        self.position = Position(p.task, p.stage, p.epoch + 1, fresh=False)

    def end_task(self) -> None:
        self.position = Position(self.position.task + 1)

    # -- when and what to write --------------------------------------------------------------------
    def due(self) -> bool:
        """After an epoch: every `every_epochs` epochs, and at the first epoch end `every_minutes`
        after the last checkpoint (a big model's per-epoch checkpoints would cost more than the
        epochs). Every rank decides alike: rank 0's clock is the one that counts."""
        epoch = self.position.epoch  # epochs done in the stage
        by_epoch = bool(self.every_epochs) and epoch % self.every_epochs == 0
        by_time = bool(self.every_seconds) and time.monotonic() - self.last_saved >= self.every_seconds
        if self.ranks.active:
            by_time = self.ranks.any(by_time if self.ranks.leader else False, self.device)
        return by_epoch or by_time

    def save(
        self,
        state: dict,
        optimizer=None,
        scaler=None,
        order: torch.Tensor | None = None,
        subset: torch.Tensor | None = None,
    ) -> None:
        """`state` (the run's parts) with the position; inside a stage also the optimizer,
        scaler, a class-balanced stage's subset and, within an epoch, its order. Rank 0
        writes; every rank restarts the clock."""
        self.last_saved = time.monotonic()
        if not self.ranks.leader:
            return
        mid_stage = optimizer is not None and not self.position.fresh
        save(
            self.folder,
            {
                "position": asdict(self.position),
                **state,
                "optimizer": optimizer.state_dict() if mid_stage else None,
                "scaler": scaler.state_dict() if mid_stage and scaler.is_enabled() else None,
                "order": order,
                "subset": subset if mid_stage else None,
            },
        )

    def restore(self, state: dict) -> None:
        self.position = Position(**state["position"])
        if state["optimizer"] is not None:
            self.pending = {
                "optimizer": state["optimizer"],
                "order": state["order"],
                "scaler": state.get("scaler"),
                "subset": state.get("subset"),  # none in checkpoints from before balanced stages ran here
            }
