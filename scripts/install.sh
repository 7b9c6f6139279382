#!/usr/bin/env bash
# Install seq2seq (editable, from this clone) into the python3 first on PATH, and say what it does.
# Activate a virtual environment first to keep it apart from the system:
#   python3 -m venv .venv && . .venv/bin/activate && bash scripts/install.sh
# A torch that is already installed (a CUDA build, say) is kept. Without one, TORCH_SPEC is installed
# (default torch==2.13.0), from TORCH_INDEX_URL when set: for the CPU-only build, about 1 GB smaller
# than the default Linux wheel with its CUDA libraries,
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/install.sh
# Usage: bash scripts/install.sh [EXTRAS]   e.g. bash scripts/install.sh test,plot   (default: plot)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-plot}"
say() { echo "install.sh: $*"; }

say "python: $(command -v python3) ($(python3 --version 2>&1))"
if [ -n "${VIRTUAL_ENV:-}" ]; then
    say "into the virtual environment $VIRTUAL_ENV"
else
    say "no virtual environment is active: installing into this python's own site-packages"
fi
if python3 -c "import torch" 2>/dev/null; then
    say "keeping the installed torch $(python3 -c 'import torch; print(torch.__version__)')"
else
    spec="${TORCH_SPEC:-torch==2.13.0}"
    say "installing $spec${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL} (no torch is installed yet)"
    python3 -m pip install --quiet ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$spec"
fi
say "installing seq2seq from $(pwd) in editable mode, with the extras [$extras] and its dependencies"
python3 -m pip install --quiet -e ".[${extras}]"
say "done: $(python3 -m seq2seq --version), torch $(python3 -c 'import torch; print(torch.__version__)'); the" \
    "command is $(command -v seq2seq || echo 'seq2seq (not on PATH: use python3 -m seq2seq)')"
