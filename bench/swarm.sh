#!/usr/bin/env bash
# shellcheck disable=SC2317  # cleanups and command builders are called indirectly
# bench/swarm.sh — N machines want the same file at once: shoal's fleet mode (agents fetching
# together through a tracker) against N plain downloads from the origin, next to the fluid lower
# bound of the network.
#
#   bench/swarm.sh [--check] N RATE SIZE        e.g. bench/swarm.sh 6 200mbit 128M
#
# Hosts are network namespaces on one bridge, which lives in a "switch" namespace of its own
# (nothing is added to the root namespace: no address, no route, no link). Host 0 (10.77.0.10)
# runs nginx, serving SIZE of random data, and `shoal tracker`; hosts 1..N (10.77.0.11…) each
# run `shoal agent`. Every host's upload and download are capped at RATE with tc tbf: on the
# host's veth end inside its namespace (what it sends) and on the bridge's end of its veth
# (what it receives). The namespaces are named shoal-swarm-<pid>-*, so two runs never collide;
# everything is removed at exit (also on failure and Ctrl-C), and leftovers of runs that were
# killed too hard to clean up are removed by the next run.
#
# Each round, from a fresh tracker database and fresh agent data directories:
#   1. swarm  — every host runs `shoal get --agent unix:DATA/control.sock URL` at the same moment
#      (a barrier file): the time until all N hold a copy (each exits 0; the sha256 of every
#      copy is checked afterwards, outside the time), and the origin's egress two ways:
#      nginx's count (the sum of $body_bytes_sent) and the bytes that left host 0's veth
#      (TCP/IP and HTTP headers, retransmissions and the tracker's answers included; headers
#      cost little, as the veth carries GSO packets of tens of KiB). nginx counts what it
#      handed to a socket: a request the agent cuts short (the engine gives a range to another
#      connection, or has it fetched twice at the end) counts up to a socket buffer that never
#      left the host, several MiB per run here, so nginx's count runs high.
#   2. direct — N `curl` downloads from the origin at once (skipped with --check or DIRECT=0).
#   3. bound  — max(F/u_origin, F/d_min, N·F/(u_origin + Σ u_agents)), F the file in bits and
#      every rate RATE; with equal rates that is F/RATE.
# It prints a Markdown table (medians over the rounds), per-round and per-host details, and
# key=value lines at the end; the report also goes to bench/out/swarm-<date>.md.
#
# --check (or CHECK=1): no direct baseline; exit 1 unless, in every round, every host's get
# exited 0 with a copy whose sha256 matches and the origin's egress was at most 1.1 × SIZE
# (CHECK_MAX), by the bytes that left host 0's veth (CHECK_EGRESS=wire; `body` for nginx's
# count). Timing never decides the check (a get that outlives TIMEOUT is killed and counts as
# failed).
#
# Knobs (environment):
#   SHOAL_BIN=path   the shoal binary (default target/release/shoal; with --check target/debug/shoal)
#   ROUNDS=1         rounds (1–20); medians over the rounds that succeeded
#   DIRECT=0         skip the direct curl phase (N·F/RATE of plain downloads) in a full run
#   TIMEOUT=secs     per phase (default 3 × the direct downloads' ideal time + 30, 60..600)
#   AGENT_LOG=...    RUST_LOG of the agents (default shoal_agent=info), e.g.
#                    AGENT_LOG=shoal_agent=debug,shoal_engine=debug to see every source
#   AGENT_ARGS=...   extra `shoal agent` arguments, e.g. "--per-peer 8"
#   TRACKER_LOG=...  RUST_LOG of the tracker (default: its own default), e.g. shoal_tracker=debug
#                    for a line per request
#   CHECK_EGRESS=wire  which egress --check judges: wire or body (see above)
#   CHECK_MAX=1.1    the most origin egress --check allows, in copies of the file
#   WORK=dir         source file and per-run logs (default bench/out/swarm-work; the logs of
#                    the last 5 runs are kept in WORK/runs/)
#   OUT_DIR=dir      where the agents' data and the copies go (default WORK), in a fresh mktemp -d
#                    inside it, removed at exit; OUT_DIR=/dev/shm takes the disk out
#
# Needs root (network namespaces, veths, a bridge, tc); refuses to run otherwise.
# Exit status: 0 when the benchmark ran (failed gets are in the report), 1 when a copy was wrong,
# the harness could not run, or (--check) the check failed; 2 for a usage error.
set -Eeuo pipefail
# A command that fails and stops the script says so (the cleanup trap itself is silent).
trap 'printf "[bench] ERROR: bench/swarm.sh line %s: \"%s\" failed (exit %s)\n" "$LINENO" "$BASH_COMMAND" "$?" >&2' ERR

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
export PATH="$PATH:/usr/sbin:/sbin"

