#!/usr/bin/env bash
# Everything only a GPU can show, in about 8 minutes on one GPU: the CUDA tests, short DER and
# LwF runs with AMP, channels_last and torch.compile, a SIGKILL + resume that must end identical,
# and bench.py on the GPU. Writes gpu_check.json (into $OUT when set) and prints a summary.
#
#   scripts/gpu_check.sh                  # on the GPU machine, from the repository root
#   PYTHON=/path/to/python scripts/gpu_check.sh --device cuda:1
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout itself, installed or not
missing=$("$PYTHON" - <<'PY'
import importlib.util
names = ["torch", "torchvision", "hydra", "omegaconf", "rich", "sklearn", "mlxtend", "pytest"]
print(" ".join(n for n in names if importlib.util.find_spec(n) is None))
PY
)
if [ -n "$missing" ]; then
  echo "gpu_check: $PYTHON lacks: $missing (make .venv/.installed TORCH=\"torch torchvision\", or PYTHON=...)" >&2
  exit 2
fi
exec "$PYTHON" scripts/gpu_check.py --out "${OUT:-.}/gpu_check.json" "$@"
