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

case $table in
  der_cifar100)
    # DER and DER w/o P, then the table's other rows (iCaRL, UCIR, BiC, WA, PODNet) on the same
    # protocols: their own recipes (method_dataset/<method>_cifar100) on DER's ResNet-18 and
    # class order, as the table ran them (its #P is 11.22M for every one of them); RPSNet on its
    # own network. The smoke run leaves out B0 50 steps (50 tasks: minutes on its own).
    protocols=der_cifar100_b0_5,der_cifar100_b0_10,der_cifar100_b0_20,der_cifar100_b50_2,der_cifar100_b50_5,der_cifar100_b50_10
    [ $smoke = 1 ] || protocols=$protocols,der_cifar100_b0_50
    protocols=${PRESETS:-$protocols}
    sweep=(experiment=$protocols method.prune=true,false)
    order=$("$python" -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['class_order'])" \
      "$here/../configs/method_dataset/der_cifar100.yaml" | tr -d ' ')
    apart_methods=$(echo ",${METHODS:-icarl,ucir,bic,wa,podnet}," | sed 's/,rpsnet,/,/g; s/^,//; s/,$//')
    apart=(); [ "$apart_methods" ] && apart=(experiment=$protocols method=$apart_methods)
    apart_fixed=(backbone=resnet18 "class_order=$order")
    shrink=(++backbone._target_=cl_runner.models.resnet_cifar.resnet20 memory.size=200 memory.per_class=null
            ++method.balanced_epochs=1 train.warmup_epochs=0)
    apart_shrink=("class_order=$order" backbone=resnet20 memory.size=200 memory.per_class=null
                  train.first_task.epochs=1)
    # the smoke run shrinks each method's own stages too, one method at a time (BiC holds 20
    # images of each class out: the smoke files have 4)
    declare -A method_shrink=([bic]="method.bias_epochs=2 validation=2" [podnet]="method.cbf_epochs=2 method.proxies=2"
                              [ucir]="method.cbf_epochs=2")
    # RPSNet on its own network (backbone=rpsnet), 8 candidate runs per task, the best on a 10%
    # held-out split kept; the smoke run narrows the bank and runs 2 candidates
    if [[ ,${METHODS:-rpsnet}, == *,rpsnet,* ]]; then
      own_rows=(experiment=$protocols method=rpsnet) own_fixed=(backbone=rpsnet "class_order=$order") own_alone=1
      own_smoke=(backbone.width=16 backbone.modules=2 method.candidates=2 validation=1 memory.size=200)
    fi ;;
  der_imagenet100)
    # DER w/o P (the official ImageNet config is der_womask; B0's pre-activation ResNet-18 has no
    # channel plan), then the table's other rows on the same protocols with their own ImageNet
    # recipes (method_dataset/<method>_imagenet100) on the standard ResNet-18, and RPSNet on its
    # ImageNet network.
    protocols=${PRESETS:-der_imagenet100_b0_10,der_imagenet100_b50_10}
    sweep=(experiment=$protocols method.prune=false)
    apart_methods=$(echo ",${METHODS:-icarl,ucir,bic,wa,podnet}," | sed 's/,rpsnet,/,/g; s/^,//; s/,$//')
    apart=(); [ "$apart_methods" ] && apart=(experiment=$protocols method=$apart_methods)
    apart_fixed=(backbone=resnet18 backbone.stem=imagenet)
    if [[ ,${METHODS:-rpsnet}, == *,rpsnet,* ]]; then
      own_rows=(experiment=$protocols method=rpsnet) own_fixed=(backbone=rpsnet) own_alone=1
    fi
    [ $smoke = 0 ] || { echo "$0: no smoke run for $table (ImageNet files cannot be generated to scale here)" >&2; exit 2; } ;;
  lwf_mas_cifar100)
    sweep=(experiment=lwf_cifar100_b0_10,mas_cifar100_b0_10)
    shrink=(backbone=resnet20) ;;
  sd_cifar100)
    sweep=(experiment=sd_cifar100_b0_1 method=sd,finetune)
    shrink=(++backbone._target_=cl_runner.models.resnet_cifar.resnet20) ;;
  lwf_table)
    # TPAMI Table 1(a). Feature extraction runs apart: no warm-up (it trains only heads
    # anyway) at its own 5x rate (method.lr_scale).
    presets=lwf_imagenet_voc,lwf_imagenet_cub,lwf_imagenet_scenes,lwf_imagenet_mnist
    presets=${PRESETS:-$presets,lwf_places365_voc,lwf_places365_cub,lwf_places365_scenes}
    sweep=(experiment=$presets method=lwf,finetune,finetune_fc,joint)
    apart=(experiment=$presets method=feature_extraction method.head_epochs=0)
    shrink=(train.batch_size=8) ;;
  mas_table)
    # The table's nine rows. IMM's two (mean and mode) run apart: method.mode exists for IMM
    # alone; EBLL runs apart too, as its smoke run shrinks its autoencoder's stage.
    presets=${PRESETS:-mas_birds_scenes,mas_scenes_birds,mas_flowers_birds,mas_flowers_scenes,mas_8tasks}
    methods=,${METHODS:-finetune,lwf,ebll,imm,ewc,si,mas,joint},
    swept=$(echo "$methods" | tr , '\n' | grep -vx -e '' -e imm -e ebll | paste -sd, -)
    sweep=(); [ "$swept" ] && sweep=(experiment=$presets method=$swept)
    [[ $methods == *,imm,* ]] && apart=(experiment=$presets method=imm method.mode=mean,mode)
    [[ $methods == *,ebll,* ]] && own_rows=(experiment=$presets method=ebll) own_smoke=(method.ae_epochs=2)
    shrink=(train.batch_size=8) ;;
  *) usage ;;
