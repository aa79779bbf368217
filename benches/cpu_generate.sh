#!/usr/bin/env bash
# Generation on the CPU, atomrl against Hugging Face transformers in the same run, same weights,
# same prompts (benches/generate.rs and benches/peers/generate_transformers.py), and the ratio.
#   benches/cpu_generate.sh            (PYTHON=... picks an interpreter that has torch)
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
ours="$(mktemp)"; peer="$(mktemp)"
trap 'rm -f "$ours" "$peer"' EXIT
cargo bench --bench generate 2>/dev/null | tee "$ours"
"$python" benches/peers/generate_transformers.py .cache/smollm2/hf 2>/dev/null | tee "$peer"
echo
echo "batch  atomrl tok/s  transformers tok/s  ratio"
join <(awk '$1 ~ /^[0-9]+$/ {print $1, $3}' "$ours") <(awk '$1 ~ /^[0-9]+$/ {print $1, $3}' "$peer") |
  awk '{printf "%5d %13.1f %19.1f %6.2fx\n", $1, $2, $3, $2 / $3}'
