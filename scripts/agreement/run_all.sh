#!/usr/bin/env bash
# Rerun the whole agreement study: every pair, every seed, both sides, then the switches, then
# the table. Runs one training at a time on one thread (comparable wall times); a result that
# exists already is kept, so an interrupted run continues where it stopped.
#
#   scripts/agreement/run_all.sh PYCIL_CHECKOUT FACIL_CHECKOUT
#
# Environment (defaults in brackets):
#   OURS        the cl_runner checkout to test [the repository this script is in]
#   OURS_PY     its Python [$OURS/.venv/bin/python]
#   THEIR_PY    a Python with torch, torchvision, numpy, scipy, tqdm for PyCIL and FACIL [python3]
#   DATA        where the CIFAR-format MNIST subset is written [/work/scratch/data]
#   OUT         results and run folders [/work/scratch/agreement]
#   SEEDS       [1993 1994 1995];  E_MEM, E_NOMEM: epochs per task with / without a memory [4, 4]
#   ONLY        a subset of jobs, e.g. "pycil:der facil:lwf" [all]
#   SWITCH_SEEDS the seeds that also run the switches that reproduce the other side [$SEEDS]
set -euo pipefail
PYCIL=$(realpath "$1"); FACIL=$(realpath "$2")
HERE=$(cd "$(dirname "$0")" && pwd)
OURS=${OURS:-$(cd "$HERE/../.." && pwd)}
OURS_PY=${OURS_PY:-$OURS/.venv/bin/python}
THEIR_PY=${THEIR_PY:-python3}
DATA=${DATA:-/work/scratch/data}
OUT=${OUT:-/work/scratch/agreement}
SEEDS=${SEEDS:-1993 1994 1995}
E_MEM=${E_MEM:-4}
E_NOMEM=${E_NOMEM:-4}
ONLY=${ONLY:-}
SWITCH_SEEDS=${SWITCH_SEEDS:-$SEEDS}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
RES=$OUT/results
mkdir -p "$RES" "$OUT/runs"

[ -f "$DATA/cifar-10-batches-py/test_batch" ] || PYTHONPATH=$OURS "$OURS_PY" "$HERE/write_data.py" "$DATA"

switched() { [[ " $SWITCH_SEEDS " == *" $1 "* ]]; }
wanted() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }
epochs() { case $1 in icarl|wa|der) echo "$E_MEM" ;; *) echo "$E_NOMEM" ;; esac; }

theirs() {  # pair method seed [extra args]
  local pair=$1 m=$2 s=$3; shift 3
  local out=$RES/$pair-$m-$s-theirs.json
  [ -f "$out" ] && return 0
  echo "== $pair $m seed $s: theirs"
  "$THEIR_PY" "$HERE/$pair.py" --repo "$([ "$pair" = pycil ] && echo "$PYCIL" || echo "$FACIL")" \
    --method "$m" --seed "$s" --epochs "$(epochs "$m")" --data "$DATA" --out "$out" "$@" \
    > "${out%.json}.log" 2>&1 || { echo "failed: see ${out%.json}.log"; return 0; }
  tail -1 "${out%.json}.log"
}

ours() {  # pair method seed tag [--set overrides...] [--trace-task T]
  local pair=$1 m=$2 s=$3 tag=$4; shift 4
  local out=$RES/$pair-$m-$s-$tag.json
  [ -f "$out" ] && return 0
  echo "== $pair $m seed $s: $tag"
  "$OURS_PY" "$HERE/ours.py" --repo "$OURS" --python "$OURS_PY" --pair "$pair" --method "$m" \
    --seed "$s" --epochs "$(epochs "$m")" --data "$DATA" --rundir "$OUT/runs/$pair-$m-$s-$tag" \
    --out "$out" "$@" || { echo "failed: see ${out%.json}.log"; return 0; }
}

for s in $SEEDS; do
  # DER first: the run of seed 1993 also records every batch's loss of task 2 (index 1) on both sides
  trace=(); [ "$s" = 1993 ] && trace=(--trace-task 1)
  if wanted pycil:der; then
    theirs pycil der "$s" "${trace[@]}"
    ours pycil der "$s" ours "${trace[@]}"
    # the switch: PyCIL's classifier (old rows copied, a bias) and no balanced re-training
    switched "$s" && ours pycil der "$s" switch --set method.reuse_classifier=true method.classifier_bias=true \
      method.balanced_epochs=0 "${trace[@]}"
  fi
  if wanted pycil:wa; then
    theirs pycil wa "$s"; ours pycil wa "$s" ours
    switched "$s" && ours pycil wa "$s" switch --set method.clip=false  # PyCIL's WA does not clip the weights
  fi
  for m in icarl lwf finetune ewc; do
    if wanted "pycil:$m"; then theirs pycil "$m" "$s"; ours pycil "$m" "$s" ours; fi
  done
  for m in lwf ewc mas si icarl; do
    if wanted "facil:$m"; then theirs facil "$m" "$s"; ours facil "$m" "$s" ours; fi
  done
done

"$OURS_PY" "$HERE/compare.py" "$RES" | tee "$OUT/table.md"
