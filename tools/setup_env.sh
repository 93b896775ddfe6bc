#!/usr/bin/env bash
# Create .venv in the checkout and install the pinned mmflora stack into it.
#
#   bash tools/setup_env.sh            # CPU machine, or a GPU machine with nvcc for CUDA mmcv ops
#   PIP_FIND_LINKS=../shared/wheels bash tools/setup_env.sh   # reuse a prebuilt mmcv wheel
#   FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MMFLORA_CUDA_TOOLKIT=pip bash tools/setup_env.sh
#                                      # CUDA mmcv ops, nvcc from PyPI (no system CUDA needed)
#
# Environment variables:
#   MMFLORA_VENV        where the virtual environment goes (default: <checkout>/.venv)
#   PYTHON              interpreter that creates it (default: python3.11)
#   PIP_FIND_LINKS      folders of extra wheels; ../shared/wheels is added when it exists
#   MMFLORA_BUILD_MMCV  auto (default): a prebuilt mmcv wheel when pip finds a usable one, else a
#                       source build; wheel: a prebuilt wheel or fail; source: always compile mmcv
#   MAX_JOBS            parallel compile jobs for the source build (default: all cores)
#   FORCE_CUDA=1        require and compile mmcv's CUDA ops; without it they are required when
#                       torch sees a GPU and there is a CUDA compiler (nvcc on PATH, or
#                       MMFLORA_CUDA_TOOLKIT=pip), and left out otherwise
#   TORCH_CUDA_ARCH_LIST  GPU architectures to compile for, e.g. "8.0;9.0" (default: the GPU seen;
#                       required where torch sees none)
#   MMFLORA_CUDA_TOOLKIT  system (default): the nvcc on PATH / in CUDA_HOME; pip: nvcc 13.0 from
#                       PyPI wheels (about 100 MB, once), see tools/cuda_toolchain.py
#   MMFLORA_CUDA_PREFIX   where the pip toolkit is kept (default: ~/.cache/mmflora/cuda-<version>)
#   MMFLORA_MMCV_WHEEL_DIR  a source build also leaves its mmcv wheel (and build log) here, for
#                       PIP_FIND_LINKS later
#
# Idempotent: a second run only checks what is there (seconds). Every step is named, and the
# script stops at the first failing one with that name.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMFLORA_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMENGINE_VERSION=0.10.7
MMCV_VERSION=2.1.0
MMCV_BUILD="${MMFLORA_BUILD_MMCV:-auto}"
case "$MMCV_BUILD" in
  auto|wheel|source) ;;
  *) echo "[setup] MMFLORA_BUILD_MMCV='$MMCV_BUILD' is not one of: auto, wheel, source" >&2; exit 2 ;;
esac
CUDA_TOOLKIT="${MMFLORA_CUDA_TOOLKIT:-system}"
case "$CUDA_TOOLKIT" in
  system|pip) ;;
  *) echo "[setup] MMFLORA_CUDA_TOOLKIT='$CUDA_TOOLKIT' is not one of: system (the nvcc on PATH)," \
          "pip (nvcc from PyPI wheels)" >&2; exit 2 ;;
esac

STEP="start"
trap 'echo "[setup] FAILED at step: $STEP" >&2' ERR
step() { STEP="$1"; echo "[setup] $(date +%H:%M:%S) $1"; }

# Folders of extra wheels: those in PIP_FIND_LINKS (relative ones made absolute), those pip.conf
# names (an exported PIP_FIND_LINKS would otherwise hide them) and ../shared/wheels when it exists
# (CI passes it; it holds a prebuilt mmcv). Each folder is listed once.
find_links=()
add_links() {
  local link
  for link in "$@"; do
    [ -d "$link" ] && link="$(cd "$link" && pwd)"
    [[ " ${find_links[*]-} " == *" $link "* ]] || find_links+=("$link")
  done
}
# shellcheck disable=SC2046,SC2086  # both are space-separated lists
add_links ${PIP_FIND_LINKS:-} $("$PYTHON" -m pip config get global.find-links 2>/dev/null || true)
[ -d "$ROOT/../shared/wheels" ] && add_links "$ROOT/../shared/wheels"
if [ "${#find_links[@]}" -gt 0 ]; then
  export PIP_FIND_LINKS="${find_links[*]}"
  echo "[setup] extra wheels from: $PIP_FIND_LINKS"
fi

step "create virtual environment $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

step "build tools (pip, wheel, ninja)"
if ! "$PY" -c "import wheel, ninja" 2>/dev/null; then
  "${PIP[@]}" install -q --upgrade pip wheel ninja
fi

step "torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION"
if ! "$PY" -c "import torch, torchvision, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  "${PIP[@]}" install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

