#!/usr/bin/env bash
# shellcheck disable=SC2317  # cleanups and command builders are called indirectly
# bench/proxy.sh — N machines fetch the same URL at once with plain curl through their agents'
# HTTP proxies (`curl -x`, the agent started with --proxy-listen), against N plain curl
# downloads from the origin, next to the fluid lower bound of the network; and the time to the
# first byte through the proxy, for a file the swarm holds and for a cold one.
#
#   bench/proxy.sh N RATE SIZE        e.g. bench/proxy.sh 6 200mbit 256M
#
# The network is bench/swarm.sh's (bench/fleet.sh): host 0 (10.77.0.10) runs nginx serving
# SIZE of random data and `shoal tracker`; hosts 1..N run `shoal agent --proxy-listen
# 127.0.0.1:7702` (each namespace has its own loopback); every host is capped at RATE up and
# down with tc tbf. Namespaces are named shoal-proxy-<pid>-* and removed at exit.
#
# Phases, each from a fresh tracker database and fresh agent data directories:
#   1. proxy  — every host runs `curl -x http://127.0.0.1:7702 -o OUT URL` at the same moment:
#      the time until all N hold a copy (every copy's sha256 checked afterwards, not timed), and
#      the origin's egress (nginx's body bytes, and the bytes that left host 0's veth) ÷ F.
#   2. direct — N `curl -o OUT URL` from the origin at once.
#   3. ttfb   — curl's time_starttransfer through the proxy: a cold URL (nobody holds it: the
#      agent leads its swarm from the origin), the same URL on another host once the first
#      holds it (in the swarm), the same again on the first host (in its own cache), and
#      straight from the origin for reference. The URLs differ by a query string, so each is
#      a URL swarm of its own; nginx ignores it. Needs N ≥ 2 (the swarm row needs a second host).
# bound = max(F/u_origin, F/d_min, N·F/(u_origin + Σ u_agents)), all rates RATE: F/RATE.
#
# Knobs (environment):
#   SHOAL_BIN=path   the shoal binary (default target/release/shoal)
#   TIMEOUT=secs     per phase (default 3 × the direct downloads' ideal time + 30, 60..600)
#   AGENT_LOG=...    RUST_LOG of the agents (default shoal_agent=info)
#   AGENT_ARGS=...   extra `shoal agent` arguments, e.g. "--proxy-min-size 1M"
#   WORK=dir         source file and logs (default bench/out/proxy-work)
#
# Needs root (network namespaces, veths, a bridge, tc); refuses to run otherwise.
# Exit status: 0 when the benchmark ran, 1 when a copy was wrong or the harness could not run,
# 2 for a usage error.
set -Eeuo pipefail
trap 'printf "[bench] ERROR: bench/proxy.sh line %s: \"%s\" failed (exit %s)\n" "$LINENO" "$BASH_COMMAND" "$?" >&2' ERR

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
export PATH="$PATH:/usr/sbin:/sbin"

bad_usage() {
  echo "bench/proxy.sh: $*" >&2
  exit 2
}
case ${1:-} in -h | --help)
  sed -n '3,/^set -E/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
  exit 0
  ;;
esac
(($# == 3)) || bad_usage "usage: bench/proxy.sh N RATE SIZE   e.g. bench/proxy.sh 6 200mbit 256M (--help for more)"
N=$1
RATE=${2,,}
SIZE_ARG=$3
[[ "$N" =~ ^[1-9][0-9]*$ ]] && ((N >= 2 && N <= 100)) || bad_usage "N must be 2..100 agent hosts, not '$N'"
if [[ "$RATE" =~ ^([1-9][0-9]*)(kbit|mbit|gbit)$ ]]; then
  case ${BASH_REMATCH[2]} in
    kbit) RATE_BPS=$((BASH_REMATCH[1] * 1000)) ;;
    mbit) RATE_BPS=$((BASH_REMATCH[1] * 1000000)) ;;
    gbit) RATE_BPS=$((BASH_REMATCH[1] * 1000000000)) ;;
  esac
