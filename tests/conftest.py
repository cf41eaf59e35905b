import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from cl_runner.paths import config_dir

CONFIGS = config_dir()


def make_cfg(*overrides: str):
    """The composed config, exactly as `cl-run` would build it from these overrides."""
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def spec_of(cfg, choices: dict | None = None, overrides=()):
    """The run spec `cl-run` would read from this config, its `auto` values decided."""
    from cl_runner.spec import RunSpec, resolve_device

    spec = RunSpec.from_config(cfg, choices, overrides, CONFIGS)
    return spec.on(resolve_device(spec.device))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


# A run small enough for a unit test: synthetic data, tiny backbone, one epoch.
TINY = ["dataset=synthetic", "backbone=resnet20", "train.epochs=1", "device=cpu", "logger=local"]


def cl_run(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed console script, as a user would call it."""
    exe = Path(sys.executable).with_name("cl-run")
    return subprocess.run(
        [str(exe), *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})},
        timeout=600,
    )  # fmt: skip


@pytest.fixture
def tiny_cfg():
    return lambda *overrides: make_cfg(*TINY, *overrides)
