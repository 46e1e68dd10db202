#!/usr/bin/env bash
# Runs with: bash tests/benchmarks/gpu_throughput.sh   (on a GPU machine, from the repository root)
# GPU throughput and MFU of the plain TRL script against ftrecipes (tests/benchmarks/gpu_throughput.py),
# appended with date, device and versions to docs/benchmarks.md.
#
# The machine may have no network: the venv comes from scripts/setup.sh when the registries are
# reachable, else from wheels carried in ./wheels (pip download them beside a CUDA torch first).
# flash-attn and liger-kernel are optional: installed from ./wheels when present, else (c) runs
# without them and the table's header says so.
set -euo pipefail
cd "$(dirname "$0")/../.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || {
  echo "gpu_throughput.sh: no NVIDIA GPU here (nvidia-smi failed); on the CPU run: python tests/benchmarks/gpu_throughput.py --smoke"; exit 3; }
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  if [ -d wheels ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q --no-index --find-links wheels -e '.[dev]'
  else
    bash scripts/setup.sh
  fi
fi
if [ -d wheels ]; then  # optional fast kernels, when carried
  for pkg in flash-attn liger-kernel; do
    ls wheels | grep -qi "^${pkg//-/_}" && .venv/bin/pip install -q --no-index --find-links wheels "$pkg" || true
  done
fi
"$PY" -c "import torch; assert torch.cuda.is_available(), 'this torch has no CUDA: install a CUDA build of torch'"
exec "$PY" tests/benchmarks/gpu_throughput.py --append docs/benchmarks.md "$@"
