#!/usr/bin/env bash
# Installs the PyTorch peer's packages from PyPI when they are missing (pip install torch numpy).
# PYTHON overrides the interpreter; PIP_ARGS adds pip options (e.g. --user, or
# "--index-url https://download.pytorch.org/whl/cpu" for the smaller CPU-only wheel).
set -euo pipefail
py="${PYTHON:-python3}"
if "$py" -c "import torch, numpy" 2>/dev/null; then
  echo "bench/reference: torch $("$py" -c 'import torch; print(torch.__version__)') already installed"
  exit 0
fi
# Debian marks the system Python externally managed; allow pip there (or use a venv via PYTHON).
"$py" -m pip install ${PIP_ARGS:-} torch numpy || "$py" -m pip install --break-system-packages ${PIP_ARGS:-} torch numpy
"$py" -c "import torch; print('bench/reference: installed torch', torch.__version__)"
