#!/usr/bin/env bash
# Sets everything up on a fresh machine, then runs the offline quickstart on CPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/python -m ftrecipes.launch recipe=quickstart "$@"
