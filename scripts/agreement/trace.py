"""Print the per-batch losses of one task from the DER runs recorded with --trace-task.

PyCIL's trace is every cross-entropy its der.py computed in that task, in order: per batch the
classifier's (loss_clf), then the auxiliary one's (loss_aux). cl_runner's is each batch's loss
parts (ce, aux). Prints the batches of the first epoch and every epoch's means, side by side.

Usage: trace.py RESULTS_DIR [method] [seed]
"""

import json
import sys
from pathlib import Path


def main() -> None:
    folder, method = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "der"
    seed = sys.argv[3] if len(sys.argv) > 3 else "1993"
    sides = {}
    for side in ("theirs", "ours", "switch"):
        path = folder / f"pycil-{method}-{seed}-{side}.json"
        if not path.exists() or "trace" not in json.loads(path.read_text()):
            continue
        r = json.loads(path.read_text())
        if side == "theirs":
            ce = r["trace"]["cross_entropies"]
            sides[side] = list(zip(ce[0::2], ce[1::2], strict=False))
        else:
            sides[side] = [(b["ce"], b.get("aux", float("nan"))) for b in r["trace"]["batches"]]
        epochs = r["epochs"]
    names = {"theirs": "PyCIL", "ours": "cl_runner", "switch": "cl_runner + switch"}
    per_epoch = {k: len(v) // epochs for k, v in sides.items()}
    head = ["batch"] + [f"{names[k]} {p}" for k in sides for p in ("CE", "aux")]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for i in range(max(per_epoch.values())):
        cells = [str(i + 1)]
        for k, v in sides.items():
            cells += [f"{v[i][0]:.3f}", f"{v[i][1]:.3f}"] if i < per_epoch[k] else ["", ""]
        print("| " + " | ".join(cells) + " |")
    for e in range(epochs):
        cells = [f"epoch {e + 1} mean"]
        for k, v in sides.items():
            part = v[e * per_epoch[k] : (e + 1) * per_epoch[k]]
            cells += [
                f"{sum(b[0] for b in part) / len(part):.3f}",
                f"{sum(b[1] for b in part) / len(part):.3f}",
            ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