usage() {
  sed -n '3,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

# ----------------------------------------------------------------------------- arguments
CHECK=${CHECK:-0}
[[ "$CHECK" == 0 || "$CHECK" == 1 ]] || {
  echo "bench/swarm.sh: CHECK must be 0 or 1" >&2
  exit 2
}
ARGS=()
for a in "$@"; do
  case $a in
    --check) CHECK=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    -*)
      echo "bench/swarm.sh: unknown option '$a' (see --help)" >&2
      exit 2
      ;;
    *) ARGS+=("$a") ;;
  esac
done
if ((${#ARGS[@]} != 3)); then
  echo "usage: bench/swarm.sh [--check] N RATE SIZE   e.g. bench/swarm.sh 6 200mbit 128M (--help for more)" >&2
  exit 2
fi
N=${ARGS[0]}
RATE=${ARGS[1],,}
SIZE_ARG=${ARGS[2]}
bad_usage() {
  echo "bench/swarm.sh: $*" >&2
  exit 2
}
if ! [[ "$N" =~ ^[1-9][0-9]*$ ]] || ((N > 100)); then
  bad_usage "N must be 1..100 agent hosts, not '$N'"
fi
# tc's units, 1 mbit = 10^6 bit; tc's "mbps" would be megabytes, so it is refused here.
if [[ "$RATE" =~ ^([1-9][0-9]*)(bit|kbit|mbit|gbit)$ ]]; then
  case ${BASH_REMATCH[2]} in
    bit) RATE_BPS=${BASH_REMATCH[1]} ;;
    kbit) RATE_BPS=$((BASH_REMATCH[1] * 1000)) ;;
    mbit) RATE_BPS=$((BASH_REMATCH[1] * 1000000)) ;;
    gbit) RATE_BPS=$((BASH_REMATCH[1] * 1000000000)) ;;
  esac
else
  bad_usage "RATE must be a whole number with bit, kbit, mbit or gbit (tc's units, 1 mbit = 10^6 bit/s), not '${ARGS[1]}'"
fi
((RATE_BPS >= 1000000 && RATE_BPS <= 10000000000)) || bad_usage "RATE must be 1mbit..10gbit, not '$RATE'"
if [[ "$SIZE_ARG" =~ ^([1-9][0-9]*)(M|MiB)$ ]]; then
  SIZE_MIB=${BASH_REMATCH[1]}
elif [[ "$SIZE_ARG" =~ ^([1-9][0-9]*)(G|GiB)$ ]]; then
  SIZE_MIB=$((BASH_REMATCH[1] * 1024))
else
  bad_usage "SIZE must be a whole number of MiB or GiB, e.g. 128M or 1G, not '$SIZE_ARG'"
fi
((SIZE_MIB <= 16384)) || bad_usage "SIZE must be at most 16G"
SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))
ROUNDS=${ROUNDS:-1}
if ! [[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || ((ROUNDS > 20)); then
  bad_usage "ROUNDS must be 1..20, not '$ROUNDS'"
fi
AGENT_LOG=${AGENT_LOG:-shoal_agent=info}
CHECK_EGRESS=${CHECK_EGRESS:-wire}
case $CHECK_EGRESS in wire | body) ;; *) bad_usage "CHECK_EGRESS must be wire or body, not '$CHECK_EGRESS'" ;; esac
CHECK_MAX=${CHECK_MAX:-1.1}
DIRECT=${DIRECT:-1}
[[ "$DIRECT" == 0 || "$DIRECT" == 1 ]] || bad_usage "DIRECT must be 0 or 1, not '$DIRECT'"
((CHECK)) && DIRECT=0
[[ "$CHECK_MAX" =~ ^[0-9]+(\.[0-9]+)?$ ]] || bad_usage "CHECK_MAX must be a number, e.g. 1.1, not '$CHECK_MAX'"
read -r -a AGENT_EXTRA <<<"${AGENT_ARGS:-}"

