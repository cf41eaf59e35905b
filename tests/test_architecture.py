"""Imports point one way (docs/architecture.md): each package may import only the layers below
it, so validating a config never imports the loop, and a method sees data only as batches."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cl_runner"

# Plain helpers every layer may use.
BASE = {"errors", "dicts", "paths", "rng", "settings", "atomic", "labels", "metrics", "instantiate", "modes"}
BASE |= {"papers", "stats", "hparams"}
DEVICE = BASE | {"distributed", "precision", "compiled"}

# module (or package) -> the cl_runner modules (or packages) it may import
ALLOWED = {
    **{name: BASE for name in BASE},
    "distributed": BASE,
    "precision": BASE,
    "compiled": BASE,
    "data": DEVICE | {"data"},
    "models": BASE | {"models"},
    "methods": BASE | {"data.batch", "data.schedule", "models", "methods"},
    "spec": BASE | {"data.schedule", "precision"},
    "results": BASE | {"data.schedule"},
    "loggers": BASE | {"results", "loggers"},
    "report": BASE,
    "batchnorm": DEVICE | {"data"},
    "evaluate": DEVICE | {"data", "results"},
    "checkpoint": DEVICE,
    "preflight": DEVICE,
    "runner": DEVICE
    | {"data", "models", "methods", "batchnorm", "evaluate", "results", "checkpoint", "loggers"},
}


def imports_of(path: Path) -> set[str]:
    """The cl_runner modules a file imports, without the package prefix (`data.batch`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cl_runner"):
            if node.module == "cl_runner":
                found |= {alias.name for alias in node.names}
            else:
                found.add(node.module.removeprefix("cl_runner."))
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("cl_runner.")]
            found |= {name.removeprefix("cl_runner.") for name in names}
    return found


def allowed(target: str, rules: set[str]) -> bool:
    return any(target == rule or target.startswith(rule + ".") for rule in rules)


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        if name not in ("train", "__init__"):  # the entry point composes everything
            yield name, path


@pytest.mark.parametrize("name, path", list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_imports_point_down(name, path):
    layer = next(key for key in sorted(ALLOWED, key=len, reverse=True) if allowed(name, {key}))
    wrong = sorted(t for t in imports_of(path) if not allowed(t, ALLOWED[layer]))
    assert not wrong, f"cl_runner.{name} imports {wrong}; see docs/architecture.md"


def test_the_rules_catch_an_upward_import(tmp_path):
    upward = tmp_path / "m.py"
    upward.write_text("from cl_runner.runner import Runner\nfrom cl_runner import evaluate\n")
    assert imports_of(upward) == {"runner", "evaluate"}
    assert not allowed("runner", ALLOWED["methods"]) and not allowed("evaluate", ALLOWED["data"])
