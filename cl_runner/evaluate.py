"""Evaluation of all seen tasks in one batched pass over their test data."""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cl_runner.data.images import ImageSet
from cl_runner.data.outputs import forward_all
from cl_runner.data.schedule import Task
from cl_runner.distributed import SINGLE, Ranks
from cl_runner.metrics import mean_average_precision
from cl_runner.results import Evaluation


def class_means(
    model: nn.Module, exemplars: ImageSet, normalize: Callable, batch_size: int, classes: int, flip: bool
) -> torch.Tensor:
    """iCaRL's class means for nearest-mean-of-exemplars classification (Alg. 1): the mean of
    each class's L2-normalised exemplar features, normalised again; with `flip` (data trained
    with mirroring), the mean over the exemplars and their mirror images, as the official code
    computes it. [classes, feature_dim]; a class without exemplars has a zero mean."""
    views = [normalize] + ([lambda batch: normalize(batch).flip(3)] if flip else [])
    labels = exemplars.labels
    means = None
    for view in views:
        features = F.normalize(forward_all(model, exemplars.images, view, batch_size, "features"), dim=1)
        rows = labels.to(features.device)
        sums = features.new_zeros(classes, features.shape[1]).index_add_(0, rows, features)
        counts = torch.bincount(rows, minlength=classes).clamp(min=1)
        mean = sums / counts[:, None]
        means = mean if means is None else (means + mean)
    return F.normalize(means / len(views), dim=1)


def evaluate(
    model: nn.Module,
    test: ImageSet,
    tasks: list[Task],
    normalize: Callable,
    batch_size: int,
    ranks: Ranks = SINGLE,
    means: torch.Tensor | None = None,
) -> Evaluation:
    """Accuracies over the test data of all seen tasks; a multi-label task (VOC) gets its mAP in
    their place and stays out of the pooled accuracies. With several processes each rank scores
    its own block of the test images and one all-reduce adds up the counts: the numbers are a
    single process's, in a fraction of the time. With exemplar class `means`, the nearest mean
    of exemplars' accuracies too, from the same forward pass."""
    seen = tasks[-1].end
    keep = test.labels < seen
    shard = ranks.shard(int(keep.sum()))
    labels = test.labels[keep][shard]
    images = test.images[keep][shard]
    if means is None:
        logits = forward_all(model, images, normalize, batch_size)[:, :seen]
    else:
        logits, features = forward_all(model, images, normalize, batch_size, ("logits", "features"))
        logits = logits[:, :seen]

    dev = labels.device
    offsets = torch.tensor([t.offset for t in tasks], device=dev)
    ends = torch.tensor([t.end for t in tasks], device=dev)
    task_of = torch.bucketize(labels, ends, right=True)
    single = ~torch.tensor([t.multilabel for t in tasks], device=dev)[task_of]
    precision = {
        t.index: task_map(logits, test.targets[keep][shard], task_of, t, ranks) for t in tasks if t.multilabel
    }

    columns = torch.arange(seen, device=dev)
    own_head = (columns >= offsets[task_of, None]) & (columns < ends[task_of, None])
    correct_cil = (logits.argmax(1) == labels).float() * single
    correct_til = (logits.masked_fill(~own_head, float("-inf")).argmax(1) == labels).float() * single
    top5 = logits.topk(min(5, seen), dim=1).indices
    correct_top5 = (top5 == labels[:, None]).any(1).float() * single

    n = len(tasks)
    is_new = (task_of == n - 1).float() * single
    if means is not None:  # nearest mean: the largest cosine to a class mean (both unit length)
        with torch.autocast(features.device.type, enabled=False):  # float32 distances under AMP
            nearest = (F.normalize(features, dim=1) @ means[:seen].T.to(features.device)).argmax(1)
        correct_nme = (nearest == labels).float() * single
    else:
        correct_nme = torch.zeros_like(correct_cil)
    counts = torch.cat(  # every number below is a sum: one all-reduce for all of them
        [
            torch.bincount(task_of, single.float(), minlength=n),
            torch.bincount(task_of, correct_cil, minlength=n),
            torch.bincount(task_of, correct_til, minlength=n),
            torch.bincount(task_of, correct_nme, minlength=n),
            torch.stack([correct_top5.sum(), (correct_cil * is_new).sum(), is_new.sum()]),
        ]
    )
    counts = ranks.sum(counts)
    per_task, cil, til, nme = counts[:n], counts[n : 2 * n], counts[2 * n : 3 * n], counts[3 * n : 4 * n]
    top5_hits, new_hits, new_count = counts[4 * n :]
    total = per_task.sum()
    summary = torch.stack(
        [
            cil.sum() / total,
            top5_hits / total,
            til.sum() / total,
            (cil.sum() - new_hits) / (total - new_count) if n > 1 else total.new_tensor(0.0),
            new_hits / new_count,
        ]
    )
    seen_acc, top5_acc, til_acc, old_acc, new_acc = (100 * summary).tolist()
    class_il, task_il = (100 * cil / per_task).tolist(), (100 * til / per_task).tolist()
    for j, value in precision.items():
        class_il[j] = task_il[j] = value
    if precision and len(precision) == n:  # only a multi-label task seen: its mAP stands for all
        seen_acc = top5_acc = til_acc = new_acc = sum(precision.values()) / n
    if n > 1 and float(total - new_count) == 0:  # the old tasks are multi-label: their mAP
        old_acc = sum(precision.values()) / len(precision)
    return Evaluation(
        class_il=class_il,
        task_il=task_il,
        seen_acc=seen_acc,
        seen_acc_top5=top5_acc,
        seen_acc_task_il=til_acc,
        old_acc=old_acc if n > 1 else None,
        new_acc=precision.get(n - 1, new_acc),
        nme=None if means is None else (100 * nme / per_task).tolist(),
        seen_acc_nme=None if means is None else float(100 * nme.sum() / total),
    )


def task_map(logits, targets, task_of, task: Task, ranks: Ranks) -> float:
    """A multi-label task's mAP (%) from its own head's scores, over all processes' images."""
    mine = task_of == task.index
    scores = logits[mine][:, task.offset : task.end].float().cpu()
    marks = targets[mine][:, : task.size].cpu()
    if ranks.active:  # AP is not a sum: every process gathers all scores
        gathered = ranks.gather((scores, marks))
        scores, marks = torch.cat([g[0] for g in gathered]), torch.cat([g[1] for g in gathered])
    return mean_average_precision(scores, marks)
