#!/usr/bin/env bash
# shellcheck disable=SC2317  # cleanups and command builders are called indirectly
# bench/chaos.sh — a swarm that finishes whatever breaks (issue 14): each fault as its own
# scenario, from a fresh start, on the network of bench/swarm.sh.
#
#   bench/chaos.sh [--short] [--check] [SCENARIO...]
#
# N agents in network namespaces fetch the same file at once (`shoal get --agent`, as
# bench/swarm.sh), from nginx in host 0 through `shoal tracker`, every host capped at RATE up
# and down (tc tbf). In each scenario one fault strikes, timed by progress (the bytes that left
# the origin's host, never a fixed sleep from the start):
#   tracker-restart  the tracker is killed (-9) at 30 % and started again 3 s later, same --data
#   tracker-gone     the tracker is killed (-9) at 30 % for good
#   leader-30        the leader (the agent the origin sent the most to) is killed (-9) at 30 %
#   leader-70        the same at 70 %
#   origin-blip      the origin (nginx) is stopped at 50 % and started again 5 s later
#   origin-gone      the origin is stopped once the leader has half (50 %) for good: every get
#                    is expected to fail (exit 3) naming what is missing, after the agents'
#                    --max-wait; the pieces the swarm holds are everyone's by then
#   agent-restart    a downloading agent (not the leader) is killed (-9) at 50 % and started
#                    again at once on its --data; its get, cut off, is run again
#   slow-peer        at 5 %, one agent (not the leader) has its upload capped at RATE/10
#   liar             from the start, shoal-liar (the test kit's lying agent) in host N's namespace
#                    registers as holding every piece of the swarm and serves wrong bytes for
#                    all of them; the report says how many bad pieces the agents reported
# For each: time (from the common start to the last copy) against the fluid bound F/RATE,
# origin egress (bytes that left host 0's veth, and nginx's body bytes) in copies of the file,
# whether every copy verified (sha256), and the targets of issue 14 met or not: time ≤ 2 ×
# bound for a death or an outage, ≤ 1.35 × for a slow peer or a liar; egress ≤ 1.6 × F for a leader's
# death, ≤ 1.2 × F otherwise.
#
# Defaults: N=6 RATE=100mbit SIZE=128M, every scenario. --short: N=4, SIZE=32M, tracker-restart
# and leader-30 only. --check: exit 1 unless, in every scenario run, every copy verified (for
# origin-gone: every get failed with the error naming what is missing) and the origin egress
# target was met; time never decides it.
#
# Knobs (environment): N, RATE, SIZE, SHOAL_BIN (default target/release/shoal), LIAR_BIN
# (default shoal-liar beside SHOAL_BIN: cargo build --release -p shoal-testkit), MAX_WAIT (the
# agents' --max-wait, default 30s, so that a swarm that cannot finish ends), TIMEOUT (per get,
# default 4 × bound + 120 s), AGENT_LOG, AGENT_ARGS, TRACKER_LOG, WORK, OUT_DIR (as in
# bench/swarm.sh).
#
# Needs root (network namespaces, veths, a bridge, tc). Exit status: 0 when it ran (misses are
# in the report), 1 when a copy was wrong, the harness could not run, or (--check) the check
# failed; 2 for a usage error.
set -Eeuo pipefail
trap 'printf "[bench] ERROR: bench/chaos.sh line %s: \"%s\" failed (exit %s)\n" "$LINENO" "$BASH_COMMAND" "$?" >&2' ERR

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
export PATH="$PATH:/usr/sbin:/sbin"

ALL_SCENARIOS=(tracker-restart tracker-gone leader-30 leader-70 origin-blip origin-gone agent-restart slow-peer liar)
SHORT_SCENARIOS=(tracker-restart leader-30)

