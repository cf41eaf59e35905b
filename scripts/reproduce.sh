#!/usr/bin/env bash
# Reproduce one paper table: run its sweep, then cl-report on it (paper numbers beside ours).
#
#   scripts/reproduce.sh TABLE [--smoke] [extra cl-run overrides...]
#
# TABLE: der_cifar100 | der_imagenet100 | lwf_mas_cifar100 | sd_cifar100 | lwf_table | mas_table
# Extra overrides go to every job, e.g. a launcher: hydra/launcher=slurm hydra.launcher.partition=gpu
# Results: ${OUT:-reproduce}/TABLE/ (one folder per job) and its report/ (report.md, .csv, .png).
# Every job runs with resume=auto: running the same command again continues unfinished jobs.
#
# --smoke runs the same sweep shrunk so that it finishes in minutes on a CPU: generated
# CIFAR-format files (4 training images per class), one epoch, a ResNet-20, one seed. For
# lwf_table and mas_table: every set generated in its release's format (scripts/synthetic_sets.py)
# and random AlexNet weights in place of the ImageNet and Places365 ones; PRESETS=a,b narrows the
# presets swept (der_cifar100 and der_imagenet100 too: their protocols), METHODS=a,b the methods of
# mas_table (and the der tables' rows run apart from DER).
set -euo pipefail

usage() {
  echo "usage: $0 der_cifar100|der_imagenet100|lwf_mas_cifar100|sd_cifar100|lwf_table|mas_table [--smoke] [overrides...]" >&2
  exit 2
}
[ $# -ge 1 ] || usage
table=$1; shift
smoke=0
if [ "${1:-}" = "--smoke" ]; then smoke=1; shift; fi

here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python}
cl_run=(${CL_RUN:-cl-run})
cl_report=(${CL_REPORT:-cl-report})
out=${OUT:-reproduce}/$table$([ $smoke = 1 ] && echo _smoke || true)
seeds=${SEEDS:-0,1,2}

# A table is a list of sweeps (one `cl-run -m` each): the overrides it sweeps (they name its job
# folders), the fixed ones of a full run, and those that replace them in a --smoke run (with the
# table's shrink and every smoke run's keys). No override in these lists contains a space.
sweeps=()
sweep() { sweeps+=("$1|${2:-}|${3:-}"); }
# the rows a table runs beside its main method, in its order; METHODS=a,b narrows them
rows() { local list=,${METHODS:-$1},; for m in ${1//,/ }; do [[ $list == *,$m,* ]] && echo "$m"; done; true; }
resnet20=++backbone._target_=cl_runner.models.resnet_cifar.resnet20  # ++: a key of the presets' own backbone

case $table in
  der_cifar100)
    # DER and DER w/o P, then the table's other rows (iCaRL, UCIR, BiC, WA, PODNet) on the same
    # protocols: their own recipes (method_dataset/<method>_cifar100) on DER's ResNet-18 and
    # class order, as the table ran them (its #P is 11.22M for every one of them); RPSNet on its
    # own network. The smoke run leaves out B0 50 steps (50 tasks: minutes on its own), and
    # shrinks each method's own stages too (BiC holds 20 images of each class out: the smoke
    # files have 4).
    protocols=der_cifar100_b0_5,der_cifar100_b0_10,der_cifar100_b0_20,der_cifar100_b50_2,der_cifar100_b50_5,der_cifar100_b50_10
    [ $smoke = 1 ] || protocols=$protocols,der_cifar100_b0_50
    protocols=${PRESETS:-$protocols}
    order=class_order=$("$python" -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['class_order'])" \
      "$here/../configs/method_dataset/der_cifar100.yaml" | tr -d ' ')
    small="memory.size=200 memory.per_class=null"
    sweep "experiment=$protocols method.prune=true,false" "" \
      "$resnet20 $small ++method.balanced_epochs=1 train.warmup_epochs=0"
    declare -A own_stages=([bic]="method.bias_epochs=2 validation=2" [podnet]="method.cbf_epochs=2 method.proxies=2"
                           [ucir]="method.cbf_epochs=2")
    for m in $(rows icarl,ucir,bic,wa,podnet); do
      sweep "experiment=$protocols method=$m" "backbone=resnet18 $order" \
        "backbone=resnet20 $order $small train.first_task.epochs=1 ${own_stages[$m]:-}"
    done
    # RPSNet on its own network, 8 candidate runs per task, the best on a 10% held-out split
    # kept; the smoke run narrows the bank and runs 2 candidates
    for m in $(rows rpsnet); do
      sweep "experiment=$protocols method=rpsnet" "backbone=rpsnet $order" \
        "backbone=rpsnet $order backbone.width=16 backbone.modules=2 method.candidates=2 validation=1 memory.size=200"
    done ;;
  der_imagenet100)
    # DER w/o P (the official ImageNet config is der_womask; B0's pre-activation ResNet-18 has no
    # channel plan), then the table's other rows on the same protocols with their own ImageNet
    # recipes (method_dataset/<method>_imagenet100) on the standard ResNet-18, and RPSNet on its
    # ImageNet network.
    [ $smoke = 0 ] || { echo "$0: no smoke run for $table (ImageNet files cannot be generated to scale here)" >&2; exit 2; }
    protocols=${PRESETS:-der_imagenet100_b0_10,der_imagenet100_b50_10}
    sweep "experiment=$protocols method.prune=false"
    for m in $(rows icarl,ucir,bic,wa,podnet); do
      sweep "experiment=$protocols method=$m" "backbone=resnet18 backbone.stem=imagenet"
    done
    for m in $(rows rpsnet); do sweep "experiment=$protocols method=rpsnet" "backbone=rpsnet"; done ;;
  lwf_mas_cifar100)
    sweep "experiment=lwf_cifar100_b0_10,mas_cifar100_b0_10" "" "backbone=resnet20" ;;
  sd_cifar100)
    sweep "experiment=sd_cifar100_b0_1 method=sd,finetune" "" "$resnet20" ;;
  lwf_table)
    # TPAMI Table 1(a). Feature extraction runs apart: no warm-up (it trains only heads anyway)
    # at its own 5x rate (method.lr_scale).
    presets=lwf_imagenet_voc,lwf_imagenet_cub,lwf_imagenet_scenes,lwf_imagenet_mnist
    presets=${PRESETS:-$presets,lwf_places365_voc,lwf_places365_cub,lwf_places365_scenes}
    sweep "experiment=$presets method=lwf,finetune,finetune_fc,joint"
    sweep "experiment=$presets method=feature_extraction method.head_epochs=0" ;;
  mas_table)
    # The table's nine rows. IMM's two (mean and mode) run apart: method.mode exists for IMM
    # alone; EBLL runs apart too, as its smoke run shrinks its autoencoder's stage.
    presets=${PRESETS:-mas_birds_scenes,mas_scenes_birds,mas_flowers_birds,mas_flowers_scenes,mas_8tasks}
    swept=$(rows finetune,lwf,ewc,si,mas,joint | paste -sd, -)
    [ -z "$swept" ] || sweep "experiment=$presets method=$swept"
    [ -z "$(rows imm)" ] || sweep "experiment=$presets method=imm method.mode=mean,mode"
    [ -z "$(rows ebll)" ] || sweep "experiment=$presets method=ebll" "" "method.ae_epochs=2" ;;
  *) usage ;;
