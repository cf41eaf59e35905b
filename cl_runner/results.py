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
    validation: "Evaluation | None" = None  # the same on the held-out split (`validation`)


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
        # the held-out split's matrices and per-step seen accuracy, where `validation` is set
        self.validation: dict[str, list] = {}
        self.hparams: list[dict] = []  # per task: what the continual search chose (hparams.py)
        self.candidates: list[dict] = []  # per task: the candidates' scores and the one kept (RPSNet)
        self.device = "unknown"  # the device's name, for the cost (set by the run)
        self.devices = 1  # processes (one device each) that ran it

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
        if evaluation.validation is not None:
            self.add_validation(evaluation.validation)
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

    def add_validation(self, evaluation: Evaluation) -> None:
        held = self.validation
        for kind, row, seen in (("class_il", evaluation.class_il, evaluation.seen_acc),
                                ("task_il", evaluation.task_il, evaluation.seen_acc_task_il),
                                (NME, evaluation.nme, evaluation.seen_acc_nme)):  # fmt: skip
            if row is not None:
                held.setdefault(kind, []).append(row)
                held.setdefault(f"seen_{kind}", []).append(seen)

    def cost(self) -> dict:
        """What the numbers cost: the network's parameters at the end and at their largest (DER's
        before pruning included), the exemplar memory (images, MB as held), the images trained
        on over every epoch of every stage, and the time, on every device together."""
        if not self.steps:
            return {}
        last = self.steps[-1]
        peak = max(max(s.get("params") or 0, s.get("params_unpruned") or 0) for s in self.steps)
        wall = sum(sum(s.get("phase_seconds", {}).values()) for s in self.steps)
        return {
            "params_final": last.get("params"),
            "params_peak": peak or None,
            "exemplars": last.get("memory_size"),
            "exemplar_mb": last.get("memory_mb"),
            "images_trained": last.get("images_trained"),
            "wall_seconds": wall,
            "device": self.device,
            "devices": self.devices,
            "device_hours": wall * self.devices / 3600,
        }

    def validation_summary(self) -> dict[str, dict]:
        """The held-out split's summary, as the test set's (empty without a split)."""
        kinds = [k for k in (*KINDS, NME) if k in self.validation]
        return {k: summarize(self.validation[k], self.validation[f"seen_{k}"]) for k in kinds}

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
        return {"matrices": self.matrices, "steps": self.steps, "validation": self.validation,
                "hparams": self.hparams, "candidates": self.candidates}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        # checkpoints written before the name changed call the matrices "rows"
        self.matrices = state["matrices"] if "matrices" in state else state["rows"]
        self.steps = state["steps"]
        self.validation = state.get("validation", {})
        self.hparams = state.get("hparams", [])
        self.candidates = state.get("candidates", [])

    def to_dict(self) -> dict:
        held = {}
        if self.validation:  # new keys only, where the run holds images out
            kinds = [k for k in (*KINDS, NME) if k in self.validation]
            pad = [None] * self.num_tasks
            matrices = {k: [(row + pad)[: self.num_tasks] for row in self.validation[k]] for k in kinds}
            held = {"validation": {"accuracy_matrix": matrices, "summary": self.validation_summary()}}
        return {
            "config": self.config,
            "choices": self.choices,
            "recipe": self.recipe,
            "finished": self.finished,
            "accuracy_matrix": {kind: self.matrix(kind) for kind in self.kinds},
            "summary": self.summary(),
            "final_per_task": {kind: self.final_per_task(kind) for kind in self.kinds},
            "steps": self.steps,
            "cost": self.cost(),
            **held,
            **({"hparams": self.hparams} if self.hparams else {}),
            **({"candidates": self.candidates} if self.candidates else {}),
        }
