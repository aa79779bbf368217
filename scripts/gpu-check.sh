#!/usr/bin/env bash
# Every GPU check in one go, on a machine that has a GPU but no Rust toolchain.
#
#   bash scripts/gpu-check.sh pack        # here: build the CUDA tests and the GPU benches in
#                                         # release, with every kernel, into .gpu-check/ (~45 MB)
#   bash scripts/gpu-check.sh run [OUT]   # there, from the repository root with .gpu-check/
#                                         # beside it: run them, logs and a summary into OUT
#
# The tests find their fixtures under the directory they were built in; `run` links that path
# to this checkout when it does not exist. `ATOMRL_REQUIRE_GPU=1` turns "no GPU" into a failure,
# so a run cannot pass by skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
pack=.gpu-check
tests=(cuda_parity cuda_loss cuda_train cuda_fixtures cuda_generation cuda_learns)

executables() { # cargo's JSON messages on stdin → "name path" per executable
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'
}

case "${1:-}" in
pack)
  bash scripts/install-nvcc.sh >/dev/null
  rm -rf "$pack" && mkdir -p "$pack/bin"
  export ATOMRL_REQUIRE_KERNELS=1
  args=()
  for t in "${tests[@]}"; do args+=(--test "$t"); done
  { cargo test --release --no-run "${args[@]}" --message-format=json
    cargo bench --no-run --bench cuda_kernels --bench cuda_train_step --message-format=json; } | executables |
    while read -r name path; do
      # the CLI binary is built for the integration tests but no GPU check runs it
      [ "$name" = atomrl ] || strip -o "$pack/bin/$name" "$path"
    done
  pwd > "$pack/built_in"
  ls -la "$pack/bin"
  du -sh "$pack"
  ;;
run)
  out="${2:-${OUT:-gpu-check-out}}"
  mkdir -p "$out"
  [ -d "$pack/bin" ] || { echo "error: no $pack/bin here: run 'bash scripts/gpu-check.sh pack' first and carry $pack" >&2; exit 1; }
  built_in=$(cat "$pack/built_in")
  if [ ! -e "$built_in" ]; then
    mkdir -p "$(dirname "$built_in")" && ln -s "$PWD" "$built_in"
  fi
  # cuBLAS and NVRTC from the CUDA toolkit or from the pip wheels beside PyTorch.
  libs=$(python3 -c 'import glob, os, nvidia; print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(d + "/**/lib*.so*", recursive=True)})))' 2>/dev/null || true)
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64:$libs"
  export ATOMRL_REQUIRE_GPU=1 RUST_BACKTRACE=1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt" || true
  status=0
  for t in "${tests[@]}"; do
    echo "== $t" >&2
    if timeout 90 "$pack/bin/$t" --test-threads=1 > "$out/$t.log" 2>&1; then r=ok; else r=FAILED; status=1; fi
    echo "$t: $r ($(grep -E '^test result' "$out/$t.log" | tail -1))" >> "$out/summary.txt"
  done
  echo "== benchmarks" >&2
  if ATOMRL_BENCH_BIN="$pack/bin/cuda_kernels" ATOMRL_TRAIN_BENCH_BIN="$pack/bin/cuda_train_step" timeout 360 bash benches/gpu_suite.sh > "$out/bench.txt" 2> "$out/bench.log"; then
    echo "bench: ok" >> "$out/summary.txt"
  else
    echo "bench: FAILED (see bench.log)" >> "$out/summary.txt"; status=1
  fi
  cat "$out/bench.txt"
  echo; cat "$out/summary.txt"
  exit $status
  ;;
*)
  sed -n '2,11p' "$0" >&2
  exit 2
  ;;
esac