else
  bad_usage "RATE must be a whole number with kbit, mbit or gbit (tc's units), not '$2'"
fi
((RATE_BPS >= 1000000 && RATE_BPS <= 10000000000)) || bad_usage "RATE must be 1mbit..10gbit, not '$RATE'"
if [[ "$SIZE_ARG" =~ ^([1-9][0-9]*)(M|MiB)$ ]]; then
  SIZE_MIB=${BASH_REMATCH[1]}
elif [[ "$SIZE_ARG" =~ ^([1-9][0-9]*)(G|GiB)$ ]]; then
  SIZE_MIB=$((BASH_REMATCH[1] * 1024))
else
  bad_usage "SIZE must be a whole number of MiB or GiB, e.g. 256M, not '$SIZE_ARG'"
fi
((SIZE_MIB >= 8 && SIZE_MIB <= 16384)) || bad_usage "SIZE must be 8M..16G (at least twice the proxy's 4 MiB floor)"
SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))
AGENT_LOG=${AGENT_LOG:-shoal_agent=info}
PROXY_PORT=7702
read -r -a AGENT_USER_ARGS <<<"${AGENT_ARGS:-}"
AGENT_EXTRA=(--proxy-listen "127.0.0.1:$PROXY_PORT" ${AGENT_USER_ARGS[@]+"${AGENT_USER_ARGS[@]}"})

F_BITS=$((SIZE_BYTES * 8))
BOUND=$(awk -v f="$F_BITS" -v u="$RATE_BPS" -v n="$N" 'BEGIN {
  b = f / u; s = n * f / (u + n * u); m = b; if (s > m) m = s; printf "%.3f", m }')
DIRECT_IDEAL=$(awk -v f="$F_BITS" -v u="$RATE_BPS" -v n="$N" 'BEGIN { printf "%.3f", n * f / u }')
default_timeout=$(awk -v d="$DIRECT_IDEAL" 'BEGIN { t = int(3 * d + 30); if (t < 60) t = 60; if (t > 600) t = 600; print t }')
TIMEOUT=${TIMEOUT:-$default_timeout}
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] && ((TIMEOUT <= 3600)) || bad_usage "TIMEOUT must be 1..3600 seconds, not '$TIMEOUT'"

if [[ $(id -u) -ne 0 ]]; then
  bench_die "bench/proxy.sh must run as root: it creates network namespaces, veth pairs, a bridge and tc qdiscs"
fi
bench_init
# Agents and clients reach the origin directly, never through a proxy from the environment.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
unset RUST_LOG
bench_need nginx:nginx-light curl:curl ip:iproute2 tc:iproute2 jq:jq flock:util-linux \
  timeout:coreutils sha256sum:coreutils

SHOAL_BIN=${SHOAL_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/shoal}
[[ -x "$SHOAL_BIN" ]] || bench_die "no shoal binary at $SHOAL_BIN: cargo build --release -p shoal, or set SHOAL_BIN"
SHOAL_BIN=$(cd "$(dirname "$SHOAL_BIN")" && pwd)/$(basename "$SHOAL_BIN")
WORK=${WORK:-$BENCH_DIR/out/proxy-work}
mkdir -p "$WORK" "$BENCH_DIR/out"
WORK=$(cd "$WORK" && pwd)
STAMP=$(date -u '+%Y-%m-%d-%H%M%S')
RUN=$WORK/runs/$STAMP-$$
mkdir -p "$RUN/bin"
cp -f "$SHOAL_BIN" "$RUN/bin/shoal"
SHOAL=$RUN/bin/shoal
SHOAL_DESC="$("$SHOAL" --version 2>/dev/null | head -n 1 || true) ($SHOAL_BIN)"
TRACKER_LOG=${TRACKER_LOG:-}

