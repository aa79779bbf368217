#!/usr/bin/env bash
# Agent mode on the embedded default: gold agent episodes from the corpus's easy train tasks,
# a supervised warm start on them, then joint GRPO with multi-turn episodes in sandboxed
# repositories (configs/demo-agent.toml). Prints held-out per-skill rewards (agent episodes)
# before and after RL. Re-running continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin atomrl
bash scripts/install-sandbox-deps.sh >/dev/null
bash scripts/fetch-corpus-sources.sh >/dev/null
atomrl="${CARGO_TARGET_DIR:-target}/release/atomrl"
model=$(bash scripts/fetch-smollm2.sh "$atomrl")
out=runs/agent
mkdir -p "$out"
if [ ! -f "$out/episodes.jsonl" ]; then
  "$atomrl" sft-data --tasks data/corpus/train.jsonl --tier easy --agent --out "$out/episodes.jsonl"
fi
"$atomrl" sft --config configs/sft-agent.toml --output "$out/sft" --resume model.path="$model"
"$atomrl" train --config configs/demo-agent.toml --output "$out/rl" --resume model.path="$out/sft/step_24" > "$out/rl.txt"
"$atomrl" report "$out/rl" >/dev/null
echo
echo "held-out avg@1 in agent mode, after the warm start (before) and after joint RL (after):"
cat "$out/rl.txt"
