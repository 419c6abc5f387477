# Sourced by scripts/reproduce_cifar100.sh and scripts/reproduce_selfkd.sh, from the repository root: the
# options every reproduction takes, the quick-pass scaling of a schedule, and the job lines it hands to
# scripts/launch.py. A script sets FULL_EPOCHS before scaling anything.

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit "${1:-0}"; }

needs_value() { [[ $# -ge 2 ]] || { echo "error: $1 needs a value (see --help)" >&2; exit 2; }; }

SEEDS=0,1,2 EPOCHS="" ROOT="" DATA_ROOT="" LAUNCH_ARGS=() EXTRA=() TAKEN=0

# common_option ARGS...: take the option in $1 (and its value); TAKEN is then the number of words it used.
common_option() {
  case "$1" in
    --gpus|--jobs|--executor|--partition|--gpus-per-job|--timeout-min|--nodes|--slurm-log-dir)
      needs_value "$@"; LAUNCH_ARGS+=("$1" "$2"); TAKEN=2 ;;  # checked by scripts/launch.py
    --seeds) needs_value "$@"; SEEDS=$2; TAKEN=2 ;;
    --epochs) needs_value "$@"; EPOCHS=$2; TAKEN=2 ;;
    --root) needs_value "$@"; ROOT=$2; TAKEN=2 ;;
    --data-root) needs_value "$@"; DATA_ROOT=$2; TAKEN=2 ;;
    --set) needs_value "$@"; EXTRA+=("$2"); TAKEN=2 ;;
    --dry-run) LAUNCH_ARGS+=(--dry-run); TAKEN=1 ;;
    -h|--help) usage 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
}

# check_common_options: stop on a bad --seeds or --epochs; set SEED_LIST.
check_common_options() {
  [[ $SEEDS =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "error: --seeds takes a list like 0,1,2, got '$SEEDS'" >&2; exit 2; }
  IFS=, read -r -a SEED_LIST <<< "$SEEDS"
  [[ -z $EPOCHS || $EPOCHS =~ ^[1-9][0-9]*$ ]] || {
    echo "error: --epochs takes a positive integer, got '$EPOCHS'" >&2; exit 2; }
}

# check_extra_keys KEY[=VALUE]...: stop on a --set whose key is one of these (those the script or its other
# options set) or that an earlier --set names: of two, the last would win, unlike what the run directory says.
check_extra_keys() {
  local taken=" " given set key
  for given in "$@"; do taken+="${given%%=*} "; done
  for set in ${EXTRA[@]+"${EXTRA[@]}"}; do
    key=${set%%=*} key=${key// /}
    [[ $taken != *" $key "* ]] || {
      echo "error: --set '$set': $key is set already (by this script, one of its options or another --set); drop it" >&2
      exit 2; }
    taken+="$key "
  done
}

# scaled EPOCHS_OF_THE_FULL_SCHEDULE: the same point of a quick pass of EPOCHS epochs (rounded down).
scaled() { echo $(( $1 * EPOCHS / FULL_EPOCHS )); }

# scaled_milestones M...: the milestones compressed in time, as a YAML list; those below epoch 1 vanish.
scaled_milestones() {
  local m s scaled=()
  for m in "$@"; do
    s=$(scaled "$m")
    (( s >= 1 )) && [[ " ${scaled[*]} " != *" $s "* ]] && scaled+=("$s")
  done
  (IFS=,; echo "[${scaled[*]}]")
}

# One job line per run: [--needs DIR] RUN_DIR CONFIG KEY=VALUE... (see scripts/launch.py), shell-quoted.
job() { printf '%q ' "$@"; echo; }

launch() { "$PYTHON" scripts/launch.py - ${LAUNCH_ARGS[@]+"${LAUNCH_ARGS[@]}"}; }
