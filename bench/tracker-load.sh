#!/usr/bin/env bash
# bench/tracker-load.sh — the shoal tracker under load, next to opentracker.
#
# Starts `shoal tracker` on 127.0.0.1 with a fresh database, preloads AGENTS agents each holding
# PER_AGENT of CONTENTS contents (the first 10 holdings partial) with the tracker-load example,
# then drives it with wrk (-t1 -c32, DURATION s) three ways: a 50/50 mix of peer queries and
# one-piece announce deltas (the target), queries only, and deltas only; all of it twice, with
# tokio's default worker threads and with one (TOKIO_WORKER_THREADS=1). It reports requests/s,
# p50/p99 latency and the tracker's RSS, then restarts the tracker and times restart-to-serving.
# Last, opentracker (Debian) takes BitTorrent announces over the same contents with the same wrk
# settings, for the ratio. Then two tracker replicas share one redis-server (Debian): the same
# preload through replica 1, then the same three loads with half the wrk connections on each
# replica (two wrk processes at once; requests/s summed, p99 the worse of the two), each replica
# with one worker thread. The Markdown table also goes to bench/out/tracker-load-<date>.md.
#
# Knobs (environment): AGENTS=10000 CONTENTS=10000 PER_AGENT=100 DURATION=10 CONNS=32
#   SHOAL=path   use this shoal binary instead of `cargo build --release -p shoal`
#   PRELOAD=path use this preloader instead of building the tracker-load example
#   SKIP_OPENTRACKER=1
#   SKIP_SQLITE=1 (only the Redis replicas)   SKIP_REDIS=1 (no replicas)
#
# Exit status: 0 when the benchmark ran (missed targets are in the report), 1 when the harness
# could not run or any request failed.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
bench_init

AGENTS=${AGENTS:-10000}
CONTENTS=${CONTENTS:-10000}
PER_AGENT=${PER_AGENT:-100}
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
for knob in AGENTS CONTENTS PER_AGENT DURATION CONNS; do
  [[ "${!knob}" =~ ^[1-9][0-9]*$ ]] || bench_die "$knob must be a positive integer"
done
((DURATION <= 120)) || bench_die "DURATION must be at most 120 s"

bench_need wrk:wrk curl:curl
[[ -n "${SKIP_OPENTRACKER:-}" ]] || bench_need opentracker:opentracker
[[ -n "${SKIP_REDIS:-}" ]] || bench_need redis-server:redis-server

# ----------------------------------------------------------------------------- build
cd "$REPO"
if [[ -z "${SHOAL:-}" ]]; then
  bench_log "building shoal and the preloader (release)"
  cargo build --release -q -p shoal
  SHOAL=$REPO/target/release/shoal
fi
if [[ -z "${PRELOAD:-}" ]]; then
  cargo build --release -q -p shoal-tracker --features loadgen --example tracker-load
  PRELOAD=$REPO/target/release/examples/tracker-load
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/shoal-tracker-load.XXXXXX")
bench_cleanup_add "rm -rf '$WORK'"
mkdir -p "$BENCH_DIR/out"
REPORT=$BENCH_DIR/out/tracker-load-$(date +%Y-%m-%d).md

SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat >"$WORK/tokens.toml" <<TOML
[[token]]
name = "bench"
secret = "$SECRET"
role = "agent"
TOML
chmod 600 "$WORK/tokens.toml"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
PORT=$(bench_free_port)
URL=http://127.0.0.1:$PORT
TRACKER_PID=""

start_tracker() { # [WORKERS]: tokio worker threads, default one per core
  # A long lease: the preload and the runs must not outlive it. The rate limit stays on, high
  # enough not to bite, so its cost is measured.
  env ${1:+TOKIO_WORKER_THREADS=$1} "$SHOAL" tracker --listen "127.0.0.1:$PORT" --data "$WORK/data" --tokens "$WORK/tokens.toml" \
    --lease 900 --rate-limit 1000000 >>"$WORK/tracker.log" 2>&1 &
  TRACKER_PID=$!
  bench_cleanup_add "kill $TRACKER_PID 2>/dev/null || true"
  local i
  for ((i = 0; i < 200; i++)); do
    curl -fs "$URL/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$TRACKER_PID" 2>/dev/null || bench_die "the tracker exited: $(tail -5 "$WORK/tracker.log")"
    sleep 0.01
  done
  bench_die "the tracker did not answer /healthz within 2 s"
}

