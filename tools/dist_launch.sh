#!/usr/bin/env bash
# Run one of the tools in NPROC processes per node with torch.distributed.run.
# dist_train.sh and dist_test.sh call this; it can also start any tool that takes --launcher:
#
#   bash tools/dist_launch.sh SCRIPT NPROC [script arguments...]
#
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT (29500), PYTHON (python).
# Without CUDA each process runs on CPU with the gloo backend.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 SCRIPT NPROC [script arguments...]" >&2
  exit 1
fi
SCRIPT=$1
NPROC=$2
TOOLS="$(cd "$(dirname "$0")" && pwd)"

PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" \
    --nproc_per_node="$NPROC" \
    "$SCRIPT" "${@:3}" --launcher pytorch