bench_fleet_init proxy
bench_sweep_leftovers
bench_cleanup_add bench_net_teardown
bench_net_setup
mkdir -p "$WORK/files"
exec 9>"$WORK/files/.lock"
flock -w 600 9 || bench_die "waited 600 s for another run to make the source file"
bench_source_file "$WORK" "$SIZE_MIB"
exec 9>&-
OUT_BASE=$(mktemp -d "$WORK/shoal-proxy-dl.XXXXXX")
bench_cleanup_add "rm -rf $(printf %q "$OUT_BASE")"
bench_fleet_origin
bench_cleanup_add bench_stop_fleet
bench_cleanup_add bench_stop_clients
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

proxy_cmd() { CMD=(curl -q -sS --fail -x "http://127.0.0.1:$PROXY_PORT" -o "$2" "$URL"); }
direct_cmd() { CMD=(curl -q -sS --fail -o "$2" "$URL"); }
WRONG=0

# ----------------------------------------------------------------------------- 1. proxy
LOGR=$RUN/proxy
OUT_ROUND=$OUT_BASE/proxy
mkdir -p "$LOGR" "$OUT_ROUND"
bench_log "proxy: a tracker and $N agents with --proxy-listen; $N × curl -x at once"
bench_start_fleet "$LOGR" "$OUT_ROUND"
mark=$(wc -l <"$BODY_LOG")
bench_run_phase proxy "$LOGR" proxy_cmd
PX_SECS=$PH_SECS
bench_stop_fleet
bench_read_origin "$mark"
bench_verify
((PH_WRONG)) && WRONG=1
PX_OK=$PH_ALL_OK
PX_BODY=$ORIGIN_BODY PX_TX=$ORIGIN_TX PX_REQS=$ORIGIN_REQS
for ((i = 1; i <= N; i++)); do
  [[ "${PH_OK[i]}" == ok ]] || bench_warn "proxy: h$i: ${PH_OK[i]} ($(tail -n 1 "$LOGR/proxy-h$i.log" 2>/dev/null | cut -c1-200))"
done
bench_log "proxy: $PX_SECS s; origin sent $PX_BODY body bytes ($(bench_times_f "$PX_BODY") × F) in $PX_REQS requests, veth tx $(bench_times_f "$PX_TX") × F"
rm -rf "${OUT_ROUND:?}"

# ----------------------------------------------------------------------------- 2. direct
LOGR=$RUN/direct
OUT_ROUND=$OUT_BASE/direct
mkdir -p "$LOGR"
for ((i = 1; i <= N; i++)); do mkdir -p "$OUT_ROUND/h$i"; done
mark=$(wc -l <"$BODY_LOG")
bench_log "direct: $N × curl from the origin at once"
bench_run_phase direct "$LOGR" direct_cmd
DR_SECS=$PH_SECS
bench_read_origin "$mark"
bench_verify
((PH_WRONG)) && WRONG=1
DR_OK=$PH_ALL_OK
rm -rf "${OUT_ROUND:?}"

