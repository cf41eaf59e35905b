"""A network in eval mode for a while, then back in the mode it was in."""

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside the block; the model's own mode after it, even when the block raises
    (a Ctrl-C during evaluation or DER's balanced stage)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
