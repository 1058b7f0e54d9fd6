#!/usr/bin/env bash
# Counts that do not depend on how fast the host happens to be (issue 24, session 17): a
# fresh demo (switch and simulators in two processes), an open loop at RATE for DURATION
# seconds, then per thread kind of each process the context switches and CPU µs per
# transaction, the load generator's CPU per transaction, and the journal's write groups from
# the switch's /metrics.
#
#   bash scripts/rate-threads.sh [RATE] [DURATION]      # default 2000/s for 10 s
#
# SW_ENV="NAME=value" passes an environment variable to the switch; SIM_BIN=path runs the
# simulators of another build (to tell a change in the switch from one in the simulators).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CYBERSWITCH_BIN:-${CARGO_TARGET_DIR:-target}/release/cyberswitch}
RATE=${1:-2000}
DUR=${2:-10}
OUT=$(mktemp -d /tmp/rate-threads.XXXX)
trap 'kill -INT ${SW:-} ${SIM:-} 2>/dev/null || true; rm -rf "$OUT"' EXIT
"${SIM_BIN:-$BIN}" sim demo --data-dir "$OUT/data" --load-cards 1000 >"$OUT/sim.log" 2>&1 &
SIM=$!
for _ in $(seq 1 300); do grep -q "simulators ready" "$OUT/sim.log" && break; sleep 0.2; done
env ${SW_ENV:-X=1} "$BIN" demo --data-dir "$OUT/data" --load-cards 1000 --external-sims >"$OUT/switch.log" 2>&1 &
SW=$!
for _ in $(seq 1 600); do grep -q "cyberswitch ready" "$OUT/switch.log" && break; sleep 0.2; done
# thread name, context switches, CPU ticks — summed per name
snap() {
  for t in /proc/"$1"/task/*; do
    awk -v n="$(cat "$t/comm")" '/^(non)?voluntary_ctxt/{c+=$2} END{printf "%s %d ", n, c}' "$t/status"
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "$t/stat"
  done | awk '{cs[$1]+=$2; cpu[$1]+=$3} END{for (k in cs) print k, cs[k], cpu[k]}' | sort
}
snap $SW >"$OUT/sw.a"; snap $SIM >"$OUT/sim.a"
/usr/bin/time -f "%U %S" -o "$OUT/load.cpu" \
  "$BIN" load --json --rate "$RATE" --duration "$DUR" -c 16 --cards 1000 >"$OUT/load.json" 2>"$OUT/load.err"
snap $SW >"$OUT/sw.b"; snap $SIM >"$OUT/sim.b"
OK=$(jq .ok "$OUT/load.json")
HZ=$(getconf CLK_TCK)
jq -r '"\(.rate_per_s)/s ok \(.ok) p50 \(.latency_ms.p50) p99 \(.latency_ms.p99) p99.9 \(.latency_ms.p999) ms, errors \(.errors), mismatches \(.mismatches)"' "$OUT/load.json"
# The load generator shares the machine: its CPU counts in what the machine spends per
# transaction (user and system apart: its system time is mostly its wake-ups).
awk -v ok="$OK" '{ printf "load: CPU µs per transaction %.1f (user %.1f, system %.1f)\n", ($1 + $2) * 1e6 / ok, $1 * 1e6 / ok, $2 * 1e6 / ok }' "$OUT/load.cpu"
for p in sw sim; do
  echo "$p: thread, context switches per transaction, CPU µs per transaction"
  join "$OUT/$p.a" "$OUT/$p.b" | awk -v ok="$OK" -v hz="$HZ" \
    '{ printf "  %-18s %6.2f %8.1f\n", $1, ($4 - $2) / ok, ($5 - $3) * 1e6 / hz / ok }'
done
curl -s http://127.0.0.1:9583/metrics |
  grep -E "^cyberswitch_journal_(batch_steps_(sum|count)|write_seconds_count)" || true
