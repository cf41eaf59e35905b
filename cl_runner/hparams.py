"""FACIL's continual hyper-parameter framework (Masana et al., "Class-incremental learning: survey
and performance evaluation", TPAMI 2022; FACIL's `gridsearch.py`), run before each task on that
task's own data and its held-out images, never the test set:

1. maximal plasticity: the task learnt by fine-tuning (the method with its stability parameter
   at 0: its own classification loss alone) at each candidate learning rate; the best task-IL
   accuracy on the task's held-out images is the plastic optimum. The first task tries
   `lr_first`; later tasks the `lr_searches` largest of `lr` below the first task's choice.
2. stability decay: from the method's starting value (FACIL's: LwF and EWC lambda 10 and 10,000,
   MAS 400, SI's c 10), the task learnt with the method at the chosen rate; while its held-out
   accuracy is below (1 - acc_drop) of the plastic optimum the value is multiplied by `decay`,
   at most `max_searches` times (FACIL's loop: after the last failed try the value decays once
   more and that is the one used). The first task has nothing to keep: no stability search.

The task is then learnt from the state before the search with the chosen values. Each trial
starts from that state, the random generators included, so the choice is deterministic.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ContinualSearch:
    lr_first: tuple[float, ...] = (0.5, 0.1, 0.05)
    lr: tuple[float, ...] = (0.1, 0.05, 0.01, 0.005, 0.001)
    lr_searches: int = 3
    acc_drop: float = 0.2
    decay: float = 0.5
    max_searches: int = 7
    start: float | None = None  # None: the method's `stability_start` (FACIL's gridsearch_config)


@dataclass
class Choice:
    """What the search chose for one task, and what it tried (metrics.json `hparams`)."""

    task: int
    lr: float
    plastic_acc: float
    stability: str | None = None
    value: float | None = None
    trials: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = {"task": self.task, "lr": self.lr, "plastic_acc": self.plastic_acc, "trials": self.trials}
        if self.stability is not None and self.value is not None:
            out[self.stability] = self.value
        return out


def learning_rates(search: ContinualSearch, first_choice: float | None) -> list[float]:
    """The plasticity search's candidates: the first task's range, then the largest below it."""
    if first_choice is None:
        return list(search.lr_first)
    return [lr for lr in search.lr if lr < first_choice][: search.lr_searches]


def choose(search: ContinualSearch, task: int, trial, first_choice: float | None, stability: str | None,
           start: float | None) -> Choice:  # fmt: skip
    """`trial(lr, value)` learns the task from the state before the search at that rate (value:
    the stability parameter, 0 for fine-tuning) and returns the held-out task-IL accuracy."""
    trials = []
    best_lr, best_acc = None, -1.0
    for lr in learning_rates(search, first_choice):
        acc = trial(lr, 0.0)
        trials.append({"phase": "plasticity", "lr": lr, "acc": acc})
        if acc > best_acc:  # FACIL keeps the first of equals
            best_lr, best_acc = lr, acc
    choice = Choice(task, best_lr, best_acc, stability, None, trials)
    if stability is None or task == 0:  # nothing learnt yet to keep: the method's value stays
        return choice
    value = search.start if search.start is not None else start
    for _ in range(search.max_searches):
        acc = trial(best_lr, value)
        trials.append({"phase": "stability", "lr": best_lr, stability: value, "acc": acc})
        if acc >= (1 - search.acc_drop) * best_acc:
            break
        value *= search.decay
    choice.value = value
    return choice
