#!/usr/bin/env bash
# The GPU benchmark suite: atomrl's kernels and the PyTorch peers on the same GPU, one table.
#   benches/gpu_suite.sh [FILTER]       (FILTER: a substring of the op name, e.g. attention)
# Needs a GPU, kernels in the build (scripts/install-nvcc.sh) or ATOMRL_BENCH_BIN and
# ATOMRL_TRAIN_BENCH_BIN naming the cuda_kernels and cuda_train_step binaries built with them,
# and python3 with torch for the peers (a peer that
# cannot run says so and is left out of the table).
set -uo pipefail
cd "$(dirname "$0")/.."
filter="${1:-}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

echo "== atomrl kernels" >&2
if [ -n "${ATOMRL_BENCH_BIN:-}" ]; then
  # A prebuilt bench binary (scripts/gpu-check.sh carries one to a machine without cargo).
  "$ATOMRL_BENCH_BIN" --bench $filter 2>&1 | tee -a "$log" | grep -v '^RESULT' >&2
else
  ATOMRL_REQUIRE_KERNELS="${ATOMRL_REQUIRE_KERNELS:-1}" cargo bench --bench cuda_kernels -- $filter 2>&1 | tee -a "$log" | grep -v '^RESULT' >&2
fi
bench_status=${PIPESTATUS[0]}

if [ -z "$filter" ] || [[ train_step == *"$filter"* ]]; then
  echo "== atomrl train step" >&2
  if [ -n "${ATOMRL_TRAIN_BENCH_BIN:-}" ]; then
    ATOMRL_BENCH_STEPS="${ATOMRL_BENCH_STEPS:-2}" "$ATOMRL_TRAIN_BENCH_BIN" --bench 2>&1 | tee -a "$log" | grep -v '^RESULT' >&2
  else
    ATOMRL_BENCH_STEPS="${ATOMRL_BENCH_STEPS:-2}" ATOMRL_REQUIRE_KERNELS="${ATOMRL_REQUIRE_KERNELS:-1}" cargo bench --bench cuda_train_step 2>&1 | tee -a "$log" | grep -v '^RESULT' >&2
  fi
  [ "${PIPESTATUS[0]}" = 0 ] || bench_status=1
fi

python="${PYTHON:-python3}"
for peer in attention_sdpa decode_attention sampling_torch grpo_objective_torch train_step_torch; do
  echo "== peer: $peer" >&2
  (cd benches/peers && "$python" "$peer.py") 2>&1 | tee -a "$log" | grep -v '^RESULT' >&2
done

"$python" - "$log" "$filter" <<'PY'
import sys
from collections import OrderedDict

log, flt = sys.argv[1], sys.argv[2]
rows = OrderedDict()
for line in open(log):
    if not line.startswith("RESULT|"):
        continue
    _, op, config, impl, ms, metric, value, peak = line.strip().split("|")
    if flt and flt not in op:
        continue
    rows.setdefault((op, config), []).append((impl, float(ms), metric, value, peak))
if not rows:
    print("no results (no GPU, or every benchmark skipped)")
    sys.exit(0)
head = f"{'op':<18} {'config':<44} {'impl':<30} {'ms':>9} {'metric':>8} {'value':>8} {'peak':>5} {'vs atomrl':>9}"
print(head)
print("-" * len(head))
for (op, config), impls in rows.items():
    ours = next((ms for impl, ms, *_ in impls if impl == "atomrl"), None)
    for impl, ms, metric, value, peak in impls:
        rel = f"{ms / ours:.2f}x" if ours and impl != "atomrl" else ""
        print(f"{op:<18} {config:<44} {impl:<30} {ms:>9.4f} {metric:>8} {value:>8} {peak:>5} {rel:>9}")
print("\n'vs atomrl' = peer time / atomrl time (above 1: atomrl is faster).")
PY
# The table is printed either way; a failed kernel bench fails the suite.
exit "$bench_status"
