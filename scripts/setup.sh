#!/usr/bin/env bash
# Installs what atomrl's demo and tests need, idempotently, into .cache/ (git-ignored):
# the SmolLM2 GGUF and its conversion, the CUDA compiler from PyPI, the sandbox (bubblewrap,
# pytest) and the pinned package sources of the task corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
for step in install-nvcc.sh install-sandbox-deps.sh fetch-corpus-sources.sh fetch-smollm2.sh; do
  if [ -f "scripts/$step" ]; then
    echo "== setup: $step" >&2
    bash "scripts/$step"
  fi
done
