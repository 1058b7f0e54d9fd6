#!/usr/bin/env bash
# End-to-end figures side by side (issue 24), taken the same way every time:
#
#   bash scripts/perf-run.sh [OUT_DIR]        # default OUT_DIR: perf-out/
#
# One run alternates (ABAB…, PAIRS times) these settings, each on a fresh data directory,
# `sync` first, with the switch, the simulators and the load generator in three processes
# (`cyberswitch demo --external-sims`, `cyberswitch sim demo`, `cyberswitch load`):
#
#   echo      the load generator against its own echo server (what the loopback carries)
#   null      the switch with `[bench] durability = "off"`: no WAL, nothing synced
#   unsynced  `[bench] durability = "unsynced"`: the journal written, never fsynced
#   real      the switch as shipped: every deciding step synced before it is acted on
#   inproc    the real switch with the simulators inside its process (the old setting)
#   base      (only with BASE_BIN=path) another build, e.g. an older commit, run as its own
#             `demo` (simulators inside its process if it cannot run them apart)
#
# Each is a closed loop (window 8, 16 connections, default mix, 1,000 load cards) for
# DURATION seconds (default 20); with RATES="2000 …", each switch setting then carries an
# open loop at each rate for SHORT seconds (default 15) on the same demo. With GROWN=1, the
# `real` setting is also measured on a store grown past GROW_MB (default 1,100) megabytes
# by a closed loop first: a closed loop and the rates right after it, then the rates again
# once RocksDB has caught up (`grown-settled-rate…`).
#
# Reported per run: throughput, p50/p99/p99.9, errors and mismatches, CPU µs per
# transaction of each process (/proc/PID/stat) and of each thread kind (/proc/PID/task),
# fsyncs per second and synced steps per fsync (the switch's /metrics: under `unsynced` and
# `null` these count the groups that would have synced), RocksDB's cumulative write stall
# (the switch's /metrics), time stolen by the hypervisor (/proc/stat) and the load average
# at the start; then the switch's memory with 10,000 idle connections. Every load report is kept as JSON in OUT_DIR, the table as OUT_DIR/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CYBERSWITCH_BIN:-${CARGO_TARGET_DIR:-target}/release/cyberswitch}
BASE_BIN=${BASE_BIN:-}
OUT=${1:-perf-out}
DURATION=${DURATION:-20}
SHORT=${SHORT:-15}
PAIRS=${PAIRS:-2}
MODES=${MODES:-echo null unsynced real}
RATES=${RATES:-}
GROWN=${GROWN:-0}
GROW_MB=${GROW_MB:-1100}
CARDS=${CARDS:-1000}
METRICS=http://127.0.0.1:9583/metrics
HZ=$(getconf CLK_TCK)
mkdir -p "$OUT"
if [ ! -x "$BIN" ]; then
  source scripts/setup.sh
  cargo build --locked --release --bin cyberswitch
fi
command -v jq >/dev/null || { echo "perf-run: needs jq" >&2; exit 2; }
[ -z "$BASE_BIN" ] || MODES="$MODES base"

SW_PID="" SIM_PID="" DIR=""
stop_all() {
  for p in $SW_PID $SIM_PID; do kill -INT "$p" 2>/dev/null || true; done
  for p in $SW_PID $SIM_PID; do wait "$p" 2>/dev/null || true; done
  SW_PID="" SIM_PID=""
  [ -n "$DIR" ] && rm -rf "$DIR"
  DIR=""
}
trap stop_all EXIT

wait_for() { # LOG TEXT PID
  for _ in $(seq 1 900); do
    grep -qs "$2" "$1" && return 0
    kill -0 "$3" 2>/dev/null || { echo "perf-run: $1: the process stopped" >&2; tail -20 "$1" >&2; exit 1; }
    sleep 0.2
  done
  echo "perf-run: $1: not ready" >&2; exit 1
}