# The fluid bound and the direct downloads' ideal, in seconds (all rates RATE).
F_BITS=$((SIZE_BYTES * 8))
BOUND=$(awk -v f="$F_BITS" -v u="$RATE_BPS" -v n="$N" 'BEGIN {
  b = f / u; d = f / u; s = n * f / (u + n * u)
  m = b; if (d > m) m = d; if (s > m) m = s; printf "%.3f", m }')
DIRECT_IDEAL=$(awk -v f="$F_BITS" -v u="$RATE_BPS" -v n="$N" 'BEGIN { printf "%.3f", n * f / u }')
default_timeout=$(awk -v d="$DIRECT_IDEAL" 'BEGIN { t = int(3 * d + 30); if (t < 60) t = 60; if (t > 600) t = 600; print t }')
TIMEOUT=${TIMEOUT:-$default_timeout}
if ! [[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || ((TIMEOUT > 3600)); then
  bad_usage "TIMEOUT must be 1..3600 seconds, not '$TIMEOUT'"
fi

if [[ $(id -u) -ne 0 ]]; then
  bench_die "bench/swarm.sh must run as root: it creates network namespaces, veth pairs, a bridge and tc qdiscs (e.g. sudo bench/swarm.sh $*)"
fi
bench_init

# The agents and clients must reach the origin directly, never through a proxy from the
# environment (reqwest honours these).
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
# The agents log to files, not to a terminal.
unset RUST_LOG

bench_need nginx:nginx-light curl:curl ip:iproute2 tc:iproute2 jq:jq flock:util-linux \
  timeout:coreutils sha256sum:coreutils

# Every ip/tc command is bounded.
T=(timeout 15)

# ----------------------------------------------------------------------------- binary
if [[ -z "${SHOAL_BIN:-}" ]]; then
  if ((CHECK)); then
    SHOAL_BIN=${CARGO_TARGET_DIR:-$REPO/target}/debug/shoal
    hint="cargo build -p shoal (or cargo test), or set SHOAL_BIN"
  else
    SHOAL_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/shoal
    hint="cargo build --release -p shoal, or set SHOAL_BIN"
  fi
  [[ -x "$SHOAL_BIN" ]] || bench_die "no shoal binary at $SHOAL_BIN: $hint"
fi
[[ -x "$SHOAL_BIN" ]] || bench_die "SHOAL_BIN '$SHOAL_BIN' is not executable"
SHOAL_BIN=$(cd "$(dirname "$SHOAL_BIN")" && pwd)/$(basename "$SHOAL_BIN")

WORK=${WORK:-$BENCH_DIR/out/swarm-work}
mkdir -p "$WORK" "$BENCH_DIR/out"
WORK=$(cd "$WORK" && pwd)
STAMP=$(date -u '+%Y-%m-%d-%H%M%S')
RUN=$WORK/runs/$STAMP-$$
mkdir -p "$RUN/bin"
# Keep the logs of the last 5 runs (only directories of the form this script makes, and never
# one of a run still going).
# shellcheck disable=SC2012  # names are ours: digits and dashes
ls -1d "$WORK"/runs/[0-9]*-[0-9]* 2>/dev/null | sort | head -n -5 | while read -r old; do
  pid=${old##*-}
  [[ "$old" == "$RUN" ]] && continue
  kill -0 "$pid" 2>/dev/null && grep -qa swarm.sh "/proc/$pid/cmdline" 2>/dev/null && continue
  rm -rf -- "$old"
done
# A snapshot, so that a rebuild in the work tree during the benchmark cannot swap binaries.
cp -f "$SHOAL_BIN" "$RUN/bin/shoal"
SHOAL=$RUN/bin/shoal
SHOAL_DESC="$("$SHOAL" --version 2>/dev/null | head -n 1 || true) ($SHOAL_BIN, built $(date -u -r "$SHOAL_BIN" '+%Y-%m-%d %H:%M UTC'), sha256 $(sha256sum "$SHOAL" | cut -c1-12))"
bench_log "shoal: $SHOAL_DESC"

# ----------------------------------------------------------------------------- network
bench_fleet_init swarm
bench_sweep_leftovers
[[ -z "$OTHERS" ]] || bench_warn "another bench/swarm.sh is running (pid$OTHERS): both share this machine's 2 cores, so the timings of both are off"
bench_cleanup_add bench_net_teardown
bench_net_setup
bench_log "$((N + 1)) hosts ${PFX}h0..h$N ($(bench_ip_of 0)..$(bench_ip_of "$N")) on bridge br0 in $SW, each capped at $RATE up and down (tbf burst $BURST latency 50ms)"

# ----------------------------------------------------------------------------- files
mkdir -p "$WORK/files"
# Two runs at once must not both write the source file.
exec 9>"$WORK/files/.lock"
flock -w 600 9 || bench_die "waited 600 s for another run to make the source file"
bench_source_file "$WORK" "$SIZE_MIB"
exec 9>&-
mkdir -p "${OUT_DIR:-$WORK}"
# Only a directory of our own is ever emptied or removed, whatever OUT_DIR points at.
OUT_BASE=$(mktemp -d "$(cd "${OUT_DIR:-$WORK}" && pwd)/shoal-swarm-dl.XXXXXX")
bench_cleanup_add "rm -rf $(printf %q "$OUT_BASE")"
OUT_FS=$(df -PT "$OUT_BASE" | awk 'NR == 2 { print $2 }')
need_kib=$((N * SIZE_MIB * 1024 * 11 / 10 + 262144))
avail_kib=$(df -Pk "$OUT_BASE" | awk 'NR == 2 { print $4 }')
((avail_kib >= need_kib)) ||
  bench_die "not enough space in $OUT_BASE: need ~$((need_kib / 1024)) MiB for $N copies, have $((avail_kib / 1024)) MiB"

# ----------------------------------------------------------------------------- origin
bench_fleet_origin

# ----------------------------------------------------------------------------- fleet
bench_cleanup_add bench_stop_fleet
bench_cleanup_add bench_stop_clients

# ----------------------------------------------------------------------------- measuring

swarm_cmd() { CMD=("$SHOAL" get --agent "unix:$OUT_ROUND/h$1/data/control.sock" --progress json -o "$2" "$URL"); }
direct_cmd() { CMD=(curl -q -sS --fail -o "$2" "$URL"); }

# ----------------------------------------------------------------------------- rounds
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
WRONG_ANY=0
CHECK_FAILS=()
SW_TIMES=() SW_BODY=() SW_TX=() DIRECT_TIMES=() SW_RPS=() SW_AGENT_RSS=() SW_GET_RSS=()
DETAILS=""
ROUND_ROWS=""

for ((r = 1; r <= ROUNDS; r++)); do
  LOGR=$RUN/r$r
  OUT_ROUND=$OUT_BASE/r$r
  mkdir -p "$LOGR" "$OUT_ROUND"
  bench_log "round $r/$ROUNDS: starting a tracker and $N agents (fresh data)"
  bench_start_fleet "$LOGR" "$OUT_ROUND"
  mark=$(wc -l <"$BODY_LOG")
  bench_log "round $r/$ROUNDS: swarm — $N × shoal get --agent, at once"
  bench_run_phase swarm "$LOGR" swarm_cmd
  sw_secs=$PH_SECS
  sw_cpu_busy=$CPU_BUSY
  sw_h0_cpu=$H0_CPU
  sw_tracker_rps=$TRACKER_RPS
  declare -A sw_agent_cpu=() sw_agent_rss=() sw_get_rss=()
  for i in "${!AGENT_CPU[@]}"; do
    sw_agent_cpu[$i]=${AGENT_CPU[i]}
    sw_agent_rss[$i]=${AGENT_RSS[i]}
  done
  for ((i = 1; i <= N; i++)); do sw_get_rss[$i]=${PH_RSS[i]:--}; done
  # shellcheck disable=SC2046  # numbers, one a word
  sw_agent_rss_max=$(bench_max $(printf '%s\n' "${sw_agent_rss[@]}" | grep -v '^-$' || true))
  # shellcheck disable=SC2046
  sw_get_rss_max=$(bench_max $(printf '%s\n' "${sw_get_rss[@]}" | grep -v '^-$' || true))
  SW_RPS+=("$sw_tracker_rps")
  SW_AGENT_RSS+=("$sw_agent_rss_max")
  SW_GET_RSS+=("$sw_get_rss_max")
  # An agent whose client did not finish: keep a picture of what it was doing.
  for ((i = 1; i <= N; i++)); do
    [[ "${PH_RC[i]}" == 0 ]] || bench_dump_threads "${AGENT_PIDS[$i]:-}" "$LOGR/agent-h$i.threads.txt"
  done
  bench_stop_fleet
  bench_read_origin "$mark"
  bench_verify
  sw_ok_all=$PH_ALL_OK
  ((PH_WRONG)) && WRONG_ANY=1
  sw_body=$ORIGIN_BODY
  sw_tx=$ORIGIN_TX
  sw_agents_tx=$AGENTS_TX
  sw_retrans=$ORIGIN_RETRANS
  origin_util=$(awk -v b="$sw_tx" -v s="$sw_secs" -v r="$RATE_BPS" 'BEGIN { if (s + 0 == 0) print "-"; else printf "%.0f", 100 * b * 8 / s / r }')
  sw_read_origin=0
  # The leader: the host nginx sent the most to.
  leader=0 leader_bytes=0
  for ((i = 1; i <= N; i++)); do
    b=${ORIGIN_BY_IP[$(bench_ip_of "$i")]:-0}
    if ((b > leader_bytes)); then leader=$i leader_bytes=$b; fi
  done
  declare -A sw_end=() sw_skew=() sw_ok=() sw_src=() sw_from_nginx=() sw_tx_host=()
  for ((i = 1; i <= N; i++)); do
    sw_end[$i]=${PH_END[i]}
    sw_skew[$i]=${PH_SKEW[i]}
    sw_ok[$i]=${PH_OK[i]}
    sw_src[$i]=$(bench_swarm_sources "$LOGR/swarm-h$i.log" "$(bench_ip_of "$leader")")
    read -r s_o _ <<<"${sw_src[$i]}"
    [[ "$s_o" == "-" ]] || sw_read_origin=$((sw_read_origin + s_o))
    sw_from_nginx[$i]=${ORIGIN_BY_IP[$(bench_ip_of "$i")]:-0}
    sw_tx_host[$i]=$(bench_host_tx "$i")
    if [[ "${PH_OK[i]}" != ok ]]; then
      why=$(jq -r 'select(.event == "error") | .message' "$LOGR/swarm-h$i.log" 2>/dev/null | tail -n 1 | cut -c1-200 || true)
      [[ -n "$why" ]] || why=$(grep -v '^{' "$LOGR/swarm-h$i.log" 2>/dev/null | tail -n 1 | cut -c1-200 || true)
      bench_warn "round $r: h$i swarm: ${PH_OK[i]}${why:+ ($why)}"
      CHECK_FAILS+=("round $r: h$i: ${PH_OK[i]}${why:+ ($why)}")
    fi
  done
  case $CHECK_EGRESS in
    wire) eg=$sw_tx eg_what="bytes on host 0's veth" ;;
    body) eg=$sw_body eg_what="body bytes by nginx's count" ;;
  esac
  if ! awk -v b="$eg" -v f="$SIZE_BYTES" -v m="$CHECK_MAX" 'BEGIN { exit !(b <= m * f) }'; then
    CHECK_FAILS+=("round $r: the origin sent $eg $eg_what = $(bench_times_f "$eg") × SIZE (> $CHECK_MAX ×)")
  fi
  if ((sw_ok_all)); then
    SW_TIMES+=("$sw_secs")
    SW_BODY+=("$sw_body")
    SW_TX+=("$sw_tx")
  fi
  bench_log "round $r/$ROUNDS: swarm $sw_secs s ($( ((sw_ok_all)) && echo "all $N verified" || echo "NOT all verified")); origin sent $sw_body body bytes ($(bench_times_f "$sw_body") × F) in $ORIGIN_REQS requests; veth tx $sw_tx ($(bench_times_f "$sw_tx") × F); cpu busy $sw_cpu_busy %; tracker $sw_tracker_rps req/s; peak RSS: agents ≤ $sw_agent_rss_max MiB, gets ≤ $sw_get_rss_max MiB"
  rm -rf "${OUT_ROUND:?}"/h*/data "${OUT_ROUND:?}"/h*/swarm.bin

  dr_secs="-"
  declare -A dr_end=() dr_ok=()
  if ((DIRECT)); then
    mark=$(wc -l <"$BODY_LOG")
    bench_log "round $r/$ROUNDS: direct — $N × curl from the origin, at once"
    bench_run_phase direct "$LOGR" direct_cmd
    bench_read_origin "$mark"
    bench_verify
    ((PH_WRONG)) && WRONG_ANY=1
    for ((i = 1; i <= N; i++)); do
      dr_end[$i]=${PH_END[i]}
      dr_ok[$i]=${PH_OK[i]}
      [[ "${PH_OK[i]}" == ok ]] || bench_warn "round $r: h$i direct: ${PH_OK[i]} ($(tail -n 1 "$LOGR/direct-h$i.log" 2>/dev/null | cut -c1-200))"
    done
    if ((PH_ALL_OK)); then
      dr_secs=$PH_SECS
      DIRECT_TIMES+=("$dr_secs")
    else
      dr_secs="FAIL"
    fi
    bench_log "round $r/$ROUNDS: direct $PH_SECS s ($( ((PH_ALL_OK)) && echo "all $N verified" || echo "NOT all verified")); origin sent $ORIGIN_BODY body bytes"
    rm -rf "${OUT_ROUND:?}"/h*/direct.bin
  fi

  ROUND_ROWS+="| $r | $( ((sw_ok_all)) && echo "$sw_secs" || echo "FAIL ($sw_secs)") | $(bench_ratio "$sw_secs" "$BOUND") | $(bench_min "${sw_end[@]}") | h$leader, $(bench_mib "${sw_tx_host[$leader]:-0}") MiB = $(bench_times_f "${sw_tx_host[$leader]:-0}") × F | $sw_body | $(bench_times_f "$sw_body") | $sw_tx | $(bench_times_f "$sw_tx") | $(bench_times_f "$sw_read_origin") | $sw_retrans | $origin_util | $(bench_times_f "$sw_agents_tx") | $sw_cpu_busy | $sw_h0_cpu | $sw_tracker_rps | $sw_agent_rss_max | $sw_get_rss_max | $dr_secs |"$'\n'
  DETAILS+=$'\n'"Round $r, per host (swarm: seconds from the common start to the copy; the skew is when the client itself started; from origin = nginx's body bytes to that host; origin/peers (agent) = the sources the get reported, and the part of them from the leader (the host nginx sent the most to); upload = the host's veth tx; agent cpu = its user+system seconds during the swarm; agent RSS = its peak resident set since it started (VmHWM, read before it is stopped); get RSS = the peak resident set of its \`shoal get --agent\`):"$'\n\n'
  DETAILS+="| host | swarm s | skew ms | swarm copy | from origin MiB (nginx) | origin / peers MiB (agent) | of which from the leader | fetched MiB | upload MiB | agent cpu s | agent RSS MiB | get RSS MiB | direct s | direct copy |"$'\n'
  DETAILS+="|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"$'\n'
  for ((i = 1; i <= N; i++)); do
    read -r s_o s_p s_f s_l <<<"${sw_src[$i]}"
    ((i != leader)) || s_l="-"
    DETAILS+="| h$i$( ((i == leader)) && echo " (leader)") | ${sw_end[$i]} | ${sw_skew[$i]} | ${sw_ok[$i]} | $(bench_mib "${sw_from_nginx[$i]}") | $(bench_mib "$s_o") / $(bench_mib "$s_p") | $(bench_mib "$s_l") | $(bench_mib "$s_f") | $(bench_mib "${sw_tx_host[$i]}") | ${sw_agent_cpu[$i]:--} | ${sw_agent_rss[$i]:--} | ${sw_get_rss[$i]} | ${dr_end[$i]:--} | ${dr_ok[$i]:--} |"$'\n'
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
OTHERS_SEEN+=" $OTHERS $(bench_other_runs)"
# shellcheck disable=SC2086  # one pid per word
OTHERS_SEEN=$(printf '%s\n' $OTHERS_SEEN | sort -un | tr '\n' ' ')
OTHERS_NOTE=""
if [[ -n "${OTHERS_SEEN// /}" ]]; then
  OTHERS_NOTE="; ANOTHER bench/swarm.sh ran at the same time (pid ${OTHERS_SEEN% }), so the timings are off"
  bench_warn "another bench/swarm.sh ran at the same time (pid ${OTHERS_SEEN% }): the timings of both are off"
fi

# ----------------------------------------------------------------------------- report
SW_MED=$(bench_median ${SW_TIMES[@]+"${SW_TIMES[@]}"})
BODY_MED=$(bench_median ${SW_BODY[@]+"${SW_BODY[@]}"})
TX_MED=$(bench_median ${SW_TX[@]+"${SW_TX[@]}"})
DR_MED=$(bench_median ${DIRECT_TIMES[@]+"${DIRECT_TIMES[@]}"})
# shellcheck disable=SC2046  # numbers, one a word
RPS_MED=$(bench_median $(printf '%s\n' ${SW_RPS[@]+"${SW_RPS[@]}"} | grep -v '^-$' || true))
# shellcheck disable=SC2046
AGENT_RSS_MAX=$(bench_max $(printf '%s\n' ${SW_AGENT_RSS[@]+"${SW_AGENT_RSS[@]}"} | grep -v '^-$' || true))
# shellcheck disable=SC2046
GET_RSS_MAX=$(bench_max $(printf '%s\n' ${SW_GET_RSS[@]+"${SW_GET_RSS[@]}"} | grep -v '^-$' || true))
[[ "$BODY_MED" == "-" ]] || BODY_MED=$(printf '%.0f' "$BODY_MED")
[[ "$TX_MED" == "-" ]] || TX_MED=$(printf '%.0f' "$TX_MED")
VS_BOUND=$(bench_ratio "$SW_MED" "$BOUND")
SPEEDUP=$(bench_ratio "$DR_MED" "$SW_MED")
xf() { if [[ "$1" == "-" ]]; then echo "-"; else bench_times_f "$1"; fi; }
if ((CHECK)); then
  if ((${#CHECK_FAILS[@]} == 0)); then VERDICT=PASS; else VERDICT=FAIL; fi
fi

report() {
  echo "## shoal swarm benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')$( ((CHECK)) && echo " (--check)")"
  echo
  echo "- command: \`$( ((CHECK || DIRECT)) || echo "DIRECT=0 ")bench/swarm.sh$( ((CHECK)) && echo " --check") $N $RATE $SIZE_ARG\`, ROUNDS=$ROUNDS, TIMEOUT=${TIMEOUT}s per phase"
  echo "- network: $((N + 1)) network namespaces on one bridge; host 0 ($ORIGIN_IP) runs nginx ($NGINX_VERSION, sendfile on) and \`shoal tracker\`, hosts 1..$N run \`shoal agent\`; every host capped at $RATE up and down (tc tbf, burst $BURST bytes, latency 50ms, on both ends of its veth; 1 mbit = 10^6 bit/s)"
  echo "- file: $SIZE_MIB MiB of random data (F = $SIZE_BYTES bytes, sha256 ${SRC_SHA:0:16}…), page cache warmed first"
  echo "- swarm: \`shoal get --agent unix:DATA/control.sock --progress json -o OUT $URL\` on every host at the same moment, each agent started fresh as \`shoal agent --id hI --tracker $TRACKER_URL --token-file F --data DIR --listen 0.0.0.0:$AGENT_PORT --advertise 10.77.0.(10+I):$AGENT_PORT${AGENT_ARGS:+ $AGENT_ARGS}\` (RUST_LOG=$AGENT_LOG), a fresh tracker database each round"
  ((DIRECT)) && echo "- direct: \`curl -q -sS --fail -o OUT $URL\` on every host at the same moment (ideal N·F/RATE = $DIRECT_IDEAL s)"
  echo "- time: from the release of all clients to the last one's exit; every copy sha256-checked afterwards (not timed); copies and agent data in $OUT_BASE ($OUT_FS)"
  echo "- fluid bound: max(F/u_origin, F/d_min, N·F/(u_origin + Σ u_agents)) = $BOUND s (payload over a tbf-capped link is ~0.96 × the cap, so ~1.05 × the bound is about the best possible)"
  echo "- shoal: $SHOAL_DESC"
  echo "- machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r); load average $LOAD_START at start, $LOAD_END at end$OTHERS_NOTE"
  echo "- logs: $RUN"
  echo
  echo "| N | rate | size | swarm s | bound s | swarm / bound | origin egress: nginx body bytes | × F | origin veth tx bytes | × F | direct s | speedup (direct / swarm) |"
  echo "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  echo "| $N | $RATE | $SIZE_ARG | $SW_MED | $BOUND | $VS_BOUND | $BODY_MED | $(xf "$BODY_MED") | $TX_MED | $(xf "$TX_MED") | $( ((DIRECT)) && echo "$DR_MED" || echo "skipped") | $SPEEDUP |"
  echo
  echo "Egress: nginx body bytes count what nginx handed to its sockets, so a request the client cuts short counts up to a socket buffer (megabytes) more than ever left the host; origin veth tx is what did leave host 0 (headers, retransmissions and the tracker's answers included)."
  echo
  echo "Per round: first copy = when the first host (usually the leader) had its copy; leader = the host nginx sent the most to, and what it uploaded to the others; read from origin = the origin bytes the agents' downloads report; retrans = host 0's TCP segments sent again; origin link use = veth tx × 8 / swarm time / RATE; agents' upload = Σ veth tx of hosts 1..N; cpu busy = all $(nproc) cores during the swarm; h0 cpu = nginx + tracker seconds; tracker req/s = the requests its /metrics counted during the swarm (its /metrics reads left out) over the swarm time; agent / get RSS = the largest peak resident set of the agents / of the \`shoal get --agent\` clients."
  echo
  echo "| round | swarm s | / bound | first copy s | leader, its upload | origin body bytes | × F | origin veth tx | × F | read from origin × F | origin retrans % | origin link use % | agents' upload × F | cpu busy % | h0 cpu s | tracker req/s | agent RSS max MiB | get RSS max MiB | direct s |"
  echo "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s' "$ROUND_ROWS"
  printf '%s' "$DETAILS"
  echo
  if ((CHECK)); then
    if [[ $VERDICT == PASS ]]; then
      echo "- check PASS: every copy verified (sha256) in every round; origin egress ($CHECK_EGRESS) ≤ $CHECK_MAX × SIZE"
    else
      echo "- check FAIL:"
      printf '  - %s\n' "${CHECK_FAILS[@]}"
    fi
  elif ((${#CHECK_FAILS[@]})); then
    echo "- swarm problems:"
    printf '  - %s\n' "${CHECK_FAILS[@]}"
  fi
  echo
  echo "n=$N"
  echo "rate=$RATE"
  echo "rate_bps=$RATE_BPS"
  echo "size=$SIZE_ARG"
  echo "size_bytes=$SIZE_BYTES"
  echo "rounds=$ROUNDS"
  echo "swarm_s=$SW_MED"
  echo "bound_s=$BOUND"
  echo "swarm_vs_bound=$VS_BOUND"
  echo "origin_body_bytes=$BODY_MED"
  echo "origin_body_x=$(xf "$BODY_MED")"
  echo "origin_tx_bytes=$TX_MED"
  echo "origin_tx_x=$(xf "$TX_MED")"
  echo "direct_s=$( ((DIRECT)) && echo "$DR_MED" || echo skipped)"
  echo "tracker_rps=$RPS_MED"
  echo "agent_rss_max_mib=$AGENT_RSS_MAX"
  echo "get_rss_max_mib=$GET_RSS_MAX"
  echo "speedup=$SPEEDUP"
  ((CHECK)) && echo "check=$VERDICT"
  return 0
}

REPORT=$BENCH_DIR/out/swarm-$STAMP.md
report | tee "$REPORT"
bench_log "report written to $REPORT; logs in $RUN"
if ((WRONG_ANY)); then
  bench_warn "a copy was WRONG (see above)"
  exit 1
fi
if ((CHECK)) && [[ $VERDICT != PASS ]]; then
  exit 1
fi
exit 0
