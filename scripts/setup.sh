#!/usr/bin/env bash
# Installs what atomrl's demo and tests need, idempotently, into .cache/ (git-ignored):
# the CUDA compiler from PyPI, the sandbox (bubblewrap, pytest), the pinned package sources of
# the task corpus, and SmolLM2-135M-Instruct converted from its GGUF.
set -euo pipefail
cd "$(dirname "$0")/.."
for step in install-nvcc.sh install-sandbox-deps.sh fetch-corpus-sources.sh; do
  if [ -f "scripts/$step" ]; then
    echo "== setup: $step" >&2
    bash "scripts/$step"
  fi
done
echo "== setup: fetch-smollm2.sh" >&2
cargo build --quiet --bin atomrl
bash scripts/fetch-smollm2.sh "${CARGO_TARGET_DIR:-target}/debug/atomrl" >/dev/null
