"""The statistics a reported number needs: the 95% confidence interval of a mean over seeds
(Student's t), and a method against a baseline over the seeds both ran (paired t-test and
Wilcoxon signed-rank), with Holm's correction over a table's comparisons. scipy does the
distributions."""

import math
from dataclasses import dataclass

ALPHA = 0.05


def confidence_interval(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """mean ± t_{n-1} s / sqrt(n); None below two values."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf((1 + level) / 2, n - 1) * s / math.sqrt(n)
    return mean - half, mean + half


@dataclass(frozen=True)
class Comparison:
    n: int  # seeds both ran
    difference: float  # mean of (method - baseline) over those seeds
    p_t: float | None  # paired t-test, two-sided; None: fewer than 2 pairs or no spread
    p_wilcoxon: float | None  # signed-rank, two-sided, exact for small n; None: every difference 0
    p_holm: float | None = None  # p_t after Holm's correction over the table's comparisons


def paired(method: dict, baseline: dict) -> Comparison | None:
    """`method` and `baseline` map seed -> value; the seeds both have are the pairs."""
    from scipy import stats

    seeds = sorted(set(method) & set(baseline), key=str)
    if not seeds:
        return None
    diffs = [method[s] - baseline[s] for s in seeds]
    mean = sum(diffs) / len(diffs)
    p_t = p_w = None
    if len(diffs) >= 2 and any(d != diffs[0] for d in diffs):
        p_t = float(stats.ttest_rel([method[s] for s in seeds], [baseline[s] for s in seeds]).pvalue)
    if any(d != 0 for d in diffs):
        p_w = float(stats.wilcoxon(diffs).pvalue)
    return Comparison(len(diffs), mean, p_t, p_w)


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None stays None): the k-th smallest of m times
    (m - k + 1), made monotone, at most 1."""
    ranked = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m, adjusted, running = len(ranked), list(pvalues), 0.0
    for k, (p, i) in enumerate(ranked):
        running = max(running, min(1.0, (m - k) * p))
        adjusted[i] = running
    return adjusted
