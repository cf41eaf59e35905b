"""The run folder: resolved config, metrics.json (the stable contract), metrics.csv."""

import csv
import io
import json
from pathlib import Path

from cl_runner.atomic import write_text
from cl_runner.loggers import Logger
from cl_runner.results import Results


def csv_text(results: Results) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    nme = "nme" in results.kinds  # a memory: the nearest-mean-of-exemplars accuracy, last
    writer.writerow(
        ["step", "task", "class_il_acc", "task_il_acc", "class_il_forgetting", "task_il_forgetting"]
        + (["nme_acc"] if nme else [])
    )
    for t, step in enumerate(results.steps):
        for j in range(t + 1):
            forgetting = (step["forgetting"][j], step["forgetting_task_il"][j]) if j < t else ("", "")
            writer.writerow(
                [t, j, results.matrices["class_il"][t][j], results.matrices["task_il"][t][j], *forgetting]
                + ([results.matrices["nme"][t][j]] if nme else [])
            )
    return out.getvalue()


class FileLogger(Logger):
    def __init__(self, out_dir: Path, config_yaml: str):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.out_dir / "config.yaml", config_yaml)

    def task_end(self, results: Results):
        write_text(self.out_dir / "metrics.json", json.dumps(results.to_dict(), indent=2))
        write_text(self.out_dir / "metrics.csv", csv_text(results))

    run_end = task_end
