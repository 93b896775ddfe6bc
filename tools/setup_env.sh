#!/usr/bin/env bash
# Create .venv in the checkout and install the pinned mmflora stack into it.
#
#   bash tools/setup_env.sh            # CPU machine, or a GPU machine with nvcc for CUDA mmcv ops
#   PIP_FIND_LINKS=../shared/wheels bash tools/setup_env.sh   # reuse a prebuilt mmcv wheel
#
# Idempotent: a second run only checks what is there (seconds). Every step is named, and the
# script stops at the first failing one with that name.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMFLORA_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
MMCV_VERSION=2.1.0
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1

STEP="start"
trap 'echo "[setup] FAILED at step: $STEP" >&2' ERR
step() { STEP="$1"; echo "[setup] $(date +%H:%M:%S) $1"; }

# A shared folder of prebuilt wheels is used when present (CI passes ../shared/wheels).
if [ -z "${PIP_FIND_LINKS:-}" ] && [ -d "$ROOT/../shared/wheels" ]; then
  export PIP_FIND_LINKS="$ROOT/../shared/wheels"
fi
if [ -n "${PIP_FIND_LINKS:-}" ]; then
  # pip.conf may already name a find-links folder; keep both.
  conf_links="$(pip config get global.find-links 2>/dev/null || true)"
  [ -n "$conf_links" ] && export PIP_FIND_LINKS="$PIP_FIND_LINKS $conf_links"
  echo "[setup] extra wheels from: $PIP_FIND_LINKS"
fi

step "create virtual environment $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

step "build tools (pip, wheel, ninja)"
"${PIP[@]}" install -q --upgrade pip wheel ninja

step "torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION"
if ! "$PY" -c "import torch, torchvision, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  "${PIP[@]}" install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

mmcv_ok() {
  "$PY" - <<'EOF' 2>/dev/null
import sys
import mmcv
from mmcv.ops import nms  # noqa: F401  (fails when the compiled ops are missing)
sys.exit(mmcv.__version__ != '2.1.0')
EOF
}

build_mmcv_from_source() {
  local src
  src="$(mktemp -d)"
  # mmcv 2.1.0's setup.py imports pkg_resources, which newer setuptools dropped; torch 2.14 asks
  # for setuptools>=77 at run time, so the old one is only kept for this build and replaced after.
  "${PIP[@]}" install -q 'setuptools<70'
  echo "[setup] building mmcv $MMCV_VERSION from source in $src (tens of minutes on 2 cores)"
  "${PIP[@]}" download -q --no-deps --no-binary=:all: "mmcv==$MMCV_VERSION" -d "$src"
  tar -xzf "$src/mmcv-$MMCV_VERSION.tar.gz" -C "$src"
  # torch >= 2.10 headers refuse C++17; mmcv's setup.py hard-codes it.
  sed -i "s/'-std=c++17'/'-std=c++20'/g" "$src/mmcv-$MMCV_VERSION/setup.py"
  grep -q "c++20" "$src/mmcv-$MMCV_VERSION/setup.py"
  if command -v nvcc >/dev/null 2>&1 && "$PY" -c "import torch,sys; sys.exit(not torch.cuda.is_available())"; then
    echo "[setup] CUDA found: building mmcv with CUDA ops"
    export FORCE_CUDA=1
  fi
  (cd "$src/mmcv-$MMCV_VERSION" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "${PIP[@]}" install -v --no-build-isolation --no-deps . 2>&1 \
    | grep --line-buffered -E "^\[[0-9]+/[0-9]+\]|Successfully|error" || true)
  rm -rf "$src"
  "${PIP[@]}" install -q 'setuptools>=77.0.3'
}

step "mmcv $MMCV_VERSION with compiled ops"
if ! mmcv_ok; then
  if "${PIP[@]}" install --only-binary=mmcv "mmcv==$MMCV_VERSION" 2>/dev/null; then
    echo "[setup] mmcv from a prebuilt wheel"
  else
    build_mmcv_from_source
  fi
  mmcv_ok || { echo "[setup] mmcv $MMCV_VERSION installed but mmcv.ops does not import" >&2; false; }
fi

step "mmflora and the OpenMMLab stack (mmengine, mmdet, mmseg, mmrotate, timm) + test tools"
"${PIP[@]}" install -q -e "$ROOT[tests,bench]"

step "check the stack imports together"
"$PY" -c "import mmflora, mmcv.ops, mmdet, mmseg, mmrotate, timm; print('[setup] mmflora', mmflora.__version__, '| mmcv', mmcv.__version__, '| mmdet', mmdet.__version__, '| mmseg', mmseg.__version__, '| mmrotate', mmrotate.__version__, '| timm', timm.__version__)"

STEP="done"
echo "[setup] done. Activate with: source $VENV/bin/activate"
