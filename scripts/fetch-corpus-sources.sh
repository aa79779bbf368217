#!/usr/bin/env bash
# Fetches the source distributions the built-in corpus is made from, pinned by version and
# checked by sha256, into .cache/sdists/ (or $ATOMRL_CACHE/sdists/). Idempotent: a file already
# there with the right hash is kept.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${ATOMRL_CACHE:-$root/.cache}"
dest="$cache/sdists"
mkdir -p "$dest"
pip_cmd=(python3 -m pip)
if ! "${pip_cmd[@]}" --version >/dev/null 2>&1; then pip_cmd=(pip); fi

status=0
while IFS=$'\t' read -r name version file sha rest; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  target="$dest/$file"
  if [[ -f "$target" ]] && echo "$sha  $target" | sha256sum -c --quiet - 2>/dev/null; then
    echo "ok       $file"
    continue
  fi
  tmp="$(mktemp -d)"
  # --no-build-isolation is not used: pip may need the package's build backend to read metadata.
  "${pip_cmd[@]}" download --quiet --no-binary :all: --no-deps --dest "$tmp" "$name==$version"
  got="$(ls "$tmp")"
  if [[ "$got" != "$file" ]]; then
    echo "error: expected $file from pip, got: $got" >&2; status=1; rm -rf "$tmp"; continue
  fi
  if ! echo "$sha  $tmp/$file" | sha256sum -c --quiet -; then
    echo "error: sha256 mismatch for $file" >&2; status=1; rm -rf "$tmp"; continue
  fi
  mv "$tmp/$file" "$target"
  rm -rf "$tmp"
  echo "fetched  $file"
done < "$root/data/corpus/sources.tsv"
exit $status
