"""Evaluation of all seen tasks in one batched pass over their test data."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cl_runner.data.files import batches
from cl_runner.data.images import ImageSet
from cl_runner.data.schedule import Task


@torch.inference_mode()
def forward_all(
    model: nn.Module,
    images: torch.Tensor,
    normalize: Callable,
    batch_size: int,
    keys: tuple[str, ...] = ("logits",),
) -> dict[str, torch.Tensor]:
    """The model's outputs `keys` (eval mode, no distortion) over many images, in large batches.
    Only the outputs asked for are kept: DER's features and auxiliary logits over a whole
    ImageNet task would otherwise stay on the device until the end."""
    was_training = model.training
    model.eval()
    # File-based images arrive on the CPU; in-memory ones are already where the model is.
    param = next(model.parameters(), None)
    device = param.device if param is not None else images.device
    parts: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    for batch in batches(images, batch_size, pin=device.type == "cuda"):
        out = model(normalize(batch.to(device, non_blocking=True)))
        for key in keys:
            parts[key].append(at_least_float32(out[key]))
    model.train(was_training)
    return {key: torch.cat(values) for key, values in parts.items()}


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """bf16 outputs (AMP) as float32; float32 and float64 as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


@dataclass
class Evaluation:
    class_il: list[float]  # accuracy per seen task, all seen logits
    task_il: list[float]  # accuracy per seen task, own head only
    seen_acc: float  # all seen classes pooled
    seen_acc_top5: float
    seen_acc_task_il: float
    old_acc: float | None  # classes of earlier tasks, pooled
    new_acc: float  # classes of the last task


def evaluate(
    model: nn.Module, test: ImageSet, tasks: list[Task], normalize: Callable, batch_size: int
) -> Evaluation:
    seen = tasks[-1].end
    keep = test.labels < seen
    labels = test.labels[keep]
    logits = forward_all(model, test.images[keep], normalize, batch_size)["logits"][:, :seen]

    dev = labels.device
    offsets = torch.tensor([t.offset for t in tasks], device=dev)
    ends = torch.tensor([t.end for t in tasks], device=dev)
    task_of = torch.bucketize(labels, ends, right=True)

    columns = torch.arange(seen, device=dev)
    own_head = (columns >= offsets[task_of, None]) & (columns < ends[task_of, None])
    correct_cil = (logits.argmax(1) == labels).float()
    correct_til = (logits.masked_fill(~own_head, float("-inf")).argmax(1) == labels).float()
    top5 = logits.topk(min(5, seen), dim=1).indices
    correct_top5 = (top5 == labels[:, None]).any(1).float()

    counts = torch.bincount(task_of, minlength=len(tasks)).float()
    per_task_cil = torch.bincount(task_of, correct_cil, minlength=len(tasks)) / counts
    per_task_til = torch.bincount(task_of, correct_til, minlength=len(tasks)) / counts
    is_new = task_of == len(tasks) - 1
    summary = torch.stack(
        [
            correct_cil.mean(),
            correct_top5.mean(),
            correct_til.mean(),
            correct_cil[~is_new].mean() if len(tasks) > 1 else correct_cil.new_tensor(0.0),
            correct_cil[is_new].mean(),
        ]
    )
    seen_acc, top5_acc, til_acc, old_acc, new_acc = (100 * summary).tolist()
    return Evaluation(
        class_il=(100 * per_task_cil).tolist(),
        task_il=(100 * per_task_til).tolist(),
        seen_acc=seen_acc,
        seen_acc_top5=top5_acc,
        seen_acc_task_il=til_acc,
        old_acc=old_acc if len(tasks) > 1 else None,
        new_acc=new_acc,
    )
