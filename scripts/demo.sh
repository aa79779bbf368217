#!/usr/bin/env bash
# The embedded default: fetch SmolLM2-135M-Instruct, convert it from GGUF, and generate with it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin atomrl
bash scripts/fetch-smollm2.sh target/release/atomrl >/dev/null
target/release/atomrl generate --model .cache/smollm2/hf --chat --device cpu \
  --prompt "What is the capital of France?" \
  --prompt "Write a Python function that returns the square of a number." \
  --max-new-tokens 96 --batch 2