# Start the simulators and a switch with durability $2 (synced, unsynced, off, base).
start() {
  local name=$1 durability=$2
  stop_all
  DIR=$(mktemp -d /tmp/cyberswitch-perf.XXXXXX)
  if [ "$durability" = inproc ]; then
    "$BIN" demo --data-dir "$DIR/data" --load-cards "$CARDS" >"$OUT/$name.switch.log" 2>&1 &
    SW_PID=$!
  elif [ "$durability" = base ]; then
    # An older build runs its simulators in its own process when it cannot do otherwise.
    if "$BASE_BIN" demo --help | grep -q -- --external-sims; then
      "$BASE_BIN" sim demo --data-dir "$DIR/data" --load-cards "$CARDS" >"$OUT/$name.sim.log" 2>&1 &
      SIM_PID=$!
      wait_for "$OUT/$name.sim.log" "simulators ready" "$SIM_PID"
      "$BASE_BIN" demo --data-dir "$DIR/data" --load-cards "$CARDS" --external-sims >"$OUT/$name.switch.log" 2>&1 &
    else
      "$BASE_BIN" demo --data-dir "$DIR/data" --load-cards "$CARDS" >"$OUT/$name.switch.log" 2>&1 &
    fi
    SW_PID=$!
  else
    "$BIN" sim demo --data-dir "$DIR/data" --load-cards "$CARDS" >"$OUT/$name.sim.log" 2>&1 &
    SIM_PID=$!
    wait_for "$OUT/$name.sim.log" "simulators ready" "$SIM_PID"
    local unsafe=()
    [ "$durability" = synced ] || unsafe=(--bench-durability "$durability" --unsafe-no-durability)
    "$BIN" demo --data-dir "$DIR/data" --load-cards "$CARDS" --external-sims "${unsafe[@]}" \
      >"$OUT/$name.switch.log" 2>&1 &
    SW_PID=$!
  fi
  wait_for "$OUT/$name.switch.log" "cyberswitch ready" "$SW_PID"
  sync
}

# The sum of one metric's samples whose labels contain $2 (empty: all of them); 0 without
# a metrics endpoint.
metric() {
  { curl -fsS "$METRICS" 2>/dev/null || true; } | awk -v name="$1" -v sel="$2" '
    $1 ~ "^"name"([{]|$)" && index($1, sel) { s += $NF } END { printf "%.3f\n", s }'
}

