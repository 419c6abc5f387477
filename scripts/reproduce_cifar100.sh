#!/usr/bin/env bash
# Reproduce the paper's CIFAR-100 table: the four teachers, then six students x four rows x N seeds, and the
# IJCNN version's rows that combine Tf-FD with another method (six configs x N seeds).
#
#   scripts/reproduce_cifar100.sh [--gpus 0,1,2,3] [--jobs N] [--seeds 0,1,2] [--epochs N] [--root DIR]
#                                 [--data-root DIR] [--set KEY=VALUE]... [--dry-run]
#                                 [--tffd-protocol paper|released]   (the Tf-FD row's protocol; default: paper)
#   scripts/reproduce_cifar100.sh --executor slurm [--partition P] [--gpus-per-job 1] [--timeout-min M] [OPTIONS...]
#                                 submits every run as a SLURM job (arrays, teachers first, afterok dependencies) and
#                                 returns; re-run it to resubmit failed runs (scripts/launch.py; --nodes, --slurm-log-dir)
#   python scripts/collect_results.py runs/cifar100          # the table, beside the paper's numbers
#
# Every row is trained under the protocol its paper number came from (docs/METHOD.md): the paper's, which is the
# CRD benchmark's (configs/_base_/protocols/tffd_paper.yaml: 240 epochs, batch 64, lr 0.05 x0.1 at 150/180/210,
# no Nesterov) with lambda_inter 5e-3, lambda_intra 4e-4 for every model:
#   teachers  configs/cifar100/<teacher>_ce.yaml
#   Baseline  configs/cifar100/<student>_ce.yaml
#   Tf-FD     configs/cifar100/<student>_tffd.yaml
#   KD        configs/cifar100/<student>_kd.yaml        0.1 CE + 0.9 KD, T = 4
#   KD+Tf-FD  configs/cifar100/<student>_kd_tffd.yaml
#   IJCNN     configs/cifar100/<student>_label_smoothing_tffd.yaml (TFD†: Tf-FD + label smoothing) for resnet20,
#             resnet32, wrn_16_2, wrn_40_1; resnet32_{cutout,autoaugment}_tffd.yaml: the rows of the paper's IJCNN
#             version that combine Tf-FD with another method (shown in the self-distillation tables)
# --tffd-protocol released trains the Tf-FD row under the released code's protocol instead
# (configs/cifar100/<student>_tffd_released.yaml, protocols/tffd_released.yaml: batch 128, lr 0.1, Nesterov,
# reflect padding; ResNet-20 with its README's lambdas 5e-4 / 8e-4), into <root>/<student>_tffd_released/.
# WRN-40-1 is not in the ECCV paper: its baseline and KD numbers are the KD benchmark's, its Tf-FD ones the
# IJCNN version's.
#
# Run directories: <root>/<teacher>_ce (one seed, the default teacher.checkpoint of the KD configs when
# <root> is runs/cifar100) and <root>/<student config>/seed<k>; console output beside each, in <dir>.log.
# Restartable: finished runs are skipped, unfinished ones resume from their last.pt, and a KD run starts
# only once its teacher has finished. --epochs N is a quick pass: milestones and the Tf-FD warm-up scale
# with N, and the runs go to runs/cifar100_e<N> unless --root is given. --set adds an override to every
# run (e.g. --set train.amp=bf16 --set train.channels_last=true).
# The interpreter is $PYTHON (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TEACHERS=(resnet110 wrn_40_2 resnet32x4 vgg13)
STUDENTS=(resnet20 resnet32 wrn_16_2 resnet8x4 vgg8 wrn_40_1)
declare -A TEACHER_OF=([resnet20]=resnet110 [resnet32]=resnet110 [wrn_16_2]=wrn_40_2 [resnet8x4]=resnet32x4 [vgg8]=vgg13
                       [wrn_40_1]=wrn_40_2)
IJCNN_ROWS=(resnet20_label_smoothing_tffd resnet32_label_smoothing_tffd wrn_16_2_label_smoothing_tffd
            wrn_40_1_label_smoothing_tffd resnet32_cutout_tffd resnet32_autoaugment_tffd)
TFFD_PROTOCOL=paper
FULL_EPOCHS=240 MILESTONES=(150 180 210) WARMUP_EPOCHS=20

. scripts/reproduce_common.sh
while [[ $# -gt 0 ]]; do
  [[ $1 == --*=* ]] && set -- "${1%%=*}" "${1#*=}" "${@:2}"  # --opt=value as --opt value
  if [[ $1 == --tffd-protocol ]]; then
    needs_value "$@"; TFFD_PROTOCOL=$2; shift 2
  else
    common_option "$@"; shift "$TAKEN"
  fi
done
check_common_options
case $TFFD_PROTOCOL in
  paper) TFFD_ROW=tffd ;;
  released) TFFD_ROW=tffd_released ;;
  *) echo "error: --tffd-protocol takes paper or released, got '$TFFD_PROTOCOL'" >&2; exit 2 ;;
esac

COMMON=()
[[ -n $DATA_ROOT ]] && COMMON+=("data.root=$DATA_ROOT")
if [[ -n $EPOCHS ]]; then
  COMMON+=("train.epochs=$EPOCHS" "train.milestones=$(scaled_milestones "${MILESTONES[@]}")"
           "loss.tffd.warmup_epochs=$(scaled "$WARMUP_EPOCHS")")
  ROOT=${ROOT:-runs/cifar100_e$EPOCHS}
fi
ROOT=${ROOT:-runs/cifar100}
check_extra_keys seed teacher.checkpoint ${COMMON[@]+"${COMMON[@]}"}
COMMON+=(${EXTRA[@]+"${EXTRA[@]}"})

jobs() {
  local teacher student seed row config
  for teacher in "${TEACHERS[@]}"; do
    job "$ROOT/${teacher}_ce" "configs/cifar100/${teacher}_ce.yaml" ${COMMON[@]+"${COMMON[@]}"}
  done
  for seed in "${SEED_LIST[@]}"; do  # seed-major: a partial pass still yields whole tables
    for student in "${STUDENTS[@]}"; do
      teacher=${TEACHER_OF[$student]}
      for row in ce "$TFFD_ROW"; do
        job "$ROOT/${student}_${row}/seed$seed" "configs/cifar100/${student}_${row}.yaml" "seed=$seed" \
            ${COMMON[@]+"${COMMON[@]}"}
      done
      for row in kd kd_tffd; do
        job --needs "$ROOT/${teacher}_ce" "$ROOT/${student}_${row}/seed$seed" "configs/cifar100/${student}_${row}.yaml" \
            "seed=$seed" "teacher.checkpoint=$ROOT/${teacher}_ce/best.pt" ${COMMON[@]+"${COMMON[@]}"}
      done
    done
    for config in "${IJCNN_ROWS[@]}"; do
      job "$ROOT/$config/seed$seed" "configs/cifar100/$config.yaml" "seed=$seed" ${COMMON[@]+"${COMMON[@]}"}
    done
  done
}

jobs | launch
