"""Weights & Biases: per-task metrics against the step index, per-epoch losses, the accuracy
matrix as a table and a heatmap, and the summary numbers.

wandb is imported only when this logger is used. Any W&B failure (no network, no login, a
broken install) is warned about once and turns this logger off; training and the local files
go on regardless.
"""

import logging
import netrc
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from cl_runner.labels import group_name
from cl_runner.loggers import Logger
from cl_runner.results import STEP_KEYS, Results

log = logging.getLogger("cl_runner")


def has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: str) -> str:
    if mode == "auto":
        return "online" if has_credentials() else "offline"
    return mode


def server_url():
    return urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")


def server_reachable(timeout: float = 3.0) -> bool:
    """Whether the W&B server (`WANDB_BASE_URL`, default api.wandb.ai) accepts a connection
    within `timeout`: wandb.init itself retries for about 90 seconds before giving up."""
    url = server_url()
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def run_identity(choices: dict, config: dict) -> dict:
    """group = everything but the seed; name = group + seed; tags = the picked configs."""
    group = group_name(choices, config)
    return {
        "group": group,
        "name": f"{group}-seed{config.get('seed')}",
        "tags": [f"{k}={v}" for k, v in sorted(choices.items())],
    }


def step_metrics(results: Results) -> dict:
    """What W&B plots against `step` after every task."""
    t = len(results.steps) - 1
    step = results.steps[-1]
    summary = results.summary()
    row = {
        "step": t,
        "eval/seen_acc": step["seen_acc"],
        "eval/seen_acc_task_il": step["seen_acc_task_il"],
        "eval/seen_acc_top5": step["seen_acc_top5"],
        "eval/new_acc": step["new_acc"],
        "eval/params": step["params"],
        "eval/train_seconds": step["train_seconds"],
        **{f"time/{phase}": sec for phase, sec in step.get("phase_seconds", {}).items()},
    }
    if step["old_acc"] is not None:
        row["eval/old_acc"] = step["old_acc"]
    if step.get("seen_acc_nme") is not None:
        row["eval/seen_acc_nme"] = step["seen_acc_nme"]
    for kind in results.kinds:
        for j, acc in enumerate(results.matrices[kind][t]):
            row[f"eval/{kind}/acc_task_{j}"] = acc
        if t > 0:
            key = STEP_KEYS[kind][1]
            for j, f in enumerate(step[key]):
                row[f"eval/{kind}/forgetting_task_{j}"] = f
            row[f"eval/{kind}/avg_forgetting"] = summary[kind]["avg_forgetting"]
            row[f"eval/{kind}/bwt"] = summary[kind]["bwt"]
    return row


class WandbLogger(Logger):
    def __init__(
        self,
        out_dir: Path,
        config: dict,
        choices: dict,
        mode: str = "auto",
        project: str = "cl_runner",
        entity: str | None = None,
        group: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
    ):
        self.run = None
        self.epoch = 0
        self.stage = "main"  # the stage whose epochs are being logged
        mode = resolve_mode(mode)
        if mode == "disabled":
            return
        why_offline = "no credentials"
        if mode == "online" and not server_reachable():
            mode, why_offline = "offline", f"{server_url().netloc} unreachable"
        identity = run_identity(choices, config)
        try:
            import wandb

            self.wandb = wandb
            os.environ.setdefault("WANDB_SILENT", "true")
            self.run = wandb.init(
                project=project, entity=entity, mode=mode, dir=str(out_dir), config=config,
                group=group or identity["group"], name=name or identity["name"],
                tags=(tags or []) + identity["tags"], reinit="finish_previous",
            )  # fmt: skip
            self.run.define_metric("step")
            self.run.define_metric("eval/*", step_metric="step")
            self.run.define_metric("epoch")
            self.run.define_metric("train/*", step_metric="epoch")
        except Exception as error:
            self.fail(error)
            return
        if mode == "offline":
            log.warning(
                "W&B: %s, logging offline; upload later with `wandb sync %s`", why_offline, self.run.dir
            )

    def fail(self, error: Exception) -> None:
        log.warning(
            "W&B logging is off for this run (%s: %s); local files are unaffected",
            type(error).__name__,
            error,
        )
        self.run = None

    def _safely(self, action) -> None:
        if self.run is None:
            return
        try:
            action()
        except Exception as error:
            self.fail(error)

    def stage_start(self, task, stage, epochs, batches_per_epoch):
        self.stage = stage

    def epoch_end(self, task, epoch, stats):
        self.epoch += 1
        # the head and main stages are "train/"; a stage of its own (DER's balanced) is "train/<stage>/"
        prefix = "train/" if self.stage in ("head", "main") else f"train/{self.stage}/"
        row = {f"{prefix}{k}": v for k, v in stats.items()}
        self._safely(lambda: self.run.log({**row, "train/task": task.index, "epoch": self.epoch}))

    def task_end(self, results: Results):
        self._safely(lambda: self.run.log(step_metrics(results)))

    def run_end(self, results: Results):
        def finish():
            import numpy as np

            from cl_runner.loggers.plots import _pyplot, heatmap_figure

            def image(matrix, title):
                fig = heatmap_figure(matrix, title)
                fig.canvas.draw()
                pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
                _pyplot().close(fig)
                return self.wandb.Image(pixels)

            payload = {}
            for kind in results.kinds:
                matrix = results.matrix(kind)
                columns = ["after_step"] + [f"task_{j}" for j in range(results.num_tasks)]
                payload[f"accuracy_matrix/{kind}"] = self.wandb.Table(
                    columns=columns, data=[[t, *row] for t, row in enumerate(matrix)]
                )
                payload[f"accuracy_matrix/{kind}_heatmap"] = image(
                    matrix, kind.replace("_il", "-IL accuracy")
                )
            self.run.log(payload)
            for kind, values in results.summary().items():
                for key, value in values.items():
                    self.run.summary[f"{kind}/{key}"] = value
                for j, entry in enumerate(results.final_per_task(kind)):  # the LwF/MAS tables' numbers
                    self.run.summary[f"{kind}/final_acc_task_{j}"] = entry["acc"]
                    self.run.summary[f"{kind}/final_drop_task_{j}"] = entry["drop"]
            for kind, values in results.validation_summary().items():  # the held-out split's
                for key, value in values.items():
                    self.run.summary[f"validation/{kind}/{key}"] = value
            for choice in results.hparams:  # the continual search's choice per task
                for key, value in choice.items():
                    if key not in ("task", "trials"):
                        self.run.summary[f"hparams/task_{choice['task']}/{key}"] = value
            for key, value in results.cost().items():
                self.run.summary[f"cost/{key}"] = value
            self.run.finish()

        self._safely(finish)
        self.run = None
