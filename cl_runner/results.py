"""Per-step results of a run and their `metrics.json` form (a stable contract, see README)."""

from dataclasses import dataclass

from cl_runner.data.schedule import Task
from cl_runner.labels import KINDS, NME
from cl_runner.metrics import forgetting_per_task, summarize

# each accuracy matrix's keys in a step: its pooled seen-class accuracy, its forgetting per task
STEP_KEYS = {
    "class_il": ("seen_acc", "forgetting"),
    "task_il": ("seen_acc_task_il", "forgetting_task_il"),
    NME: ("seen_acc_nme", "forgetting_nme"),
}


@dataclass
class Evaluation:
    class_il: list[float]  # accuracy per seen task, all seen logits
    task_il: list[float]  # accuracy per seen task, own head only
    seen_acc: float  # all seen classes pooled
    seen_acc_top5: float
    seen_acc_task_il: float
    old_acc: float | None  # classes of earlier tasks, pooled
    new_acc: float  # classes of the last task
    nme: list[float] | None = None  # nearest-mean-of-exemplars accuracy per seen task (memory on)
    seen_acc_nme: float | None = None


class Results:
    def __init__(
        self,
        num_tasks: int,
        config: dict | None = None,
        choices: dict | None = None,
        recipe: dict | None = None,
    ):
        self.num_tasks = num_tasks
        self.config = config or {}
        self.choices = choices or {}
        self.recipe = recipe or {}  # the recipe and preset files picked: every key they set, its value
        self.matrices: dict[str, list[list[float]]] = {kind: [] for kind in KINDS}  # kind -> rows of a[t][j]
        self.steps: list[dict] = []

    @property
    def kinds(self) -> tuple[str, ...]:
        """The accuracy matrices this run reports: class-IL and task-IL, and the nearest mean of
        exemplars where a memory is on."""
        return KINDS + ((NME,) if self.matrices.get(NME) else ())

    @property
    def finished(self) -> bool:
        return len(self.steps) == self.num_tasks

    def add(self, task: Task, evaluation: Evaluation, **measures) -> None:
        """Record one step: its evaluation plus plain measures (params, train_seconds, ...)."""
        self.matrices["class_il"].append(evaluation.class_il)
        self.matrices["task_il"].append(evaluation.task_il)
        if evaluation.nme is not None:
            self.matrices.setdefault(NME, []).append(evaluation.nme)
        t = len(self.steps)
        forgetting = {kind: forgetting_per_task(self.matrices[kind], t) for kind in self.kinds}
        nme = {}
        if evaluation.nme is not None:  # new keys only: the contract's other keys stay as they are
            seen_key, forgetting_key = STEP_KEYS[NME]
            nme = {seen_key: evaluation.seen_acc_nme, forgetting_key: forgetting[NME]}
        self.steps.append(
            {
                "step": task.index,
                "name": task.name,
                "classes": list(task.classes),
                "seen_acc": evaluation.seen_acc,
                "seen_acc_top5": evaluation.seen_acc_top5,
                "seen_acc_task_il": evaluation.seen_acc_task_il,
                "old_acc": evaluation.old_acc,
                "new_acc": evaluation.new_acc,
                "forgetting": forgetting["class_il"],
                "forgetting_task_il": forgetting["task_il"],
                **nme,
                **measures,
            }
        )

    def matrix(self, kind: str) -> list[list[float | None]]:
        """Rows so far, each padded with None to the full number of tasks."""
        return [row + [None] * (self.num_tasks - len(row)) for row in self.matrices.get(kind, [])]

    def seen(self, kind: str) -> list[float]:
        return [step[STEP_KEYS[kind][0]] for step in self.steps]

    def final_per_task(self, kind: str) -> list[dict]:
        """Each task's accuracy after the last step and its drop since the step that learnt it
        (the LwF and MAS papers' numbers; negative: forgotten)."""
        if not self.matrices[kind]:
            return []
        last = self.matrices[kind][-1]
        return [
            {"name": step["name"], "acc": last[j], "drop": last[j] - self.matrices[kind][j][j]}
            for j, step in enumerate(self.steps[: len(last)])
        ]

    def summary(self) -> dict[str, dict]:
        return {kind: summarize(self.matrices[kind], self.seen(kind)) for kind in self.kinds}

    def state_dict(self) -> dict:
        return {"matrices": self.matrices, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        # checkpoints written before the name changed call the matrices "rows"
        self.matrices = state["matrices"] if "matrices" in state else state["rows"]
        self.steps = state["steps"]

    def to_dict(self) -> dict:
        return {
            "config": self.config,
            "choices": self.choices,
            "recipe": self.recipe,
            "finished": self.finished,
            "accuracy_matrix": {kind: self.matrix(kind) for kind in self.kinds},
            "summary": self.summary(),
            "final_per_task": {kind: self.final_per_task(kind) for kind in self.kinds},
            "steps": self.steps,
        }
