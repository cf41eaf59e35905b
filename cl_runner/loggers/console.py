"""Live console output: a progress bar per task, a table after every task, a final summary."""

import logging

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cl_runner.loggers import Logger
from cl_runner.results import Results

log = logging.getLogger("cl_runner")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def recipe_lines(recipe: dict) -> list[str]:
    """What a run's recipe (method_dataset/) and preset (experiment/) set, one line each: every
    key the file sets, with the value the run has (long lists shortened; `_target_`s by name)."""

    def short(value) -> str:
        if isinstance(value, list) and len(value) > 6:
            return f"[{', '.join(map(str, value[:3]))}, ... ({len(value)} values)]"
        return str(value)

    lines = []
    for kind in ("recipe", "preset"):
        name = recipe.get(kind)
        if name:
            keys = recipe.get("sets", {}).get(name, {})
            shown = [f"{k[: -len('._target_')]}={str(v).rsplit('.', 1)[-1]}" if k.endswith("._target_")
                     else f"{k}={short(v)}" for k, v in keys.items()]  # fmt: skip
            lines.append(f"{kind} {name} sets: " + ", ".join(shown))
    return lines


class ConsoleLogger(Logger):
    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self.progress: Progress | None = None

    def run_start(self, results: Results):
        """The recipe and preset the run applied, and what they set: nothing is picked silently."""
        for line in recipe_lines(results.recipe):
            self.console.print(line, highlight=False)
            log.info("%s", line)

    def stage_start(self, task, stage, epochs, batches_per_epoch):
        if self.progress is not None:
            self.progress.stop()
        label = f"task {task.index} ({task.size} classes)" + ("" if stage == "main" else f" {stage}")
        self.progress = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.bar = self.progress.add_task("train", total=epochs * batches_per_epoch, status="")
        self.progress.start()

    def batch_end(self):
        self.progress.advance(self.bar)

    def epoch_end(self, task, epoch, stats):
        status = f"epoch {epoch + 1} loss {stats['loss']:.3f} {stats['images_per_s']:.0f} img/s"
        self.progress.update(self.bar, status=status)
        log.info(
            "task %d epoch %d: %s", task.index, epoch + 1, ", ".join(f"{k}={v:.4g}" for k, v in stats.items())
        )

    def task_end(self, results: Results):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        step = results.steps[-1]
        t = len(results.steps) - 1
        table = Table(title=f"after task {t}: {len(step['classes'])} new classes", title_justify="left")
        named = step.get("name") is not None  # a sequence of data sets: name them, show the drops
        nme = results.matrices["nme"][t] if "nme" in results.kinds else None  # a memory: iCaRL's classifier
        columns = ["task", "class-IL acc", "task-IL acc", "forgetting (class-IL)"]
        columns += (["NME acc"] if nme else []) + (["drop (task-IL)"] if named else [])
        for column in columns:
            table.add_column(column, justify="right")
        class_il, task_il = results.matrices["class_il"][t], results.matrices["task_il"][t]
        for j in range(t + 1):
            forgetting = step["forgetting"][j] if j < t else None
            cells = [str(j), _pct(class_il[j]), _pct(task_il[j]), _pct(forgetting)]
            if nme:
                cells.append(_pct(nme[j]))
            if named:
                cells[0] = f"{j} {results.steps[j]['name']}"
                cells.append(_pct(task_il[j] - results.matrices["task_il"][j][j]))
            table.add_row(*cells)
        summary = results.summary()
        table.add_section()
        table.add_row(
            "seen",
            _pct(step["seen_acc"]),
            _pct(step["seen_acc_task_il"]),
            _pct(summary["class_il"]["avg_forgetting"]),
            *([_pct(step["seen_acc_nme"])] if nme else []),
            *([_pct(summary["task_il"]["bwt"])] if named else []),
        )
        self.console.print(table)
        log.info(
            "task %d: seen acc %.2f (task-IL %.2f, top-5 %.2f), class-IL per task %s",
            t,
            step["seen_acc"],
            step["seen_acc_task_il"],
            step["seen_acc_top5"],
            [round(a, 2) for a in class_il],
        )
        if step.get("phase_seconds"):
            split = ", ".join(f"{phase} {sec:.1f}" for phase, sec in step["phase_seconds"].items())
            self.console.print(f"seconds: {split}")
            log.info("task %d seconds: %s", t, split)

    def run_end(self, results: Results):
        summary = results.summary()
        table = Table(title="summary (%)", title_justify="left")
        names = {"class_il": "class-IL", "task_il": "task-IL", "nme": "NME (class-IL)"}
        for column in ["metric"] + [names[kind] for kind in results.kinds]:
            table.add_column(column, justify="right")
        for key, label in (
            ("avg_incremental_acc", "average incremental accuracy"),
            ("last_acc", "last accuracy"),
            ("avg_forgetting", "average forgetting"),
            ("bwt", "backward transfer"),
        ):
            table.add_row(label, *[_pct(summary[kind][key]) for kind in results.kinds])
        self.console.print(table)
        log.info("summary: %s", summary)
        if results.steps and results.steps[0].get("name") is not None:
            final = Table(title="each task after the last (%, task-IL)", title_justify="left")
            for column in ("task", "accuracy", "drop since learnt"):
                final.add_column(column, justify="right")
            for j, entry in enumerate(results.final_per_task("task_il")):
                final.add_row(f"{j} {entry['name']}", _pct(entry["acc"]), _pct(entry["drop"]))
            self.console.print(final)
