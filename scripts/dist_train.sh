#!/usr/bin/env bash
# Train with DDP on this machine's GPUs (or CPU processes) through torchrun.
#
#   scripts/dist_train.sh NPROC CONFIG [KEY=VALUE ...] [--run-dir DIR] [--overwrite]
#
# NPROC processes (one per GPU) run train.py; everything after CONFIG is passed to train.py unchanged.
# train.batch_size stays the global batch: each process takes batch_size / NPROC.
#
# Multi-node: run the same command on every node with
#   NNODES=2 RDZV_ENDPOINT=node0.example.org:29400 [RDZV_ID=myjob] scripts/dist_train.sh 8 CONFIG ...
# (torchrun's c10d rendezvous: the nodes find each other at RDZV_ENDPOINT; no node ranks to assign).
# PYTHON selects the interpreter (default: python). See docs/DISTRIBUTED.md, also for SLURM.
set -euo pipefail

usage="usage: [NNODES=N RDZV_ENDPOINT=HOST:PORT] $0 NPROC CONFIG [KEY=VALUE ...] [--run-dir DIR] [--overwrite]"
if [[ $# -lt 2 ]]; then
    echo "$usage" >&2
    exit 2
fi
nproc=$1 config=$2
shift 2
nnodes=${NNODES:-1}
if ! [[ $nproc =~ ^[1-9][0-9]*$ && $nnodes =~ ^[1-9][0-9]*$ ]]; then
    echo "error: NPROC ($nproc) and NNODES ($nnodes) must be positive integers" >&2
    exit 2
fi

if [[ $nnodes -gt 1 ]]; then
    if [[ -z ${RDZV_ENDPOINT:-} ]]; then
        echo "error: NNODES=$nnodes needs RDZV_ENDPOINT=HOST:PORT, a host all nodes reach (e.g. the first node)" >&2
        exit 2
    fi
    rendezvous=(--nnodes="$nnodes" --rdzv_backend=c10d --rdzv_endpoint="$RDZV_ENDPOINT" --rdzv_id="${RDZV_ID:-tffd}")
else
    rendezvous=(--standalone --nnodes=1)  # a free local port: several single-node jobs may share a machine
fi

exec "${PYTHON:-python}" -m torch.distributed.run "${rendezvous[@]}" --nproc_per_node="$nproc" \
    "$(dirname "$0")/../train.py" --config "$config" "$@"
