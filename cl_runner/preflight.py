"""The command line before Hydra sees it: `resume=PATH` expanded into the run's own overrides,
a throw-away folder for the non-leading ranks of torchrun, and the mistakes Hydra would find
only late or report in many lines checked first: a run folder that cannot be created, config
group options that do not exist (inside a sweep Hydra finds one only when its job starts, after
the jobs before it ran), a missing launcher extra, an override that does not parse. Each raises
a `ConfigError`, which `cl-run` prints as one line with exit code 2 like every other mistake."""

import os
import tempfile
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from cl_runner.distributed import Ranks
from cl_runner.errors import ConfigError

# Launchers that come from optional extras of the package: the plugin module and the extra.
LAUNCHER_EXTRAS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "sweep"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
}


def check_launcher(name: str) -> None:
    import importlib.util

    module, extra = LAUNCHER_EXTRAS.get(name, (None, None))
    if module and importlib.util.find_spec(module) is None:
        raise ConfigError(f"hydra/launcher={name} needs the {extra} extra: pip install 'cl_runner[{extra}]'")


def one_line(error: BaseException) -> str:
    """An error's message in one line, its cause's first line beside it."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = error.__cause__
    if cause is not None and str(cause).strip():
        reason = str(cause).strip().splitlines()[0]
        if reason not in lines:
            lines.insert(1, f"({reason})")
    return " ".join(lines)


def check_output_folder(argv: list[str]) -> None:
    """Hydra creates the run folder before any of our code runs; say plainly when it cannot."""
    multirun = "-m" in argv or "--multirun" in argv
    key = "hydra.sweep.dir=" if multirun else "hydra.run.dir="
    given = [a.split("=", 1)[1] for a in argv if a.startswith(key)]
    target = Path(given[-1] if given else ("multirun" if multirun else "outputs")).expanduser().absolute()
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"cannot create the run folder {target}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot create the run folder {target}: {existing} is not writable")


FULL_ERROR = "CL_RUNNER_FULL_ERROR"  # the user's HYDRA_FULL_ERROR, kept while cl-run forces Hydra's on


def full_error() -> bool:
    """The user asked for tracebacks (HYDRA_FULL_ERROR=1)."""
    return os.environ.get(FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR")) == "1"


def command_line(argv: list[str], configs: Path, ranks: Ranks) -> list[str]:
    """The arguments Hydra gets for what the user typed."""
    argv = resume_arguments(argv)
    if not full_error():
        check_overrides(argv, configs)
    return torchrun_arguments(argv, ranks)


def check_overrides(argv: list[str], configs: Path) -> None:
    check_output_folder(argv)
    args = [a for a in argv if "=" in a and not a.startswith("-")]
    parser, overrides = OverridesParser.create(), []
    for arg in args:
        try:
            overrides += parser.parse_overrides([arg])
        except HydraException as error:
            raise ConfigError(f"cannot parse '{arg}': {str(error).splitlines()[0]}") from None
    for override in overrides:
        group = override.key_or_group.lstrip("+~")
        if group == "hydra/launcher" and not override.is_delete():
            check_launcher(override.get_value_element_as_str())
        folder = configs / group
        if override.package or group.startswith("hydra") or not folder.is_dir() or override.is_delete():
            continue
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        options = sorted(p.stem for p in folder.glob("*.yaml"))
        for value in values:
            if value != "null" and value not in options:
                raise ConfigError(f"{group}={value} is unknown; choose from: {', '.join(options)}")


def resume_arguments(argv: list[str]) -> list[str]:
    """`resume=PATH` (or `resume=true hydra.run.dir=PATH`): continue the run in PATH with the
    overrides it was started with; overrides given now replace those keys (and a change that
    alters the experiment is refused later, naming the keys)."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith("resume=")]
    if not values or values[-1].lower() in ("false", "null", "auto"):
        return argv
    folder = values[-1]
    if folder.lower() == "true":
        run_dirs = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
        if not run_dirs:
            raise ConfigError("resume=true needs the run folder: add hydra.run.dir=PATH, or use resume=PATH")
        folder = run_dirs[-1]
    saved_file = Path(folder) / ".hydra" / "overrides.yaml"
    if not saved_file.is_file():
        raise ConfigError(f"resume={folder}: not a cl-run run folder (no .hydra/overrides.yaml)")
    import yaml

    saved = yaml.safe_load(saved_file.read_text()) or []
    given = [a for a in argv if not a.startswith(("resume=", "hydra.run.dir="))]
    given_keys = {a.split("=", 1)[0].lstrip("+~") for a in given if "=" in a}
    kept = [
        o
        for o in saved
        if not o.startswith(("resume=", "hydra.")) and o.split("=", 1)[0].lstrip("+~") not in given_keys
    ]
    return [*kept, *given, f"hydra.run.dir={folder}", "resume=true"]


RANK_FOLDER_PREFIX = "cl-run-rank"


def torchrun_arguments(argv: list[str], ranks: Ranks) -> list[str]:
    """Under torchrun every process is one rank of the same run. Rank 0 keeps Hydra's run
    folder; the others get a throw-away one (the run's real folder is sent to them once the
    processes are connected) and no logging of their own."""
    if not ranks.active:
        return argv
    if "-m" in argv or "--multirun" in argv:
        raise ConfigError(
            "torchrun runs one experiment on several processes; run sweeps (-m) without torchrun"
        )
    if ranks.leader:
        return argv
    folder = tempfile.mkdtemp(prefix=f"{RANK_FOLDER_PREFIX}{ranks.rank}-")
    return [*argv, f"hydra.run.dir={folder}", "hydra.output_subdir=null", "hydra/job_logging=disabled"]