# pid utime+stime (ticks) of a process; per thread: "kind ticks" lines, the thread's name
# with its digits dropped (tokio-runtime-w, rocksdb:low, journal-writer …).
proc_ticks() { [ -n "$1" ] && awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
thread_ticks() {
  [ -n "$1" ] || return 0
  for t in /proc/"$1"/task/*; do
    cat "$t/stat" 2>/dev/null || true
  done | awk '{ s = $0; sub(/^[^(]*\(/, "", s); name = s; sub(/\) .*$/, "", name); sub(/^.*\) /, "", s)
                split(s, f, " "); gsub(/[0-9]+/, "", name); gsub(/ /, "_", name); t[name] += f[12] + f[13] }
           END { for (n in t) print n, t[n] }'
}
snapshot() { # TAG
  local tag=$1
  echo "$(proc_ticks "$SW_PID") $(proc_ticks "$SIM_PID")" >"$OUT/.snap-$tag"
  thread_ticks "$SW_PID" >"$OUT/.threads-sw-$tag"
  thread_ticks "$SIM_PID" >"$OUT/.threads-sim-$tag"
  awk '/^cpu /{ print $2+$3+$4+$5+$6+$7+$8+$9, $9 }' /proc/stat >"$OUT/.stat-$tag"
  echo "$(metric cyberswitch_journal_commit_seconds_count 'mode="synced"') $(metric cyberswitch_journal_write_seconds_count 'mode="synced"') $(metric cyberswitch_rocksdb_stall_seconds '')" >"$OUT/.metrics-$tag"
}

# Wait (at most SETTLE_S seconds, default 600) until the switch's RocksDB runs no flush or
# compaction and has none pending, as its /metrics say; report how long that took.
settle() {
  local t0=$SECONDS
  while [ $((SECONDS - t0)) -lt "${SETTLE_S:-600}" ]; do
    local busy; busy=$(awk -v a="$(metric cyberswitch_rocksdb_running_compactions '')" \
      -v b="$(metric cyberswitch_rocksdb_running_flushes '')" \
      -v c="$(metric cyberswitch_rocksdb_pending_compaction_bytes '')" 'BEGIN { print a + b + c }')
    [ "$busy" = 0 ] && break
    sleep 1
  done
  sleep 2  # the gauges are sampled every second
  echo "settled after $((SECONDS - t0)) s" | tee -a "$OUT/grown.txt" >&2
}

# One load run against the running switch (or the echo baseline): JSON in $OUT/$name.json
# with the measured costs added.
measure() {
  local name=$1; shift
  local load0 load1 loadavg
  loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
  snapshot a
  times >"$OUT/.times-a"  # a builtin with a redirect: no subshell, so its children count
  load0=$(awk 'NR==2 { print $1 " " $2 }' "$OUT/.times-a")
  "$BIN" load --json ${SW_PID:+--switch-pid "$SW_PID"} "$@" >"$OUT/$name.json" 2>"$OUT/$name.err" || {
    echo "perf-run: $name: load failed" >&2; cat "$OUT/$name.err" >&2; return 1; }
  times >"$OUT/.times-b"
  load1=$(awk 'NR==2 { print $1 " " $2 }' "$OUT/.times-b")
  snapshot b
  local ok; ok=$(jq -r '.ok' "$OUT/$name.json")
  local dur; dur=$(jq -r '.duration_s' "$OUT/$name.json")
  # bash's `times`: the load generator is the only child waited for in between.
  local load_s; load_s=$(echo "$load0 $load1" | awk '
    function s(x) { m = x; sub(/m.*/, "", m); v = x; sub(/^[0-9]+m/, "", v); sub(/s$/, "", v); return m * 60 + v }
    { print s($3) + s($4) - s($1) - s($2) }')
  read -r sw0 sim0 <"$OUT/.snap-a"; read -r sw1 sim1 <"$OUT/.snap-b"
  read -r tot0 steal0 <"$OUT/.stat-a"; read -r tot1 steal1 <"$OUT/.stat-b"
  read -r st0 fs0 stall0 <"$OUT/.metrics-a"; read -r st1 fs1 stall1 <"$OUT/.metrics-b"
  local threads; threads=$(for p in sw sim; do
      join -a 2 -e 0 -o 0,1.2,2.2 <(sort "$OUT/.threads-$p-a") <(sort "$OUT/.threads-$p-b") |
        awk -v p="$p" -v hz="$HZ" -v ok="$ok" '{ d = ($3 - $2) / hz * 1e6 / (ok ? ok : 1); if (d >= 0.05) printf "%s/%s=%.1f ", p, $1, d }'
    done)
  jq --argjson ok "$ok" --arg la "$loadavg" --arg threads "$threads" \
     --argjson sw "$(awk -v a="$sw0" -v b="$sw1" -v hz="$HZ" 'BEGIN{print (b-a)/hz}')" \
     --argjson sim "$(awk -v a="$sim0" -v b="$sim1" -v hz="$HZ" 'BEGIN{print (b-a)/hz}')" \
     --argjson load "$load_s" \
     --argjson machine "$(awk -v a="$tot0" -v b="$tot1" -v hz="$HZ" 'BEGIN{print (b-a)/hz}')" \
     --argjson steal "$(awk -v a="$steal0" -v b="$steal1" -v hz="$HZ" 'BEGIN{print (b-a)/hz}')" \
     --argjson steps "$(awk -v a="$st0" -v b="$st1" 'BEGIN{print b-a}')" \
     --argjson fsyncs "$(awk -v a="$fs0" -v b="$fs1" 'BEGIN{print b-a}')" \
     --argjson stall "$(awk -v a="$stall0" -v b="$stall1" 'BEGIN{print b-a}')" \
     --argjson dur "$dur" '
    def per(x): if $ok > 0 then (x / $ok * 1e6 * 10 | round / 10) else null end;
    . + { loadavg: $la, switch_cpu_us: per($sw), sims_cpu_us: per($sim), load_cpu_us: per($load),
          machine_cpu_us: per($machine), steal_s: $steal, threads_cpu_us: $threads,
          fsyncs_per_s: ($fsyncs / $dur | round), steps_per_fsync: (if $fsyncs > 0 then ($steps / $fsyncs * 10 | round / 10) else null end),
          synced_steps_per_txn: (if $ok > 0 then ($steps / $ok * 100 | round / 100) else null end),
          stall_s: $stall }' "$OUT/$name.json" >"$OUT/$name.tmp" && mv "$OUT/$name.tmp" "$OUT/$name.json"
  echo "$name: $(jq -r '"\(.throughput_per_s | floor)/s p50 \(.latency_ms.p50) p99 \(.latency_ms.p99) p99.9 \(.latency_ms.p999) ms, errors \(.errors), mismatches \(.mismatches), switch \(.switch_cpu_us) µs/txn, load avg \(.loadavg)"' "$OUT/$name.json")" >&2
  RUNS+=("$name")
}

