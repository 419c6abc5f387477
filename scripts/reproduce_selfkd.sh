#!/usr/bin/env bash
# Reproduce the self-distillation comparison table on CIFAR-100: every method alone and + Tf-FD x N seeds.
#
#   scripts/reproduce_selfkd.sh [--gpus 0,1,2,3] [--jobs N] [--seeds 0,1,2] [--epochs N] [--model NAME]
#                               [--methods M,M...] [--root DIR] [--data-root DIR] [--set KEY=VALUE]... [--dry-run]
#   scripts/reproduce_selfkd.sh --executor slurm [--partition P] [--gpus-per-job 1] [--timeout-min M] [OPTIONS...]
#                               submits every run as a SLURM job (arrays, teachers first, afterok dependencies) and
#                               returns; re-run it to resubmit failed runs (scripts/launch.py; --nodes, --slurm-log-dir)
#   python scripts/collect_results.py runs/cifar100_selfkd   # method x {alone, + Tf-FD}, beside published numbers
#
# All runs use Self-KD-Lib's protocol (configs/_base_/schedules/selfkd_200e.yaml): 200 epochs, batch 128,
# lr 0.1 with a 5-epoch per-step linear warm-up, x0.1 at epochs 105 and 155, wd 5e-4, Nesterov.
# For each method M of METHODS (or of --methods):
#   alone    configs/cifar100/selfkd/cifar_resnet18_<M>.yaml
#   + Tf-FD  configs/cifar100/selfkd/cifar_resnet18_<M>_tffd.yaml   (M's terms and transforms + tffd)
# except ce and tffd, which are one run each: CE + Tf-FD is the tffd config itself.
# --model NAME trains another backbone with the same configs (model.name=NAME): cifar_resnet18 (default,
# post-activation) or preact_resnet18 (PreAct ResNet-18, the backbone of Self-KD-Lib's published table),
# or any timm model, timm/<architecture> (its keyword arguments by --set, e.g. --set "model.timm_kwargs={img_size:
# 32, patch_size: 4}" for a ViT; without --methods, the methods a timm model refuses, as zipf_ls, are left out).
#
# Run directories: <root>/<model>_<M>/seed<k> and <root>/<model>_<M>_tffd/seed<k> (a timm/<arch> model's <model>:
# timm_<arch>); console output beside each, in <dir>.log. Restartable: finished runs are skipped, unfinished ones resume from their last.pt.
# --epochs N is a quick pass: the milestones, the lr warm-up and the Tf-FD warm-up scale with N (a warm-up
# shorter than one epoch becomes none), and the runs go to runs/cifar100_selfkd_e<N> unless --root is given.
# --set adds an override to every run (e.g. --set train.amp=bf16 --set train.channels_last=true).
# The interpreter is $PYTHON (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
METHODS=(ce tffd ddgsd dks sad byot tf_kd_reg cs_kd frskd ps_kd bake mixskd dlb uskd zipf_ls label_smoothing focal max_entropy cutout random_erase mixup cutmix autoaugment)  # a new method: its name here, and its two configs
ALONE_ONLY=" ce tffd "  # methods without a separate + Tf-FD config (CE + Tf-FD is the tffd row)
MODELS=(cifar_resnet18 preact_resnet18)
CONFIG_MODEL=cifar_resnet18  # the backbone the configs name
FULL_EPOCHS=200 MILESTONES=(105 155) LR_WARMUP_EPOCHS=5 TFFD_WARMUP_EPOCHS=20

. scripts/reproduce_common.sh
MODEL=$CONFIG_MODEL ONLY=-  # ONLY: the --methods list, - when not given
while [[ $# -gt 0 ]]; do
  [[ $1 == --*=* ]] && set -- "${1%%=*}" "${1#*=}" "${@:2}"  # --opt=value as --opt value
  case "$1" in
    --model) needs_value "$@"; MODEL=$2; shift 2 ;;
    --methods) needs_value "$@"; ONLY=$2; shift 2 ;;
    *) common_option "$@"; shift "$TAKEN" ;;
  esac
done
check_common_options
[[ " ${MODELS[*]} " == *" $MODEL "* || $MODEL =~ ^timm/[A-Za-z0-9_.]+$ ]] || {
  echo "error: --model takes one of ${MODELS[*]}, got '$MODEL' (or timm/<architecture>: any timm model)" >&2; exit 2; }
MODEL_DIR=${MODEL//\//_}  # timm/<arch> -> timm_<arch>: one directory level per run, as for the others
RUN_METHODS=("${METHODS[@]}")
if [[ $MODEL == timm/* && $ONLY == - ]]; then  # the terms a timm model refuses (models/timm_backbone.py)
  REFUSED=" $("$PYTHON" -c 'from models.timm_backbone import TimmBackbone; print(*TimmBackbone.refuses_terms)') "
  KEPT=()
  for method in "${RUN_METHODS[@]}"; do [[ $REFUSED == *" $method "* ]] || KEPT+=("$method"); done
  echo "note: $MODEL cannot train${REFUSED% }; left out" >&2
  RUN_METHODS=("${KEPT[@]}")
fi
if [[ $ONLY != - ]]; then
  IFS=, read -r -a RUN_METHODS <<< "$ONLY,"  # the trailing comma keeps an empty last name
  (( ${#RUN_METHODS[@]} )) || RUN_METHODS=("")
  for method in "${RUN_METHODS[@]}"; do
    [[ -n $method && " ${METHODS[*]} " == *" $method "* ]] || {
      echo "error: --methods takes a list of ${METHODS[*]} (comma-separated), got '$ONLY'" >&2; exit 2; }
  done
fi

COMMON=()
[[ $MODEL != "$CONFIG_MODEL" ]] && COMMON+=("model.name=$MODEL")
[[ -n $DATA_ROOT ]] && COMMON+=("data.root=$DATA_ROOT")
if [[ -n $EPOCHS ]]; then
  COMMON+=("train.epochs=$EPOCHS" "train.milestones=$(scaled_milestones "${MILESTONES[@]}")"
           "train.lr_warmup_epochs=$(scaled "$LR_WARMUP_EPOCHS")"
           "loss.tffd.warmup_epochs=$(scaled "$TFFD_WARMUP_EPOCHS")")
  ROOT=${ROOT:-runs/cifar100_selfkd_e$EPOCHS}
fi
ROOT=${ROOT:-runs/cifar100_selfkd}
check_extra_keys seed ${COMMON[@]+"${COMMON[@]}"}
COMMON+=(${EXTRA[@]+"${EXTRA[@]}"})

jobs() {
  local seed method variant
  for seed in "${SEED_LIST[@]}"; do  # seed-major: a partial pass still yields whole tables
    for method in "${RUN_METHODS[@]}"; do
      for variant in "$method" "${method}_tffd"; do
        [[ $variant == "${method}_tffd" && $ALONE_ONLY == *" $method "* ]] && continue
        job "$ROOT/${MODEL_DIR}_$variant/seed$seed" "configs/cifar100/selfkd/cifar_resnet18_$variant.yaml" \
            "seed=$seed" ${COMMON[@]+"${COMMON[@]}"}
      done
    done
  done
}

jobs | launch