# mmcv's CUDA ops are wanted when asked for, or when a CUDA compiler (nvcc on PATH, or the one
# MMFLORA_CUDA_TOOLKIT=pip fetches) can build them for a GPU torch sees.
WANT_CUDA=0
if [ "${FORCE_CUDA:-0}" = "1" ]; then
  WANT_CUDA=1
elif { [ "$CUDA_TOOLKIT" = pip ] || command -v nvcc >/dev/null 2>&1; } \
    && "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  WANT_CUDA=1
elif [ "$CUDA_TOOLKIT" = pip ]; then
  echo "[setup] MMFLORA_CUDA_TOOLKIT=pip is not used: torch sees no GPU and FORCE_CUDA is not 1," \
       "so mmcv's CUDA ops are not wanted"
fi

# True when mmcv $MMCV_VERSION imports with its compiled ops (with CUDA ops when they are wanted).
mmcv_ok() {
  "$PY" - "$MMCV_VERSION" "$WANT_CUDA" <<'EOF' 2>/dev/null
import sys
import mmcv
from mmcv.ops import get_compiling_cuda_version, nms  # noqa: F401  (fail without compiled ops)
ok = mmcv.__version__ == sys.argv[1]
if sys.argv[2] == '1':
    ok = ok and get_compiling_cuda_version() != 'not available'
sys.exit(not ok)
EOF
}

# Points CUDA_HOME and PATH at the CUDA compiler the build uses, and says which one it is.
use_cuda_toolkit() {
  "$PY" "$ROOT/tools/cuda_toolchain.py" check-arch
  if [ "$CUDA_TOOLKIT" = pip ]; then
    local cuda prefix
    cuda="$("$PY" -c "import torch; print(torch.version.cuda)")"
    prefix="${MMFLORA_CUDA_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/mmflora/cuda-$cuda}"
    echo "[setup] CUDA $cuda toolkit from PyPI wheels in $prefix"
    CUDA_HOME="$("$PY" "$ROOT/tools/cuda_toolchain.py" assemble --prefix "$prefix")"
    export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"
  fi
  command -v nvcc >/dev/null 2>&1 || {
    echo "[setup] mmcv's CUDA ops need nvcc, and none is on PATH: install the CUDA toolkit torch" \
         "is built for, or use MMFLORA_CUDA_TOOLKIT=pip" >&2; false; }
  echo "[setup] compiling mmcv with CUDA ops: $(command -v nvcc)" \
       "($(nvcc --version | grep -o 'release.*')), CUDA_HOME=${CUDA_HOME:-<from nvcc>}," \
       "TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-<the GPUs seen>}"
  export FORCE_CUDA=1
}

build_mmcv_from_source() {
  local src log started wheel
  src="$(mktemp -d)"
  log="$src/build.log"
  started=$(date +%s)
  if [ "$WANT_CUDA" = 1 ]; then
    use_cuda_toolkit
  fi
  # mmcv 2.1.0's setup.py imports pkg_resources, which newer setuptools dropped; torch 2.14 asks
  # for setuptools>=77 at run time, so the old one is only kept for this build and replaced after.
  echo "[setup] setuptools<70 for the build (pip warns that torch wants >=77; it is put back after)"
  "${PIP[@]}" install -q 'setuptools<70'
  echo "[setup] building mmcv $MMCV_VERSION from source in $src (tens of minutes on 2 cores)"
  # No build isolation here either: pip prepares the sdist's metadata, which runs its setup.py.
  "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary=:all: "mmcv==$MMCV_VERSION" -d "$src"
  tar -xzf "$src/mmcv-$MMCV_VERSION.tar.gz" -C "$src"
  # The edits that make the 2023 source build with torch 2.14 (C++20) and CUDA 13, each with its
  # reason, are in tools/patch_mmcv_source.py; it stops the set-up when one no longer applies.
  "$PY" "$ROOT/tools/patch_mmcv_source.py" "$src/mmcv-$MMCV_VERSION"
  # The full log goes to $log; ninja's [done/total] lines are echoed as progress (one a file).
  # A wheel first, then installed, so that MMFLORA_MMCV_WHEEL_DIR can keep it.
  if ! (cd "$src/mmcv-$MMCV_VERSION" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        "${PIP[@]}" wheel -v --no-build-isolation --no-deps -w "$src/dist" . 2>&1 \
        | tee "$log" | sed -unE 's#^ *(\[[0-9]+/[0-9]+\]) .* -c ([^ ]+) -o .*#[setup] mmcv \1 \2#p; /^ *Successfully/p'); then
    echo "[setup] mmcv source build failed; last lines of $log:" >&2
    tail -n 40 "$log" >&2
    false
  fi
  wheel="$(echo "$src"/dist/mmcv-"$MMCV_VERSION"-*.whl)"
  "${PIP[@]}" install -q --no-deps --force-reinstall "$wheel"
  if [ -n "${MMFLORA_MMCV_WHEEL_DIR:-}" ]; then
    mkdir -p "$MMFLORA_MMCV_WHEEL_DIR"
    cp "$wheel" "$MMFLORA_MMCV_WHEEL_DIR/"
    cp "$log" "$MMFLORA_MMCV_WHEEL_DIR/mmcv-$MMCV_VERSION-build.log"
    echo "[setup] kept $(basename "$wheel") and its build log in $MMFLORA_MMCV_WHEEL_DIR"
  fi
  rm -rf "$src"
  "${PIP[@]}" install -q 'setuptools>=77.0.3'
  echo "[setup] mmcv source build took $(( ($(date +%s) - started) / 60 )) min"
}

