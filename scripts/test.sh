#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, every kernel compiled, then cargo test.
# `--full` (used by CI) also runs the slow checks (the whole task corpus, SmolLM2 end to end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${1:-}" = "--full" ]; then
  export ATOMRL_FULL=1 ATOMRL_FULL_CORPUS=1
fi
# A kernel that does not compile fails the build once the compiler is installed.
kernels=0
if [ -x .cache/cuda/nvidia/cu13/bin/nvcc ] || command -v nvcc >/dev/null; then
  export ATOMRL_REQUIRE_KERNELS=1
  kernels=1
fi
# Scripts that only run elsewhere (scripts/gpu-check.sh on a GPU machine) at least parse.
for f in scripts/*.sh benches/*.sh; do bash -n "$f"; done
cargo test
# The CUDA tests again, on the CPU emulator of the driver and cuBLASLt (tests/cuda_emu): every
# kernel and the CUDA backend against the CPU reference, on machines without a GPU too.
if [ "$kernels" = 1 ]; then
  bash scripts/build-cuda-emu.sh
  LD_LIBRARY_PATH="$PWD/.cache/cuda-emu" ATOMRL_REQUIRE_GPU=1 \
    cargo test --test cuda_parity --test cuda_loss --test cuda_train --test cuda_fixtures --test cuda_generation --test cuda_learns
fi
# Benchmarks are compiled (not run) so they cannot rot; the kernel benchmarks also run once at
# toy sizes on the emulator, so that a case that fails is found before GPU time is spent on it.
cargo test --benches --no-run
if [ "$kernels" = 1 ]; then
  LD_LIBRARY_PATH="$PWD/.cache/cuda-emu" ATOMRL_REQUIRE_GPU=1 ATOMRL_BENCH_SMOKE=1 cargo test --bench cuda_kernels --bench cuda_train_step
fi