rss_mib() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
hwm_mib() { awk '/^VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

# wrk's text report → "rps p50_ms p99_ms non2xx errors"
parse_wrk() {
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ { rps = $2 }
    $1 == "50.000%" || $1 == "50%" { p50 = ms($2) }
    $1 == "99.000%" || $1 == "99%" { p99 = ms($2) }
    /Non-2xx or 3xx responses/ { bad = $NF }
    /Socket errors/ { errs = $0 }
    END { printf "%.0f %.2f %.2f %d %s\n", rps, p50, p99, bad + 0, (errs == "" ? "none" : "some") }
  ' "$1"
}

run_wrk() { # NAME ANNOUNCE_PCT
  local log=$WORK/wrk-$1.log
  AGENTS=$AGENTS CONTENTS=$CONTENTS PER_AGENT=$PER_AGENT ANNOUNCE_PCT=$2 TRACKER_TOKEN=$SECRET \
    timeout $((DURATION + 30)) wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency \
    -s "$BENCH_DIR/tracker-load.lua" "$URL" >"$log" 2>&1 || bench_die "wrk failed: $(tail -3 "$log")"
  parse_wrk "$log"
}

# ----------------------------------------------------------------------------- shoal tracker
declare -A result rss
restart_s="-"
metrics_agents="-"
if [[ -z "${SKIP_SQLITE:-}" ]]; then
# Two configurations: tokio's default of one worker thread per core, and one worker thread,
# which leaves wrk a core of its own on a 2-core machine (as single-threaded opentracker does).
for workers in default 1; do
  rm -rf "$WORK/data"
  start_tracker "${workers#default}"
  bench_log "[$workers workers] preloading $AGENTS agents x $PER_AGENT holdings of $CONTENTS contents"
  timeout 600 "$PRELOAD" --url "$URL" --token "$SECRET" --agents "$AGENTS" --contents "$CONTENTS" \
    --per-agent "$PER_AGENT" --partial 10 >&2
  rss[$workers.loaded]=$(rss_mib "$TRACKER_PID")
  for run in mixed:50 queries:0 deltas:100; do
    name=${run%%:*}
    bench_log "[$workers workers] wrk: $name (-t1 -c$CONNS ${DURATION}s)"
    result[$workers.$name]=$(run_wrk "$workers-$name" "${run#*:}")
    read -r _ _ _ bad _ <<<"${result[$workers.$name]}"
    ((bad == 0)) || bench_die "$name: $bad requests failed (see $WORK/wrk-$workers-$name.log, $WORK/tracker.log)"
  done
  rss[$workers.after]=$(rss_mib "$TRACKER_PID")
  rss[$workers.peak]=$(hwm_mib "$TRACKER_PID")
  metrics_agents=$(curl -fs "$URL/metrics" | awk '$1 == "shoal_tracker_agents" { print $2 }')
  if [[ $workers == 1 ]]; then break; fi
  kill -TERM "$TRACKER_PID"
  bench__wait_gone "$TRACKER_PID" 100 || bench_die "the tracker did not stop within 10 s of SIGTERM"
done

bench_log "restart: SIGTERM, then time until the new process answers"
kill -TERM "$TRACKER_PID"
bench__wait_gone "$TRACKER_PID" 100 || bench_die "the tracker did not stop within 10 s of SIGTERM"
t0=$(date +%s.%N)
start_tracker 1
t1=$(date +%s.%N)
curl -fs -H "Authorization: Bearer $SECRET" "$URL/v1/content/$(printf '%048d%016x' 0 1)" >/dev/null ||
  bench_die "the restarted tracker lost its catalog"
restart_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
kill -TERM "$TRACKER_PID"
bench__wait_gone "$TRACKER_PID" 100 || true
fi

# ----------------------------------------------------------------------------- Redis replicas
if [[ -z "${SKIP_REDIS:-}" ]]; then
  REDIS_PORT=$(bench_free_port)
  mkdir -p "$WORK/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK/redis" \
    --logfile "$WORK/redis.log" &
  REDIS_PID=$!
  bench_cleanup_add "kill $REDIS_PID 2>/dev/null || true"
  for ((i = 0; i < 100; i++)); do bench__port_listening "$REDIS_PORT" && break; sleep 0.05; done
  declare -a REPLICA_URLS=() REPLICA_PIDS=()
  for replica in 1 2; do
    rport=$(bench_free_port)
    TOKIO_WORKER_THREADS=1 "$SHOAL" tracker --listen "127.0.0.1:$rport" \
      --store "redis://127.0.0.1:$REDIS_PORT/0" --tokens "$WORK/tokens.toml" \
      --lease 900 --rate-limit 1000000 >>"$WORK/replica-$replica.log" 2>&1 &
    REPLICA_PIDS+=($!)
    REPLICA_URLS+=("http://127.0.0.1:$rport")
    bench_cleanup_add "kill $! 2>/dev/null || true"
    for ((i = 0; i < 200; i++)); do
      curl -fs "http://127.0.0.1:$rport/healthz" >/dev/null 2>&1 && break
      sleep 0.01
    done
    curl -fs "http://127.0.0.1:$rport/healthz" >/dev/null 2>&1 ||
      bench_die "replica $replica did not answer: $(tail -5 "$WORK/replica-$replica.log")"
  done
  bench_log "[redis] preloading $AGENTS agents x $PER_AGENT holdings through replica 1"
  t0=$(date +%s.%N)
  timeout 900 "$PRELOAD" --url "${REPLICA_URLS[0]}" --token "$SECRET" --agents "$AGENTS" \
    --contents "$CONTENTS" --per-agent "$PER_AGENT" --partial 10 >&2
  redis_preload_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  for run in mixed:50 queries:0 deltas:100; do
    name=${run%%:*}
    bench_log "[redis] wrk: $name, -c$((CONNS / 2)) on each of 2 replicas, ${DURATION}s"
    wrk_pids=()
    for replica in 0 1; do
      AGENTS=$AGENTS CONTENTS=$CONTENTS PER_AGENT=$PER_AGENT ANNOUNCE_PCT=${run#*:} TRACKER_TOKEN=$SECRET \
        timeout $((DURATION + 30)) wrk -t1 -c$((CONNS / 2)) -d"${DURATION}s" --latency \
        -s "$BENCH_DIR/tracker-load.lua" "${REPLICA_URLS[$replica]}" >"$WORK/wrk-redis-$name-$replica.log" 2>&1 &
      wrk_pids+=($!)
    done
    wait "${wrk_pids[@]}" || bench_die "wrk against the replicas failed: $(tail -3 "$WORK/wrk-redis-$name-0.log")"
    read -r rps0 p500 p990 bad0 _ <<<"$(parse_wrk "$WORK/wrk-redis-$name-0.log")"
    read -r rps1 p501 p991 bad1 _ <<<"$(parse_wrk "$WORK/wrk-redis-$name-1.log")"
    ((bad0 + bad1 == 0)) || bench_die "redis $name: $((bad0 + bad1)) requests failed (see $WORK)"
    result[redis.$name]="$((rps0 + rps1)) $(awk -v a="$p500" -v b="$p501" 'BEGIN { print (a > b ? a : b) }') $(awk -v a="$p990" -v b="$p991" 'BEGIN { print (a > b ? a : b) }')"
  done
  rss[redis.replica]=$(rss_mib "${REPLICA_PIDS[0]}")
  rss[redis.server]=$(rss_mib "$REDIS_PID")
  kill "${REPLICA_PIDS[@]}" "$REDIS_PID" 2>/dev/null || true
fi

# ----------------------------------------------------------------------------- opentracker
ot="-"
if [[ -z "${SKIP_OPENTRACKER:-}" ]]; then
  bench_log "opentracker: announces (-t1 -c$CONNS ${DURATION}s)"
  mkdir -p "$WORK/ot"
  for ((c = 0; c < CONTENTS; c++)); do printf '000000000000000000000000%016x\n' "$c"; done >"$WORK/ot/whitelist.txt"
  chmod 755 "$WORK" "$WORK/ot"
  OT_PORT=$(bench_free_port)
  opentracker -i 127.0.0.1 -p "$OT_PORT" -P "$OT_PORT" -d "$WORK/ot" -u nobody -w /whitelist.txt \
    >"$WORK/ot.log" 2>&1 &
  OT_PID=$!
  bench_cleanup_add "kill $OT_PID 2>/dev/null || true"
  for ((i = 0; i < 100; i++)); do bench__port_listening "$OT_PORT" && break; sleep 0.05; done
  AGENTS=$AGENTS CONTENTS=$CONTENTS timeout $((DURATION + 30)) wrk -t1 -c"$CONNS" -d"${DURATION}s" \
    --latency -s "$BENCH_DIR/opentracker-announce.lua" "http://127.0.0.1:$OT_PORT" >"$WORK/wrk-ot.log" 2>&1 ||
    bench_die "wrk against opentracker failed"
  ot=$(parse_wrk "$WORK/wrk-ot.log")
  ot_rss=$(rss_mib "$OT_PID")
  kill "$OT_PID" 2>/dev/null || true
fi

# ----------------------------------------------------------------------------- report
row() { # LABEL "rps p50 p99 ..."
  local rps p50 p99
  read -r rps p50 p99 _ <<<"$2"
  printf '| %s | %s | %s | %s |\n' "$1" "$rps" "$p50" "$p99"
}
read -r ot_rps _ ot_p99 _ <<<"$ot"
verdict() { if "$@"; then echo "met"; else echo "MISSED"; fi; }
{
  echo "$AGENTS agents x $PER_AGENT holdings of $CONTENTS contents (10 partial per agent, 256 pieces each);"
  echo "wrk -t1 -c$CONNS -d${DURATION}s on the same $(nproc)-core machine; $(date -u +%Y-%m-%d);"
  echo "load average before the run: $LOAD_BEFORE."
  echo
  echo "| load | requests/s | p50 ms | p99 ms |"
  echo "|---|---:|---:|---:|"
  [[ -n "${SKIP_REDIS:-}" ]] || for name in mixed queries deltas; do
    row "2 shoal tracker replicas (1 worker thread each) on one Redis: $name" "${result[redis.$name]}"
  done
  [[ -n "${SKIP_SQLITE:-}" ]] || for workers in default 1; do
    label="shoal tracker, $workers worker threads"
    [[ $workers == 1 ]] && label="shoal tracker, 1 worker thread (TOKIO_WORKER_THREADS=1)"
    row "$label: 50% peer queries + 50% one-piece announce deltas" "${result[$workers.mixed]}"
    row "$label: peer queries only (k=20 of ~100 holders)" "${result[$workers.queries]}"
    row "$label: announce deltas only" "${result[$workers.deltas]}"
  done
  [[ "$ot" == "-" ]] || row "opentracker, BitTorrent announces (numwant=20)" "$ot"
  if [[ -z "${SKIP_SQLITE:-}" ]]; then
    echo
    echo "| measure | value |"
    echo "|---|---:|"
    echo "| tracker RSS after preload | ${rss[default.loaded]} MiB |"
    echo "| tracker RSS after the runs (peak) | ${rss[default.after]} MiB (${rss[default.peak]} MiB); 1 worker: ${rss[1.after]} MiB (${rss[1.peak]} MiB) |"
    [[ "$ot" == "-" ]] || echo "| opentracker RSS after its run | $ot_rss MiB |"
    echo "| live agents (metrics) | $metrics_agents |"
    echo "| restart to serving (SIGTERM → new process answers /healthz) | $restart_s s |"
    for workers in default 1; do
      read -r mixed_rps _ mixed_p99 _ <<<"${result[$workers.mixed]}"
      echo "| mixed requests/s ($workers workers) ÷ opentracker announces/s | $(bench_ratio "$mixed_rps" "$ot_rps") |"
    done
    echo
    for workers in default 1; do
      read -r mixed_rps _ mixed_p99 _ <<<"${result[$workers.mixed]}"
      echo "Targets ($workers workers): ≥ 15,000 mixed requests/s $(verdict bench_le 15000 "$mixed_rps");" \
        "p99 ≤ 5 ms $(verdict bench_le "$mixed_p99" 5) (opentracker's p99 in this run: ${ot_p99:-?} ms);" \
        "RSS ≤ 300 MiB $(verdict bench_le "${rss[$workers.peak]}" 300); restart ≤ 2 s $(verdict bench_le "$restart_s" 2)."
    done
  fi
  if [[ -z "${SKIP_REDIS:-}" ]]; then
    echo
    echo "Redis replicas: preload through replica 1 took $redis_preload_s s; RSS of a replica ${rss[redis.replica]} MiB, of redis-server ${rss[redis.server]} MiB."
  fi
} | tee "$REPORT"
bench_log "report written to $REPORT"
