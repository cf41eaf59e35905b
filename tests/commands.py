"""cl-run's entry point for several command lines in one fresh process, one after another: each
one's exit code and what it wrote to stderr. Error paths end before any training, so starting
Python and torch once for all of them is what a test of the messages can save.

    python -m tests.commands '[["method=nope"], ["steps=ten"]]'   # prints [[2, "cl-run: ..."], ...]
"""

import contextlib
import io
import json
import os
import sys

from cl_runner.train import main


def run(args: list[str]) -> tuple[int | str | None, str]:
    stderr = io.StringIO()
    sys.argv = ["cl-run", *args]
    with contextlib.redirect_stderr(stderr):
        try:
            main()
            code = 0
        except SystemExit as stop:
            code = stop.code
    return code, stderr.getvalue()


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "disabled")
    print(json.dumps([run(args) for args in json.loads(sys.argv[1])]))
