#!/usr/bin/env bash
# Builds the CPU emulator of the CUDA driver and cuBLASLt (tests/cuda_emu) into .cache/cuda-emu:
# libcuda.so runs kernels/*.cu compiled as host C++, libcublasLt.so the matrix products. With
# LD_LIBRARY_PATH=.cache/cuda-emu the CUDA backend and its GPU tests run on this CPU. Installs
# g++ from apt when there is no C++ compiler ($CXX, default g++).
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/cuda-emu
mkdir -p "$out"
cxx=${CXX:-g++}
if ! command -v "$cxx" >/dev/null 2>&1; then
  sudo=""; [[ "$(id -u)" != 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq g++
fi
flags=(-std=c++17 -O2 -fPIC -ffp-contract=off -fno-strict-aliasing -Wall -Wno-unknown-pragmas -Wno-unused-function -DATOMRL_CUDA_EMU
  -Itests/cuda_emu/include -Itests/cuda_emu -Ikernels)

# One unit with every kernel file (as build.rs compiles them) and the table of kernels by name.
unit=$out/kernels.cpp
{
  echo '#include "cuda_emu.h"'
  for f in kernels/*.cu; do echo "#include \"$PWD/$f\""; done
  echo 'struct EmuKernel { const char* name; void (*run)(const void*); };'
  echo 'extern const EmuKernel emu_kernels[] = {'
  sed -nE 's/^extern "C" __global__ void (__launch_bounds__\([^)]*\) )?([A-Za-z0-9_]+)\(const ([A-Za-z0-9_]+) p\).*/    {"\2", [](const void* p) { \2(*static_cast<const \3*>(p)); }},/p' kernels/*.cu
  echo '};'
  echo 'extern const size_t emu_kernel_count = sizeof(emu_kernels) / sizeof(emu_kernels[0]);'
} >"$unit.new"
mv "$unit.new" "$unit"
n=$(grep -c '^    {"' "$unit")
want=$(cat kernels/*.cu | grep -c "__global__")
if [ "$n" != "$want" ]; then
  echo "build-cuda-emu: found $n of $want kernels; a __global__ declaration is not 'extern \"C\" __global__ void [__launch_bounds__(..)] NAME(const PARAMS p)'" >&2
  exit 1
fi

"$cxx" "${flags[@]}" -fvisibility=hidden -c "$unit" -o "$out/kernels.o"
"$cxx" "${flags[@]}" -c tests/cuda_emu/emulator.cpp -o "$out/emulator.o"
"$cxx" -shared -o "$out/libcuda.so" "$out/emulator.o" "$out/kernels.o"
"$cxx" "${flags[@]}" -shared -o "$out/libcublasLt.so" tests/cuda_emu/cublaslt.cpp
# The emulator's own checks: what it computes, and the faults it must report.
"$cxx" "${flags[@]}" -o "$out/selftest" tests/cuda_emu/selftest.cpp "$out/emulator.o" "$out/kernels.o"
"$out/selftest" >"$out/selftest.log" 2>&1 || { cat "$out/selftest.log" >&2; echo "build-cuda-emu: the emulator's self-test failed" >&2; exit 1; }
echo "CUDA emulator: $out/libcuda.so ($n kernels), $out/libcublasLt.so"
