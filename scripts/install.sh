#!/usr/bin/env bash
# Install seq2seq and what it needs, keeping a torch build that is already installed
# (a CUDA build, say). Without one, TORCH_SPEC is installed (default torch==2.13.0).
# Usage: bash scripts/install.sh [EXTRAS]   e.g. bash scripts/install.sh test,plot
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-plot}"
if python3 -c "import torch" 2>/dev/null; then
    echo "keeping the installed torch $(python3 -c 'import torch; print(torch.__version__)')"
else
    python3 -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
fi
python3 -m pip install --quiet -e ".[${extras}]"
