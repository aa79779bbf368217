#!/usr/bin/env bash
# Makes a fresh machine able to grade: bubblewrap and Python 3 from apt (when missing), and a
# pinned pytest installed into .cache/pydeps (or $ATOMRL_CACHE/pydeps), which the sandbox puts on
# PYTHONPATH. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${ATOMRL_CACHE:-$root/.cache}"

need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
[[ -x /usr/bin/python3 ]] || need+=(python3)
if ((${#need[@]})); then
  sudo=""; [[ "$(id -u)" != 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

# Pinned so that grading is reproducible; pure-Python wheels, so any pip can install them for
# the sandbox's /usr/bin/python3.
reqs=(pytest==8.3.4 pluggy==1.5.0 iniconfig==2.0.0 packaging==24.2)
stamp="$cache/pydeps/.atomrl-${reqs[*]// /_}"
stamp="${stamp// /_}"
if [[ ! -f "$stamp" ]]; then
  pip_cmd=(python3 -m pip)
  if ! "${pip_cmd[@]}" --version >/dev/null 2>&1; then pip_cmd=(pip); fi
  rm -rf "$cache/pydeps"
  mkdir -p "$cache/pydeps"
  "${pip_cmd[@]}" install --quiet --disable-pip-version-check --no-deps --target "$cache/pydeps" "${reqs[@]}"
  touch "$stamp"
fi

bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --ro-bind-try /lib /lib \
  --ro-bind-try /lib64 /lib64 --ro-bind-try /bin /bin --proc /proc --dev /dev true \
  || { echo "error: bwrap is installed but cannot create namespaces here (see src/sandbox/mod.rs)" >&2; exit 1; }
PYTHONPATH="$cache/pydeps" /usr/bin/python3 -c "import pytest; print('sandbox deps ok: bwrap', end=' '); print('pytest', pytest.__version__)"