# mmcv's runtime dependencies (mmengine, opencv, ...) come first, so that an mmcv built from
# source, which is installed alone, can be checked right away.
step "mmengine $MMENGINE_VERSION"
if ! "$PY" -c "import mmengine, sys; sys.exit(mmengine.__version__ != '$MMENGINE_VERSION')" 2>/dev/null; then
  "${PIP[@]}" install -q "mmengine==$MMENGINE_VERSION" packaging Pillow
fi

step "mmcv $MMCV_VERSION with compiled ops (MMFLORA_BUILD_MMCV=$MMCV_BUILD, CUDA ops: $WANT_CUDA)"
if ! mmcv_ok; then
  if [ "$MMCV_BUILD" != source ] \
      && "${PIP[@]}" install -q --only-binary=mmcv "mmcv==$MMCV_VERSION" 2>/dev/null && mmcv_ok; then
    echo "[setup] mmcv from a prebuilt wheel"
  elif [ "$MMCV_BUILD" = wheel ]; then
    echo "[setup] MMFLORA_BUILD_MMCV=wheel but pip found no usable mmcv $MMCV_VERSION wheel" \
         "(none, or one without CUDA ops while they are wanted); point PIP_FIND_LINKS at the" \
         "folder that holds it, or use MMFLORA_BUILD_MMCV=source" >&2
    false
  else
    build_mmcv_from_source
  fi
  mmcv_ok || { echo "[setup] mmcv $MMCV_VERSION installed but mmcv.ops does not import" \
                    "(or lacks the CUDA ops wanted)" >&2; false; }
fi

step "mmflora and the OpenMMLab stack (mmdet, mmseg, mmrotate, timm) + test tools"
# Installed already when: mmflora is installed editable from this checkout, by this setup.py
# (its sha256 is kept in the environment), and every requirement of it and of its tests and
# bench extras is installed at a version it allows. Otherwise (re)install. The check runs with
# python -P: the working directory off sys.path, where the checkout's mmflora.egg-info (written
# by the editable install, without pip's direct_url.json) would stand in for the installed one.
SETUP_STAMP="$VENV/.mmflora-setup.sha256"
setup_sum="$(sha256sum "$ROOT/setup.py" | cut -d' ' -f1)"
if [ "$(cat "$SETUP_STAMP" 2>/dev/null)" = "$setup_sum" ] && "$PY" -P - "$ROOT" <<'EOF' 2>/dev/null
import json, os, sys
from importlib import metadata
from packaging.requirements import Requirement
dist = metadata.distribution('mmflora')
url = json.loads(dist.read_text('direct_url.json') or '{}')
assert url.get('dir_info', {}).get('editable'), 'not an editable install'
assert os.path.samefile(url['url'].removeprefix('file://'), sys.argv[1]), 'another checkout'
for line in dist.requires or []:
    req = Requirement(line)
    if req.marker is None or any(req.marker.evaluate({'extra': e}) for e in ('tests', 'bench')):
        assert req.specifier.contains(metadata.version(req.name), prereleases=True), line
EOF
then
  echo "[setup] mmflora is installed from this checkout with all its requirements"
else
  "${PIP[@]}" install -q -e "$ROOT[tests,bench]"
  echo "$setup_sum" > "$SETUP_STAMP"
fi

step "check the stack imports together"
"$PY" - <<'EOF'
import mmcv, mmcv.ops, mmdet, mmrotate, mmseg, timm, torch
import mmflora
print('[setup] mmflora', mmflora.__version__, '| torch', torch.__version__, '| mmcv', mmcv.__version__,
      f'(CUDA ops: {mmcv.ops.get_compiling_cuda_version()})', '| mmdet', mmdet.__version__,
      '| mmseg', mmseg.__version__, '| mmrotate', mmrotate.__version__, '| timm', timm.__version__)
EOF

STEP="done"
echo "[setup] done. Activate with: source $VENV/bin/activate"
