"""`train.compile`: the model's forward pass compiled afresh for each task (methods read the
model itself; batches run the compiled graph), and a warning when torch.compile gives up and
runs eagerly.

Each task adds a head (DER: an extractor), and an eval-mode stage or a short last batch costs
a recompile too. Kept across tasks, these pile up until dynamo's recompile limit (8 by default)
and it silently falls back to eager, DER around task 7. A fresh cache per task keeps a 10- or
50-step run compiled; if a task still hits the limit, the run says so in one line.
"""

import logging
from contextlib import contextmanager

import torch
from torch import nn

log = logging.getLogger("cl_runner")


class _RecompileLimitWatch(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.hits: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "hit config." in message:
            self.hits.append(" ".join(line.strip() for line in message.splitlines()[:2]))


@contextmanager
def compiled(model: nn.Module, task: int):
    """What runs the model's forward pass this task: compiled, with a fresh cache."""
    torch._dynamo.reset()
    watch, dynamo_log = _RecompileLimitWatch(), logging.getLogger("torch._dynamo")
    dynamo_log.addHandler(watch)
    try:
        yield torch.compile(model)
    finally:
        dynamo_log.removeHandler(watch)
        if watch.hits:
            log.warning("train.compile: task %d ran partly eager: %s", task, watch.hits[0])
