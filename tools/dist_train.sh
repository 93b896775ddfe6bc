#!/usr/bin/env bash
# Distributed training on one or more nodes with torch.distributed.run.
#
#   bash tools/dist_train.sh CONFIG GPUS [train.py options...]
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash tools/dist_train.sh CONFIG 8   # on node 0
#
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT (29500), PYTHON (python).
# Without CUDA each of the GPUS processes trains on CPU with the gloo backend.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG GPUS [train.py options...]" >&2
  exit 1
fi
TOOLS="$(cd "$(dirname "$0")" && pwd)"
exec bash "$TOOLS/dist_launch.sh" "$TOOLS/train.py" "$2" "$1" "${@:3}"