# ----------------------------------------------------------------------------- arguments
CHECK=0 SHORT=0
SCENARIOS=()
for a in "$@"; do
  case $a in
    --check) CHECK=1 ;;
    --short) SHORT=1 ;;
    -h | --help)
      sed -n '3,/^set -E/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    -*)
      echo "bench/chaos.sh: unknown option '$a' (see --help)" >&2
      exit 2
      ;;
    *)
      [[ " ${ALL_SCENARIOS[*]} " == *" $a "* ]] || {
        echo "bench/chaos.sh: unknown scenario '$a'; one of: ${ALL_SCENARIOS[*]}" >&2
        exit 2
      }
      SCENARIOS+=("$a")
      ;;
  esac
done
if ((SHORT)); then
  N=${N:-4} SIZE=${SIZE:-32M}
  ((${#SCENARIOS[@]})) || SCENARIOS=("${SHORT_SCENARIOS[@]}")
else
  N=${N:-6} SIZE=${SIZE:-128M}
  ((${#SCENARIOS[@]})) || SCENARIOS=("${ALL_SCENARIOS[@]}")
fi
RATE=${RATE:-100mbit}
RATE=${RATE,,}
bad_usage() {
  echo "bench/chaos.sh: $*" >&2
  exit 2
}
[[ "$N" =~ ^[1-9][0-9]*$ ]] && ((N >= 2 && N <= 50)) || bad_usage "N must be 2..50 agent hosts, not '$N'"
[[ "$RATE" =~ ^([1-9][0-9]*)mbit$ ]] || bad_usage "RATE must be a whole number of mbit, e.g. 100mbit, not '$RATE'"
RATE_BPS=$((BASH_REMATCH[1] * 1000000))
((RATE_BPS >= 10000000 && RATE_BPS <= 10000000000)) || bad_usage "RATE must be 10mbit..10000mbit"
SLOW_RATE="$((BASH_REMATCH[1] * 100))kbit"
[[ "$SIZE" =~ ^([1-9][0-9]*)M$ ]] && ((BASH_REMATCH[1] <= 4096)) || bad_usage "SIZE must be 1M..4096M, not '$SIZE'"
SIZE_MIB=${BASH_REMATCH[1]}
SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))
MAX_WAIT=${MAX_WAIT:-30s}
AGENT_LOG=${AGENT_LOG:-shoal_agent=info}
read -r -a AGENT_EXTRA <<<"${AGENT_ARGS:-}"
AGENT_EXTRA+=(--max-wait "$MAX_WAIT")
BOUND=$(awk -v f="$((SIZE_BYTES * 8))" -v u="$RATE_BPS" 'BEGIN { printf "%.3f", f / u }')
TIMEOUT=${TIMEOUT:-$(awk -v b="$BOUND" 'BEGIN { printf "%d", 4 * b + 120 }')}
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] && ((TIMEOUT <= 3600)) || bad_usage "TIMEOUT must be 1..3600 seconds"

[[ $(id -u) -eq 0 ]] || bench_die "bench/chaos.sh must run as root: it creates network namespaces, veth pairs, a bridge and tc qdiscs"
bench_init
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY RUST_LOG
bench_need nginx:nginx-light curl:curl ip:iproute2 tc:iproute2 jq:jq timeout:coreutils sha256sum:coreutils

# ----------------------------------------------------------------------------- binary
SHOAL_BIN=${SHOAL_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/shoal}
[[ -x "$SHOAL_BIN" ]] || bench_die "no shoal binary at $SHOAL_BIN: cargo build --release -p shoal, or set SHOAL_BIN"
WORK=${WORK:-$BENCH_DIR/out/chaos-work}
mkdir -p "$WORK/runs"
WORK=$(cd "$WORK" && pwd)
STAMP=$(date -u '+%Y-%m-%d-%H%M%S')
RUN=$WORK/runs/$STAMP-$$
mkdir -p "$RUN/bin"
cp -f "$SHOAL_BIN" "$RUN/bin/shoal"
SHOAL=$RUN/bin/shoal
LIAR_BIN=${LIAR_BIN:-$(dirname "$SHOAL_BIN")/shoal-liar}
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
SHOAL_DESC="$("$SHOAL" --version 2>/dev/null | head -n 1 || true), commit $COMMIT$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo " (with uncommitted changes)")"
bench_log "shoal: $SHOAL_DESC"

# ----------------------------------------------------------------------------- network, origin
bench_fleet_init chaos
bench_sweep_leftovers
bench_cleanup_add bench_net_teardown
bench_net_setup
bench_log "$((N + 1)) hosts on a bridge in $SW, each capped at $RATE up and down"
bench_source_file "$WORK" "$SIZE_MIB"
mkdir -p "${OUT_DIR:-$WORK}"
OUT_BASE=$(mktemp -d "$(cd "${OUT_DIR:-$WORK}" && pwd)/shoal-chaos-dl.XXXXXX")
bench_cleanup_add "rm -rf $(printf %q "$OUT_BASE")"
bench_fleet_origin
# A process that lives in host 0 for the whole run, whatever is killed there: its /proc shows
# host 0's counters.
ip netns exec "$(bench_ns_of 0)" sleep 86400 </dev/null >/dev/null 2>&1 &
ANCHOR_PID=$!
bench_cleanup_add 'bench_stop_pid "$ANCHOR_PID" 5'
bench_cleanup_add bench_stop_fleet
bench_cleanup_add bench_stop_clients

get_cmd() { CMD=("$SHOAL" get --agent "unix:$OUT_ROUND/h$1/data/control.sock" --progress json -o "$2" "$URL"); }

# origin_tx: bytes host 0 has sent, read from /proc of a process in its namespace with bash's
# own read (no fork), so a fault lands close to its mark.
origin_tx() {
  local name rx tx _
  while read -r name rx _ _ _ _ _ _ _ tx _; do
    [[ $name == eth0: ]] && { echo "$tx"; return 0; }
  done <"/proc/$ANCHOR_PID/net/dev"
  echo 0
}
# origin_sent: bytes that left host 0 since the phase began.
origin_sent() { echo $(($(origin_tx) - ORIGIN_TX0)); }

# wait_origin PERCENT: returns once the origin has sent PERCENT % of the file, or every client
# has ended (then 1). Bounded by TIMEOUT.
wait_origin() {
  local want=$((SIZE_BYTES / 100 * $1)) k pid alive
  for ((k = 0; k < TIMEOUT * 50; k++)); do
    (($(origin_sent) >= want)) && return 0
    alive=0
    for pid in "${CLIENT_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || return 1
    sleep 0.02
  done
  return 1
}

# leader: the host the origin sent the most to so far (nginx logs each request as it ends; the
# leader asks for a piece or two at a time), or the host with the most connections to it now.
leader() {
  local ip
  ip=$(tail -n "+$((MARK + 1))" "$BODY_LOG" | awk '{ s[$2] += $4 } END { for (a in s) print s[a], a }' | sort -rn | awk 'NR == 1 { print $2 }')
  [[ -n "$ip" ]] || ip=$(bench_in_ns 0 ss -Htn state established '( sport = :80 )' | awk '{ split($4, a, ":"); print a[1] }' | sort | uniq -c | sort -rn | awk 'NR == 1 { print $2 }')
  [[ -n "$ip" ]] || return 1
  echo $((${ip##*.} - 10))
}

# not_leader L: a host other than L.
not_leader() { if (($1 == N)); then echo 1; else echo "$N"; fi; }

# A get run again after its agent came back, in the background: its result replaces the
# first one's (seconds still from the common start).
RERUN_PID="" RERUN_HOST=""
rerun_get() {
  local i=$1
  RERUN_HOST=$i
  get_cmd "$i" "${PH_OUT[i]}"
  (
    ip netns exec "$(bench_ns_of "$i")" timeout -k 5 "$TIMEOUT" "${CMD[@]}" >"$PH_DIR/get-again-h$i.log" 2>&1 </dev/null
    echo "$? $(date +%s%N)" >"$PH_DIR/again-$i"
  ) &
  RERUN_PID=$!
}

# fault SCENARIO: strikes while the clients run; sets FAULT (what happened, when), and KILLED
# to the host whose agent is killed for good (its get cannot finish; the survivors' are judged).
fault() {
  local s=$1 l v
  FAULT="" KILLED=""
  case $s in
    tracker-restart | tracker-gone)
      wait_origin 30 || { FAULT="the swarm ended before 30 %"; return 0; }
      kill -KILL "$TRACKER_PID"
      wait "$TRACKER_PID" 2>/dev/null || true
      FAULT="tracker killed at $(bench_times_f "$(origin_sent)") × F"
      if [[ $s == tracker-restart ]]; then
        sleep 3
        bench_tracker_start "$PH_DIR"
        FAULT+=", restarted 3 s later"
      fi
      ;;
    leader-30 | leader-70)
      wait_origin "${s#leader-}" || { FAULT="the swarm ended before ${s#leader-} %"; return 0; }
      l=$(leader) || { FAULT="no leader found"; return 0; }
      kill -KILL "${AGENT_PIDS[$l]}"
      wait "${AGENT_PIDS[$l]}" 2>/dev/null || true
      KILLED=$l
      FAULT="leader h$l killed at $(bench_times_f "$(origin_sent)") × F"
      ;;
    origin-blip | origin-gone)
      wait_origin 50 || { FAULT="the swarm ended before 50 %"; return 0; }
      bench_fleet_origin_down
      FAULT="origin stopped at $(bench_times_f "$(origin_sent)") × F"
      if [[ $s == origin-blip ]]; then
        sleep 5
        bench_fleet_origin_up
        FAULT+=", started again 5 s later"
      fi
      ;;
    agent-restart)
      wait_origin 50 || { FAULT="the swarm ended before 50 %"; return 0; }
      l=$(leader) || { FAULT="no leader found"; return 0; }
      v=$(not_leader "$l")
      kill -KILL "${AGENT_PIDS[$v]}"
      wait "${AGENT_PIDS[$v]}" 2>/dev/null || true
      bench_agent_start "$v" "$PH_DIR" "$OUT_ROUND"
      rerun_get "$v"
      FAULT="h$v killed at $(bench_times_f "$(origin_sent)") × F and started again; its get run again"
      ;;
    liar)
      # The liar waits (bounded) until the tracker lists the swarm, then claims all of it.
      ip netns exec "$(bench_ns_of "$N")" "$RUN/bin/shoal-liar" --tracker "$TRACKER_URL" \
        --token-file "$RUN/fleet.token" --find-token-file "$RUN/reader.token" --id liar \
        --listen "$(bench_ip_of "$N"):$((AGENT_PORT + 1))" --name "${URL##*/}" \
        --wait "$TIMEOUT" --for "$TIMEOUT" </dev/null >"$PH_DIR/liar.log" 2>&1 &
      LIAR_PID=$!
      FAULT="shoal-liar in h$N's namespace, claiming every piece from the swarm's start"
      ;;
    slow-peer)
      wait_origin 5 || { FAULT="the swarm ended before 5 %"; return 0; }
      l=$(leader) || { FAULT="no leader found"; return 0; }
      v=$(not_leader "$l")
      "${T[@]}" ip netns exec "$(bench_ns_of "$v")" tc qdisc change dev eth0 root tbf rate "$SLOW_RATE" burst "$BURST" latency 50ms
      FAULT="h$v's upload capped at $SLOW_RATE at $(bench_times_f "$(origin_sent)") × F (leader h$l)"
      ;;
  esac
}