# ----------------------------------------------------------------------------- 3. ttfb
LOGR=$RUN/ttfb
OUT_ROUND=$OUT_BASE/ttfb
mkdir -p "$LOGR" "$OUT_ROUND"
bench_start_fleet "$LOGR" "$OUT_ROUND"
# ttfb HOST URL [curl args]: "time_starttransfer time_total" in seconds, or "FAIL".
ttfb() {
  local host=$1 url=$2
  shift 2
  bench_in_ns "$host" timeout "$TIMEOUT" curl -q -sS --fail "$@" -o /dev/null \
    -w '%{time_starttransfer} %{time_total}\n' "$url" 2>>"$LOGR/ttfb.log" || echo "FAIL FAIL"
}
via=(-x "http://127.0.0.1:$PROXY_PORT")
read -r TT_COLD TT_COLD_ALL <<<"$(ttfb 1 "$URL?ttfb" "${via[@]}")"
sleep 1
read -r TT_SWARM TT_SWARM_ALL <<<"$(ttfb 2 "$URL?ttfb" "${via[@]}")"
read -r TT_CACHE TT_CACHE_ALL <<<"$(ttfb 1 "$URL?ttfb" "${via[@]}")"
read -r TT_DIRECT TT_DIRECT_ALL <<<"$(ttfb 2 "$URL?direct")"
bench_stop_fleet
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ----------------------------------------------------------------------------- report
ms() { if [[ "$1" == FAIL ]]; then echo FAIL; else awk -v s="$1" 'BEGIN { printf "%.0f", s * 1000 }'; fi; }
report() {
  echo "## shoal proxy benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- command: \`bench/proxy.sh $N $RATE $SIZE_ARG\`, TIMEOUT=${TIMEOUT}s per phase"
  echo "- network: $((N + 1)) network namespaces on one bridge; host 0 runs nginx ($NGINX_VERSION) and \`shoal tracker\`, hosts 1..$N run \`shoal agent ${AGENT_EXTRA[*]}\`; every host capped at $RATE up and down (tc tbf)"
  echo "- file: $SIZE_MIB MiB of random data (F = $SIZE_BYTES bytes)"
  echo "- proxy: \`curl -q -sS --fail -x http://127.0.0.1:$PROXY_PORT -o OUT $URL\` on every host at once; direct: the same without -x"
  echo "- bound: max(F/RATE, N·F/((N+1)·RATE)) = $BOUND s"
  echo "- shoal: $SHOAL_DESC"
  echo "- machine: $(nproc) cores, Linux $(uname -r); load average $LOAD_START at start, $LOAD_END at end"
  echo "- logs: $RUN"
  echo
  echo "| N | rate | size | proxy s | bound s | proxy / bound | origin body bytes ÷ F | origin veth tx ÷ F | origin requests | direct s | direct / proxy |"
  echo "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  echo "| $N | $RATE | $SIZE_ARG | $PX_SECS$( ((PX_OK)) || echo " (NOT all verified)") | $BOUND | $(bench_ratio "$PX_SECS" "$BOUND") | $(bench_times_f "$PX_BODY") | $(bench_times_f "$PX_TX") | $PX_REQS | $DR_SECS$( ((DR_OK)) || echo " (NOT all verified)") | $(bench_ratio "$DR_SECS" "$PX_SECS") |"
  echo
  echo "Time to first byte (curl's time_starttransfer; total time in brackets), ms:"
  echo
  echo "| cold, through the proxy (leads the swarm) | in the swarm (another host holds it) | in this agent's cache | straight from the origin |"
  echo "|---:|---:|---:|---:|"
  echo "| $(ms "$TT_COLD") ($(ms "$TT_COLD_ALL")) | $(ms "$TT_SWARM") ($(ms "$TT_SWARM_ALL")) | $(ms "$TT_CACHE") ($(ms "$TT_CACHE_ALL")) | $(ms "$TT_DIRECT") ($(ms "$TT_DIRECT_ALL")) |"
  echo
  echo "n=$N"
  echo "proxy_s=$PX_SECS"
  echo "bound_s=$BOUND"
  echo "proxy_vs_bound=$(bench_ratio "$PX_SECS" "$BOUND")"
  echo "origin_body_x=$(bench_times_f "$PX_BODY")"
  echo "origin_tx_x=$(bench_times_f "$PX_TX")"
  echo "direct_s=$DR_SECS"
  echo "ttfb_cold_ms=$(ms "$TT_COLD")"
  echo "ttfb_swarm_ms=$(ms "$TT_SWARM")"
  echo "ttfb_cache_ms=$(ms "$TT_CACHE")"
  echo "ttfb_direct_ms=$(ms "$TT_DIRECT")"
}
REPORT=$BENCH_DIR/out/proxy-$STAMP.md
report | tee "$REPORT"
bench_log "report written to $REPORT; logs in $RUN"
if ((WRONG)); then
  bench_warn "a copy was WRONG (see above)"
  exit 1
fi
exit 0
