#!/usr/bin/env bash
# The CPU peer a user would pick today: the newest PyTorch and transformers
# from PyPI, in their own virtual environment (default build/peer-env). For
# bench/train_throughput.sh only — a download of several GB (PyPI's torch
# wheel brings NVIDIA's libraries with it), never part of `make test`, whose
# oracle stays Debian's torch 1.13 (scripts/setup-python-env.sh).
#
# Usage: bench/peer-env.sh [DIR]      Idempotent: an environment with these
# versions is kept. Versions are pinned to the ones docs/results.md measured.
set -euo pipefail
cd "$(dirname "$0")/.."
ENV=${1:-build/peer-env}
TORCH=2.15.0
TRANSFORMERS=5.25.0

if [ -x "$ENV/bin/python" ] && "$ENV/bin/python" - "$TORCH" "$TRANSFORMERS" <<'PY' 2>/dev/null; then
import sys, torch, transformers
sys.exit(0 if (torch.__version__.split("+")[0], transformers.__version__) == (sys.argv[1], sys.argv[2]) else 1)
PY
  echo "$ENV"
  exit 0
fi
/usr/bin/python3 -m venv "$ENV"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$ENV/bin/python" -m pip install --quiet "torch==$TORCH" "transformers==$TRANSFORMERS" \
  || { echo "peer-env: pip install torch==$TORCH transformers==$TRANSFORMERS failed" >&2; exit 1; }
echo "$ENV"
