#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler from PyPI wheels into .cache/cuda/ under the repository
# root, where build.rs looks for it. No GPU and no system toolkit are needed; nothing outside that
# folder is touched. Running it again is a no-op once the compiler is in place.
#
#   scripts/install-nvcc.sh           install unless a toolkit is already found
#   scripts/install-nvcc.sh --force   install into .cache/cuda/ even if another nvcc exists
#
# Then rebuild: `cargo build` (build.rs picks .cache/cuda/nvidia/cu13/bin/nvcc up by itself).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.cache/cuda"
nvcc="$dest/nvidia/cu13/bin/nvcc"
# Pinned: this nvcc emits PTX ISA 9.0, which the CUDA 13.0 drivers (580.x) accept; newer wheels
# emit PTX that those drivers refuse to JIT.
wheels=(
  "nvidia-cuda-nvcc==13.0.88"
  "nvidia-cuda-runtime==13.0.96"
  "nvidia-cuda-crt==13.0.88"
  "nvidia-cuda-cccl==13.0.85"
  "nvidia-nvvm==13.0.88"
)
stamp="$dest/.installed"
want="$(printf '%s\n' "${wheels[@]}")"

force=0
[[ "${1:-}" == "--force" ]] && force=1

if [[ -x "$nvcc" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "nvcc already installed: $nvcc"
  "$nvcc" --version | tail -n 2
  exit 0
fi

if [[ $force -eq 0 ]]; then
  for candidate in "${CUDA_HOME:-}/bin/nvcc" "$(command -v nvcc || true)" /usr/local/cuda/bin/nvcc; do
    if [[ -n "$candidate" && "$candidate" != "/bin/nvcc" && -x "$candidate" ]]; then
      echo "a CUDA toolkit is already present: $candidate (use --force to install the pinned one anyway)"
      exit 0
    fi
  done
fi

python="$(command -v python3 || command -v python || true)"
[[ -n "$python" ]] || { echo "error: python3 with pip is needed to download the wheels" >&2; exit 1; }
command -v unzip >/dev/null || { echo "error: unzip is needed to unpack the wheels" >&2; exit 1; }

mkdir -p "$dest/wheels"
echo "downloading ${#wheels[@]} wheels into $dest/wheels"
"$python" -m pip download --no-deps --only-binary=:all: --dest "$dest/wheels" "${wheels[@]}"

for w in "${wheels[@]}"; do
  name="${w%%==*}"; ver="${w##*==}"
  file="$(ls "$dest/wheels/${name//-/_}-${ver}-"*.whl | head -n 1)"
  unzip -q -o "$file" -d "$dest"
done
chmod +x "$dest"/nvidia/cu13/bin/* "$dest"/nvidia/cu13/nvvm/bin/* 2>/dev/null || true

"$nvcc" --version | tail -n 2
printf '%s\n' "${wheels[@]}" > "$stamp"
rm -rf "$dest/wheels"
# build.rs does not watch a toolkit that did not exist; a new mtime makes the next build look.
touch "$root/build.rs"
echo "installed: $nvcc"
echo "rebuild to embed the kernels: cargo build"
