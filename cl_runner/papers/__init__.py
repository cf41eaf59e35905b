"""The papers' numbers, in one registry (cl_runner/papers/*.yaml), keyed by the preset that runs
the paper's protocol. Runs never carry them: `cl-report` looks a run's row up by the preset it
was started from and its method, so correcting a number here changes no run and stops no resume.
"""

from functools import cache
from pathlib import Path

import yaml

FOLDER = Path(__file__).resolve().parent


@cache
def registry() -> dict[str, list[dict]]:
    """Every preset's rows, from all the papers' files."""
    rows: dict[str, list[dict]] = {}
    for path in sorted(FOLDER.glob("*.yaml")):
        paper = yaml.safe_load(path.read_text())
        for preset, entries in (paper.get("presets") or {}).items():
            rows.setdefault(preset, []).extend({"paper": paper["paper"], **entry} for entry in entries)
    return rows


def lookup(preset: str | None, method: str | None, config: dict) -> dict:
    """The paper's row for a run of `method` from `preset`; `config` (flat `a.b` keys) tells a
    method's variants apart (DER with and without pruning). Empty when the paper has none."""
    for row in registry().get(preset or "", []):
        if row["method"] == method and all(config.get(k) == v for k, v in (row.get("when") or {}).items()):
            return row
    return {}
