#!/usr/bin/env bash
# Creates .venv (if missing) and installs ftrecipes with its test tools, CPU torch only.
# Sourced by scripts/quickstart.sh and scripts/test.sh; safe to run again (fast when installed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
# The CPU wheel of torch: never let a resolver pull the CUDA build.
export PIP_CONSTRAINT="$PWD/constraints.txt"
if [ -z "${PIP_FIND_LINKS:-}" ] && [ -d /opt/wheels ]; then export PIP_FIND_LINKS=/opt/wheels; fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import ftrecipes, torch, trl, peft, pytest, wandb, tensorboard, mlflow, bitsandbytes, lm_eval, fastapi, uvicorn, openai, deepspeed, submitit, hydra_plugins.hydra_submitit_launcher" >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet torch==2.13.0
  # qlora: bitsandbytes, for the QLoRA tests; eval: lm-eval and serve: transformers serve, for their tests;
  # deepspeed and slurm (submitit) for the scale-out tests. DeepSpeed installs without building its ops
  # (about 25 s on 2 cores); the tests compile the few they need once per run (TORCH_EXTENSIONS_DIR).
  .venv/bin/python -m pip install --quiet -e ".[dev,track,qlora,eval,serve,deepspeed,slurm]"
fi
