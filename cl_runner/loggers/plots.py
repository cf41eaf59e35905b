"""PNG plots in the run folder: the accuracy matrices as heatmaps and the seen-class curve.

Drawing is best effort: a failure (no fonts, full disk) is warned about once and never stops
training or touches the metrics files.
"""

import logging
from pathlib import Path

from cl_runner.loggers import Logger
from cl_runner.results import Results

log = logging.getLogger("cl_runner")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap_figure(matrix: list[list[float | None]], title: str):
    """Row t = after step t, column j = task j; the upper triangle (unseen tasks) stays blank."""
    import numpy as np

    plt = _pyplot()
    values = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    size = max(3.0, 0.55 * values.shape[1] + 1.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(values, vmin=0, vmax=100, cmap="viridis")
    if values.shape[1] <= 20:
        for (t, j), v in np.ndenumerate(values):
            if not np.isnan(v):
                ax.text(
                    j,
                    t,
                    f"{v:.0f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if v < 60 else "black",
                )
    ax.set_xticks(range(values.shape[1]))
    ax.set_yticks(range(values.shape[0]))
    ax.set_xlabel("task evaluated")
    ax.set_ylabel("after training step")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    return fig


def curve_figure(results: Results):
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4))
    steps = range(len(results.steps))
    ax.plot(steps, results.seen("class_il"), marker="o", label="class-IL")
    ax.plot(steps, results.seen("task_il"), marker="s", label="task-IL")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 100)
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy on all seen classes (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def save_plots(results: Results, out_dir: Path) -> list[Path]:
    plt = _pyplot()
    paths = []
    figures = {
        "accuracy_matrix_class_il.png": heatmap_figure(results.matrix("class_il"), "class-IL accuracy"),
        "accuracy_matrix_task_il.png": heatmap_figure(results.matrix("task_il"), "task-IL accuracy"),
        "seen_accuracy.png": curve_figure(results),
    }
    for name, fig in figures.items():
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        paths.append(out_dir / name)
    return paths


class PlotLogger(Logger):
    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.failed = False

    def run_end(self, results: Results):
        if self.failed:
            return
        try:
            save_plots(results, self.out_dir)
        except Exception as error:  # plots are a convenience: never lose a run over them
            self.failed = True
            log.warning(
                "plots not written (%s: %s); metrics files are unaffected", type(error).__name__, error
            )