# ----------------------------------------------------------------------------- scenarios
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
ROWS=""
DETAILS=""
CHECK_FAILS=()
WRONG_ANY=0
LIAR_PID=""
bench_cleanup_add 'bench_stop_pid "$LIAR_PID" 5'
for s in "${SCENARIOS[@]}"; do
  if [[ $s == liar ]]; then
    if [[ ! -x "$LIAR_BIN" ]]; then
      bench_warn "liar: SKIPPED: no shoal-liar at $LIAR_BIN (cargo build --release -p shoal-testkit, or set LIAR_BIN)"
      ROWS+="| liar | SKIPPED: no shoal-liar binary | - | - | - | - | - | - | - |"$'\n'
      continue
    fi
    cp -f "$LIAR_BIN" "$RUN/bin/shoal-liar"
    (umask 077 && printf '%s\n' "$READER_SECRET" >"$RUN/reader.token")
  fi
  LOGS=$RUN/$s
  OUT_ROUND=$OUT_BASE/$s
  mkdir -p "$LOGS" "$OUT_ROUND"
  # Every host's upload back at RATE: the slow-peer scenario caps one, and the scenarios after
  # it would otherwise run with that host still slow.
  for ((i = 1; i <= N; i++)); do
    "${T[@]}" ip netns exec "$(bench_ns_of "$i")" tc qdisc change dev eth0 root "${TBF[@]}"
  done
  bench_log "$s: a fresh tracker and $N fresh agents"
  bench_start_fleet "$LOGS" "$OUT_ROUND"
  MARK=$(wc -l <"$BODY_LOG")
  bench_phase_start get "$LOGS" get_cmd
  ORIGIN_TX0=$(sed -n 1p <<<"$COUNTERS_BEFORE" | awk '{ print $1 }')
  fault "$s"
  bench_log "$s: $FAULT"
  bench_phase_wait
  if [[ -n "$LIAR_PID" ]]; then
    bench_stop_pid "$LIAR_PID" 5
    LIAR_PID=""
    reports=$(cat "$LOGS"/agent-h*.log | grep -c 'reported a peer that sent a bad piece' || true)
    FAULT+="; $reports bad pieces reported by the agents"
  fi
  if [[ -n "$RERUN_PID" ]]; then
    wait "$RERUN_PID" || true
    read -r rc t_end <"$PH_DIR/again-$RERUN_HOST" || { rc=125 t_end=$T_GO; }
    PH_RC[RERUN_HOST]=$rc
    PH_END[RERUN_HOST]=$(awk -v a="$T_GO" -v b="$t_end" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    PH_SECS=$(bench_max "${PH_END[@]}")
    RERUN_PID=""
  fi
  if [[ -n "$KILLED" ]]; then
    # The survivors' last copy ends the scenario.
    ends=()
    for ((i = 1; i <= N; i++)); do ((i == KILLED)) || ends+=("${PH_END[i]}"); done
    PH_SECS=$(bench_max "${ends[@]}")
  fi
  bench_stop_fleet
  bench_read_origin "$MARK"
  [[ -n "${BENCH_NGINX_PIDS[origin]:-}" ]] || bench_fleet_origin_up
  bench_verify
  ((PH_WRONG)) && WRONG_ANY=1
  egress=$(bench_times_f "$ORIGIN_TX")
  body=$(bench_times_f "$ORIGIN_BODY")
  ratio=$(bench_ratio "$PH_SECS" "$BOUND")
  case $s in
    leader-*) max_egress=1.6 max_time=2 ;;
    slow-peer | liar) max_egress=1.2 max_time=1.35 ;;
    *) max_egress=1.2 max_time=2 ;;
  esac
  if [[ $s == origin-gone ]]; then
    # The file cannot be completed: every get must fail with the error naming what is missing.
    expected=0
    for ((i = 1; i <= N; i++)); do
      [[ "${PH_RC[i]}" == 3 ]] && grep -q 'still missing' "$LOGS/get-h$i.log" && expected=$((expected + 1))
    done
    copies="$expected of $N failed as expected (exit 3, naming what is missing)"
    ok_copies=$((expected == N))
    time_met="n/a"
  else
    ok_count=0 judged=0
    for ((i = 1; i <= N; i++)); do
      [[ "$i" == "$KILLED" ]] && continue
      judged=$((judged + 1))
      [[ "${PH_OK[i]}" == ok ]] && ok_count=$((ok_count + 1))
    done
    copies="$ok_count of $judged verified$([[ -z "$KILLED" ]] || echo " (the survivors; h$KILLED was killed)")"
    ok_copies=$((ok_count == judged))
    if ((ok_copies)) && bench_le "$ratio" "$max_time"; then time_met="met"; else time_met="NOT met"; fi
  fi
  if bench_le "$egress" "$max_egress"; then egress_met="met"; else egress_met="NOT met"; fi
  ((ok_copies)) || CHECK_FAILS+=("$s: $copies")
  [[ $egress_met == met ]] || CHECK_FAILS+=("$s: origin egress $egress × F > $max_egress")
  bench_log "$s: $PH_SECS s = $ratio × bound; origin egress $egress × F (nginx body $body × F); $copies"
  ROWS+="| $s | $FAULT | $copies | $PH_SECS | $ratio | ≤ $max_time: $time_met | $egress (nginx body $body) | ≤ $max_egress: $egress_met | ${CPU_BUSY} |"$'\n'
  DETAILS+=$'\n'"$s, per host (seconds from the common start; exit code; copy; the get's last error line):"$'\n\n'"| host | s | exit | copy | error |"$'\n'"|---|---:|---:|---|---|"$'\n'
  for ((i = 1; i <= N; i++)); do
    log=$LOGS/get-h$i.log
    [[ "$i" == "$RERUN_HOST" && $s == agent-restart ]] && log=$LOGS/get-again-h$i.log
    why=$(jq -r 'select(.event == "error") | .message' "$log" 2>/dev/null | tail -n 1 | cut -c1-240 | tr '|' '/' || true)
    DETAILS+="| h$i$([[ "$i" != "$KILLED" ]] || echo " (killed)") | ${PH_END[i]} | ${PH_RC[i]} | ${PH_OK[i]} | ${why:--} |"$'\n'
  done
  RERUN_HOST=""
  rm -rf "${OUT_ROUND:?}"
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ----------------------------------------------------------------------------- report
if ((${#CHECK_FAILS[@]} == 0)); then VERDICT=PASS; else VERDICT=FAIL; fi
report() {
  echo "## shoal chaos benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')$( ((SHORT)) && echo " (--short)")"
  echo
  echo "- command: \`bench/chaos.sh$( ((SHORT)) && echo " --short")$( ((CHECK)) && echo " --check") ${SCENARIOS[*]}\`; N=$N agents, $RATE up and down each, file $SIZE_MIB MiB (F = $SIZE_BYTES bytes); agents run with --max-wait $MAX_WAIT${AGENT_ARGS:+ $AGENT_ARGS}; TIMEOUT ${TIMEOUT}s per get"
  echo "- shoal: $SHOAL_DESC"
  echo "- each scenario from a fresh tracker database and fresh agent data; faults timed by the bytes that left the origin's host; time from the common start to the last copy; bound F/RATE = $BOUND s; egress = bytes that left host 0's veth (the tracker's answers included) and, in brackets, nginx's body bytes"
  echo "- machine: $(nproc) cores, load average $LOAD_START at start, $LOAD_END at end (other engineers' builds share it: timings are noisy)"
  echo "- logs: $RUN"
  echo
  echo "| scenario | fault | copies | time s | / bound | time target | origin egress × F | egress target | cpu busy % |"
  echo "|---|---|---|---:|---:|---|---|---|---:|"
  printf '%s' "$ROWS"
  printf '%s' "$DETAILS"
  echo
  if ((${#CHECK_FAILS[@]})); then
    echo "- misses:"
    printf '  - %s\n' "${CHECK_FAILS[@]}"
  fi
  echo "check=$VERDICT"
}
REPORT=$BENCH_DIR/out/chaos-$STAMP.md
mkdir -p "$BENCH_DIR/out"
report | tee "$REPORT"
bench_log "report written to $REPORT; logs in $RUN"
((WRONG_ANY)) && {
  bench_warn "a copy was WRONG (see above)"
  exit 1
}
((CHECK)) && [[ $VERDICT != PASS ]] && exit 1
exit 0
