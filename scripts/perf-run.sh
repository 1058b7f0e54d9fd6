#!/usr/bin/env bash
# The end-to-end figures of docs/performance.md, taken the same way every time (issue 6):
# a release build, a fresh demo (switch + simulators, 1,000 load cards, durable journal) for
# each group of runs, `sync` before each group, the load generator as a second process.
#
#   bash scripts/perf-run.sh [OUT_DIR]        # default OUT_DIR: perf-out/
#
# Runs: closed loop (window 8) with the echo baseline; open loop at half the closed loop's
# rate; open loop at 2,000, 1,000 and 500/s; inquiries alone at 500/s; 10,000 idle
# connections. Every report is kept as JSON in OUT_DIR, and a Markdown table of them all is
# printed at the end, with the journal's synced steps and fsyncs per transaction read from the
# switch's /metrics. Durations: DURATION (default 60 s) for the first two runs, SHORT
# (default 30 s) for the others.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CYBERSWITCH_BIN:-${CARGO_TARGET_DIR:-target}/release/cyberswitch}
OUT=${1:-perf-out}
DURATION=${DURATION:-60}
SHORT=${SHORT:-30}
METRICS=http://127.0.0.1:9583/metrics
mkdir -p "$OUT"
if [ ! -x "$BIN" ]; then
  source scripts/setup.sh
  cargo build --locked --release --bin cyberswitch
fi
command -v jq >/dev/null || { echo "perf-run: needs jq" >&2; exit 2; }

DEMO_PID=""
DEMO_DIR=""
stop_demo() {
  if [ -n "$DEMO_PID" ]; then
    kill -INT "$DEMO_PID" 2>/dev/null || true
    wait "$DEMO_PID" 2>/dev/null || true
    DEMO_PID=""
  fi
  [ -n "$DEMO_DIR" ] && rm -rf "$DEMO_DIR"
  DEMO_DIR=""
}
trap stop_demo EXIT

start_demo() {
  stop_demo
  DEMO_DIR=$(mktemp -d /tmp/cyberswitch-perf.XXXXXX)
  "$BIN" demo --data-dir "$DEMO_DIR/data" --load-cards 1000 >"$OUT/demo-$1.log" 2>&1 &
  DEMO_PID=$!
  for _ in $(seq 1 600); do
    grep -q "cyberswitch ready" "$OUT/demo-$1.log" && break
    kill -0 "$DEMO_PID" 2>/dev/null || { echo "perf-run: the demo stopped" >&2; cat "$OUT/demo-$1.log" >&2; exit 1; }
    sleep 0.2
  done
  grep -q "cyberswitch ready" "$OUT/demo-$1.log" || { echo "perf-run: the demo did not start" >&2; exit 1; }
  sync
}

# The sum of one metric's samples whose labels contain $2 (empty: all of them).
metric() {
  curl -fsS "$METRICS" | awk -v name="$1" -v sel="$2" '
    $1 ~ "^"name"([{]|$)" && index($1, sel) { s += $NF } END { printf "%.0f\n", s }'
}

# Journal activity so far: synced steps, fsyncs (synced groups), transactions.
journal_counts() {
  echo "$(metric cyberswitch_journal_commit_seconds_count 'mode="synced"')" \
    "$(metric cyberswitch_journal_write_seconds_count 'mode="synced"')" \
    "$(metric cyberswitch_transactions_total "")"
}
journal_mark() { MARK=$(journal_counts); }
# What the run since journal_mark cost the journal, per transaction and per fsync.
journal_delta() {
  echo "$MARK $(journal_counts)" | awk -v run="$1" '{
    synced = $4 - $1; fsync = $5 - $2; txns = $6 - $3
    printf "%s: %d transactions, %d synced steps (%.2f per transaction), %d fsyncs (%.1f steps per fsync)\n",
      run, txns, synced, txns ? synced / txns : 0, fsync, fsync ? synced / fsync : 0 }' | tee -a "$OUT/journal.txt"
}

# CPU seconds (user + system) the demo process has used so far.
cpu_s() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / hz }' "/proc/$DEMO_PID/stat"
}

load() {
  local name=$1; shift
  local cpu0 cpu1
  cpu0=$(cpu_s)
  "$BIN" load --json --switch-pid "$DEMO_PID" "$@" >"$OUT/$name.json" 2>"$OUT/$name.err"
  cpu1=$(cpu_s)
  jq --arg cpu "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{print b - a}')" \
    '. + {demo_cpu_s: ($cpu | tonumber)}' "$OUT/$name.json" >"$OUT/$name.tmp" && mv "$OUT/$name.tmp" "$OUT/$name.json"
  echo "$name: $(jq -r '"\(.throughput_per_s | floor)/s, p99 \(.latency_ms.p99) ms, errors \(.errors), mismatches \(.mismatches)"' "$OUT/$name.json")" >&2
}

: >"$OUT/journal.txt"
# CPU time the hypervisor gave to others while we measured (the 8th number of /proc/stat's
# cpu line): a run with a lot of it was taken on a busy host.
STEAL0=$(awk '/^cpu /{print $9}' /proc/stat)
start_demo closed
journal_mark
load closed --compare-baseline --duration "$DURATION" -c 16 --window 8 --plot "$OUT/closed.svg"
journal_delta closed
SAF=$(metric cyberswitch_saf_depth "")
echo "closed: store-and-forward depth at the end $SAF" | tee -a "$OUT/journal.txt"

HALF=$(jq -r '.throughput_per_s / 2 | floor' "$OUT/closed.json")
start_demo open
journal_mark
load half --rate "$HALF" --duration "$DURATION" -c 16 --plot "$OUT/open.svg"
journal_delta half
for r in 2000 1000 500; do
  load "rate-$r" --rate "$r" --duration "$SHORT" -c 16
done
load inquiry-500 --mix inquiry=1 --rate 500 --duration "$SHORT" -c 4

start_demo idle
"$BIN" load --idle-connections 10000 --duration 10 --switch-pid "$DEMO_PID" | tee "$OUT/idle.txt"
stop_demo

echo
echo "$(date -u +%F) at $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores;" \
  "time stolen by the hypervisor during the runs: $(( ($(awk '/^cpu /{print $9}' /proc/stat) - STEAL0) / $(getconf CLK_TCK) )) s"
echo
echo "| run | throughput/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | demo CPU µs/txn |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for name in closed half rate-2000 rate-1000 rate-500 inquiry-500; do
  jq -r --arg n "$name" '
    "| \($n)\(if .fraction_of_baseline then " (echo baseline \(.baseline_throughput_per_s | floor)/s: \(.fraction_of_baseline * 10000 | floor / 100)%)" else "" end)"
    + " | \(.throughput_per_s | floor) | \(.latency_ms.p50) | \(.latency_ms.p90) | \(.latency_ms.p99)"
    + " | \(.latency_ms.p999) | \(.latency_ms.max) | \(.demo_cpu_s / .ok * 1e6 | floor) |"' "$OUT/$name.json"
done
echo
cat "$OUT/journal.txt"
grep -i "resident" "$OUT/idle.txt" || true
