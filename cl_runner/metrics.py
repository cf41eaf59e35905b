"""Every summary number, computed from per-step results. Accuracies are percentages (0-100).

`matrix[t][j]` = accuracy on the test data of task j after training task t (j <= t); entries
with j > t are None. `seen` is the accuracy on all seen classes pooled, one value per step.
"""

from collections.abc import Sequence

Matrix = Sequence[Sequence[float | None]]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def average_incremental_accuracy(seen: Sequence[float]) -> float | None:
    """Mean over steps of the pooled seen-class accuracy, first step included (iCaRL, DER)."""
    return _mean(list(seen))


def last_accuracy(seen: Sequence[float]) -> float | None:
    return seen[-1] if seen else None


def forgetting_per_task(matrix: Matrix, t: int) -> list[float]:
    """f_j after step t, for j < t: the best accuracy on j before step t minus its accuracy now."""
    return [max(matrix[s][j] for s in range(j, t)) - matrix[t][j] for j in range(t)]


def average_forgetting(matrix: Matrix) -> float | None:
    """Chaudhry et al. 2018: mean over j < T of max_{t<T} a[t][j] - a[T][j]; None for one task."""
    return _mean(forgetting_per_task(matrix, len(matrix) - 1))


def backward_transfer(matrix: Matrix) -> float | None:
    """Lopez-Paz & Ranzato 2017: mean over j < T of a[T][j] - a[j][j]; None for one task."""
    last = len(matrix) - 1
    return _mean([matrix[last][j] - matrix[j][j] for j in range(last)])


def summarize(matrix: Matrix, seen: Sequence[float]) -> dict[str, float | None]:
    return {
        "avg_incremental_acc": average_incremental_accuracy(seen),
        "last_acc": last_accuracy(seen),
        "avg_forgetting": average_forgetting(matrix),
        "bwt": backward_transfer(matrix),
    }


def average_precision(scores, targets) -> float:
    """PASCAL VOC's average precision (the 2010+ devkit, VOCevalcls): the area under the precision
    envelope over all recall points. `targets`: 1 positive, -1 negative, 0 difficult (ranked, but
    neither a hit nor a false alarm). Plain sequences or 1-D tensors."""
    ranked = sorted(zip(scores, targets, strict=True), key=lambda pair: -float(pair[0]))
    positives = sum(1 for t in targets if t > 0)
    if positives == 0:
        return float("nan")
    recall, precision, hits, alarms = [0.0], [0.0], 0, 0
    for _, t in ranked:
        hits += t > 0
        alarms += t < 0
        recall.append(hits / positives)
        precision.append(hits / (hits + alarms) if hits + alarms else 0.0)
    recall.append(1.0)
    precision.append(0.0)
    for i in range(len(precision) - 2, -1, -1):  # the envelope: best precision at this recall or more
        precision[i] = max(precision[i], precision[i + 1])
    return sum(
        (recall[i] - recall[i - 1]) * precision[i]
        for i in range(1, len(recall))
        if recall[i] != recall[i - 1]
    )


def mean_average_precision(scores, targets) -> float:
    """mAP (%) over the classes (columns) that have a positive: [N, C] scores and targets."""
    aps = [average_precision(scores[:, c].tolist(), targets[:, c].tolist()) for c in range(targets.shape[1])]
    aps = [ap for ap in aps if ap == ap]  # classes without a positive have no AP
    return 100 * sum(aps) / len(aps) if aps else 0.0