esac

extra=()  # ++: these keys exist only in the swept presets, not in the sweep's base config
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
  extra=("${shrink[@]}" train.epochs=1 logger=local)
elif [ $smoke = 1 ]; then
  seeds=${SEEDS:-0}
  "$python" "$here/synthetic_cifar.py" "$out/data" --train-per-class 4 --test-per-class 2 >/dev/null
  extra=("${shrink[@]}" "++dataset.root=$out/data" train.epochs=1 train.batch_size=32 train.lr=0.01 logger=local)
fi
apart_extra=("${extra[@]}")  # the rows run apart shrink alike, unless they have keys of their own
if [ $smoke = 1 ] && [ "${apart_shrink:-}" ]; then
  apart_extra=("${apart_shrink[@]}" "${extra[@]:${#shrink[@]}}")
elif [ "${apart_fixed:-}" ]; then
  apart_extra=("${apart_fixed[@]}" "${extra[@]}")
fi

folder_names() {  # job folders are named by the swept keys only: the shrink keys are the same for every job
  local fixed
  fixed=$(printf '%s\n' "$@" | sed 's/^[+~]*//; s/=.*//' | paste -sd, -)
  echo "hydra.job.config.override_dirname.exclude_keys=[dataset.root,dataset.train_list,dataset.val_list,resume,$fixed]"
}
if [ $smoke = 1 ]; then
  extra+=("$(folder_names "${extra[@]}")")
fi

if [ ${#sweep[@]} -gt 0 ]; then
  "${cl_run[@]}" -m "${sweep[@]}" "seed=$seeds" resume=auto "${extra[@]}" "$@" "hydra.sweep.dir=$out"
fi
if [ "${apart:-}" ] && [ $smoke = 1 ] && declare -p method_shrink &>/dev/null; then
  for m in $(echo "${apart[1]#method=}" | tr , ' '); do
    read -ra own <<< "${method_shrink[$m]:-}"
    "${cl_run[@]}" -m "${apart[0]}" "method=$m" "${own[@]}" "seed=$seeds" resume=auto "${apart_extra[@]}" "$@" \
      "hydra.sweep.dir=$out" "$(folder_names "${apart_extra[@]}" "${own[@]}")"
  done
elif [ "${apart:-}" ]; then
  names=()  # a class order would make a folder name too long
  [ $smoke = 1 ] || [ "${apart_fixed:-}" ] && names=("$(folder_names "${apart_extra[@]}")")
  "${cl_run[@]}" -m "${apart[@]}" "seed=$seeds" resume=auto "${apart_extra[@]}" "$@" "hydra.sweep.dir=$out" "${names[@]}"
fi
if [ "${own_rows:-}" ]; then  # rows with keys of their own (EBLL's stage, RPSNet's network) to shrink apart
  own=(); [ $smoke = 1 ] && own=("${own_smoke[@]}")
  own_extra=("${apart_extra[@]}")  # own_alone: none of the apart rows' fixed keys (their backbone)
  [ "${own_alone:-}" ] && own_extra=("${extra[@]:${#shrink[@]}}")
  own_extra=(${own_fixed[@]+"${own_fixed[@]}"} ${own_extra[@]+"${own_extra[@]}"})
  names=(); [ $smoke = 1 ] || [ "${own_fixed:-}" ] && names=("$(folder_names "${own_extra[@]}" ${own[@]+"${own[@]}"})")
  "${cl_run[@]}" -m "${own_rows[@]}" ${own[@]+"${own[@]}"} "seed=$seeds" resume=auto "${own_extra[@]}" "$@" \
    "hydra.sweep.dir=$out" ${names[@]+"${names[@]}"}
fi
"${cl_report[@]}" "$out" --out "$out/report"
