"""A model's outputs over many images: eval mode, no distortion, in fixed batches (evaluation,
class means, the fixed logits a stage keeps)."""

from collections.abc import Callable, Iterator

import torch
from torch import nn

from cl_runner.data.files import batches
from cl_runner.modes import eval_mode


@torch.inference_mode()
def forward_batches(
    model: nn.Module, images: torch.Tensor, normalize: Callable, batch_size: int, key: str | tuple[str, ...]
) -> Iterator:
    """The model's output `key` (eval mode, no distortion), batch after batch; a tuple of
    outputs where `key` is a tuple of keys."""
    # File-based images arrive on the CPU; in-memory ones are already where the model is.
    param = next(model.parameters(), None)
    device = param.device if param is not None else images.device
    with eval_mode(model):
        for batch in batches(images, batch_size, pin=device.type == "cuda"):
            out = model(normalize(batch.to(device, non_blocking=True)))
            if isinstance(key, tuple):
                yield tuple(at_least_float32(out[k]) for k in key)
            else:
                yield at_least_float32(out[key])


def forward_all(
    model: nn.Module, images: torch.Tensor, normalize: Callable, batch_size: int, key: str | tuple = "logits"
):
    """The model's output `key` (or outputs, for a tuple of keys) over many images,
    concatenated. Only those outputs are kept: DER's auxiliary logits over a whole ImageNet
    task would fill the device."""
    parts = list(forward_batches(model, images, normalize, batch_size, key))
    if isinstance(key, tuple):
        return tuple(torch.cat(column) for column in zip(*parts, strict=True))
    return torch.cat(parts)


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """bf16 outputs (AMP) as float32; float32 and float64 as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))