RUNS=()
CLOSED=(--duration "$DURATION" -c 16 --window 8 --cards "$CARDS")
for pair in $(seq 1 "$PAIRS"); do
  for mode in $MODES; do
    name="$mode-$pair"
    case $mode in
      echo) stop_all; measure "$name" --echo-baseline "${CLOSED[@]}" ;;
      null) start "$name" off ;;
      unsynced) start "$name" unsynced ;;
      real) start "$name" synced ;;
      inproc) start "$name" inproc ;;
      base) start "$name" base ;;
    esac
    [ "$mode" = echo ] && continue
    plot=()
    [ "$pair" = 1 ] && plot=(--plot "$OUT/$name.svg")
    measure "$name" "${CLOSED[@]}" "${plot[@]}"
    for r in $RATES; do
      measure "$name-rate$r" --rate "$r" --duration "$SHORT" -c 16 --cards "$CARDS"
    done
    stop_all
  done
done

# 10,000 idle connections on a fresh real switch: its resident memory (IDLE=0 skips it).
if [ "${IDLE:-1}" = 1 ]; then
  start idle synced
  "$BIN" load --idle-connections 10000 --duration 10 --switch-pid "$SW_PID" | tee "$OUT/idle.txt" >&2
  stop_all
fi

if [ "$GROWN" = 1 ]; then
  start grown synced
  while [ "$(du -sm "$DIR/data" | cut -f1)" -lt "$GROW_MB" ]; do
    "$BIN" load --json --duration 20 -c 16 --window 8 --cards "$CARDS" >/dev/null 2>&1
  done
  echo "grown: data directory $(du -sh "$DIR/data" | cut -f1)" | tee "$OUT/grown.txt" >&2
  sync
  measure grown-real "${CLOSED[@]}"
  for r in $RATES; do
    measure "grown-real-rate$r" --rate "$r" --duration "$SHORT" -c 16 --cards "$CARDS"
  done
  # The same rates again once RocksDB has caught up (no flush or compaction running, none
  # pending): the grown store in its steady state, apart from the catch-up after a burst.
  if [ -n "$RATES" ]; then
    settle
    for r in $RATES; do
      measure "grown-settled-rate$r" --rate "$r" --duration "$SHORT" -c 16 --cards "$CARDS"
    done
  fi
  stop_all
fi

{
  echo "$(date -u '+%F %H:%M') UTC at $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores," \
    "closed loop ${DURATION} s, window 8, 16 connections, $CARDS cards"
  echo
  echo "| run | load avg | throughput/s | p50 ms | p99 ms | p99.9 ms | err/mism | switch µs/txn | sims µs/txn | load µs/txn | machine µs/txn | fsyncs/s | steps/fsync | stall s | steal s |"
  echo "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for name in "${RUNS[@]}"; do
    jq -r --arg n "$name" '
      "| \($n) | \(.loadavg) | \(.throughput_per_s | floor) | \(.latency_ms.p50) | \(.latency_ms.p99) | \(.latency_ms.p999)"
      + " | \(.errors)/\(.mismatches) | \(.switch_cpu_us) | \(.sims_cpu_us) | \(.load_cpu_us) | \(.machine_cpu_us)"
      + " | \(.fsyncs_per_s) | \(.steps_per_fsync) | \(.stall_s) | \(.steal_s) |"' "$OUT/$name.json"
  done
  echo
  grep -i resident "$OUT/idle.txt" 2>/dev/null | sed 's/^/10,000 idle connections: /' || true
  echo
  echo "CPU µs per transaction by thread kind (sw: switch process, sim: simulators' process):"
  for name in "${RUNS[@]}"; do
    echo "- $name: $(jq -r '.threads_cpu_us' "$OUT/$name.json")"
  done
} | tee "$OUT/table.md"