esac

smoke_keys=()  # every sweep's in a smoke run
if [ $smoke = 1 ] && [ "${presets:-}" ]; then
  seeds=${SEEDS:-0}
  # Every set in its release's format, and random weights where the pretrained ones would be:
  # torchvision's hub cache (ImageNet) and the Places365 release's path under the data root.
  "$python" "$here/synthetic_sets.py" "$out/data" >/dev/null
  export CL_RUNNER_DATA=$out/data TORCH_HOME=$out/torch
  "$python" - "$out" <<'PY'
import sys
from pathlib import Path

import torch
from torchvision.models import alexnet

out = Path(sys.argv[1])
for path, classes in ((out / "torch/hub/checkpoints/alexnet-owt-7be5be79.pth", 1000),
                      (out / "data/weights/alexnet_places365.pth.tar", 365)):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(alexnet(num_classes=classes).state_dict(), path)
PY
  smoke_keys=(train.batch_size=8 train.epochs=1 logger=local)
elif [ $smoke = 1 ]; then
  seeds=${SEEDS:-0}
  "$python" "$here/synthetic_cifar.py" "$out/data" --train-per-class 4 --test-per-class 2 >/dev/null
  smoke_keys=("++dataset.root=$out/data" train.epochs=1 train.batch_size=32 train.lr=0.01 logger=local)
fi

for entry in "${sweeps[@]}"; do
  IFS='|' read -r swept full small <<< "$entry"
  read -ra swept <<< "$swept"
  if [ $smoke = 1 ]; then read -ra fixed <<< "$small"; fixed+=(${smoke_keys[@]+"${smoke_keys[@]}"}); else read -ra fixed <<< "$full"; fi
  # job folders are named by the swept overrides only (a class order would make a name too long)
  names=()
  if [ ${#fixed[@]} -gt 0 ]; then
    keys=$(printf '%s\n' "${fixed[@]}" | sed 's/^[+~]*//; s/=.*//' | paste -sd, -)
    names=("hydra.job.config.override_dirname.exclude_keys=[dataset.root,dataset.train_list,dataset.val_list,resume,$keys]")
  fi
  "${cl_run[@]}" -m "${swept[@]}" "seed=$seeds" resume=auto ${fixed[@]+"${fixed[@]}"} "$@" "hydra.sweep.dir=$out" \
    ${names[@]+"${names[@]}"}
done
"${cl_report[@]}" "$out" --out "$out/report"
