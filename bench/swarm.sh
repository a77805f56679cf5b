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
#   2. direct — N `curl` downloads from the origin at once (skipped with --check).
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
PFX=shoal-swarm-$$-
SW=${PFX}sw
SUBNET=10.77.0
ORIGIN_IP=$SUBNET.10
ns_of() { echo "${PFX}h$1"; }
ip_of() { echo "$SUBNET.$((10 + $1))"; }
# Burst: at least 256 KiB (bench/mirrors.sh's), and 10 ms worth at higher rates so the bucket
# is never smaller than what a timer tick lets through.
BURST=$(awk -v r="$RATE_BPS" 'BEGIN { b = r / 8 / 100; if (b < 262144) b = 262144; printf "%d", b }')
TBF=(tbf rate "$RATE" burst "$BURST" latency 50ms)

# ns_kill_all NS: KILL every process in namespace NS (ours: this run's, or a dead run's).
ns_kill_all() {
  local pid
  for pid in $("${T[@]}" ip netns pids "$1" 2>/dev/null || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
}

# Deletes every namespace whose name starts with PREFIX; its processes are killed first (a
# namespace with processes in it outlives `ip netns del`). Deleting a namespace deletes its
# veth ends, and so the pairs.
ns_delete_prefix() {
  local prefix=$1 ns
  for ns in $("${T[@]}" ip netns list 2>/dev/null | awk '{ print $1 }'); do
    [[ "$ns" == "$prefix"* ]] || continue
    ns_kill_all "$ns"
    "${T[@]}" ip netns del "$ns" 2>/dev/null || true
  done
}

net_teardown() { ns_delete_prefix "$PFX"; }

# Leftovers of runs killed too hard to clean up: namespaces of a pid that is gone (or is us,
# before we made any). Another live run is left alone, and named.
OTHERS=""
OTHERS_SEEN=""
sweep_leftovers() {
  local ns pid seen=" "
  for ns in $("${T[@]}" ip netns list 2>/dev/null | awk '{ print $1 }'); do
    [[ "$ns" =~ ^shoal-swarm-([0-9]+)- ]] || continue
    pid=${BASH_REMATCH[1]}
    [[ "$seen" == *" $pid "* ]] && continue
    seen+="$pid "
    if [[ "$pid" != "$$" ]] && kill -0 "$pid" 2>/dev/null && grep -qa swarm.sh "/proc/$pid/cmdline" 2>/dev/null; then
      OTHERS+=" $pid"
    else
      bench_log "removing the namespaces of an earlier run (pid $pid) that is gone"
      ns_delete_prefix "shoal-swarm-$pid-"
    fi
  done
}

# other_runs: the pids of other live runs that have namespaces now, space-separated. Never fails.
other_runs() {
  local pid
  for pid in $("${T[@]}" ip netns list 2>/dev/null | sed -nE 's/^shoal-swarm-([0-9]+)-.*/\1/p' | sort -u || true); do
    if [[ "$pid" != "$$" ]] && kill -0 "$pid" 2>/dev/null; then
      printf '%s ' "$pid"
    fi
  done
  return 0
}

net_setup() {
  local i ns
  "${T[@]}" ip netns add "$SW"
  "${T[@]}" ip -n "$SW" link set lo up
  "${T[@]}" ip -n "$SW" link add br0 type bridge forward_delay 0 stp_state 0
  "${T[@]}" ip -n "$SW" link set br0 up
  for ((i = 0; i <= N; i++)); do
    ns=$(ns_of "$i")
    "${T[@]}" ip netns add "$ns"
    # h<i> on the bridge in the switch namespace, eth0 in the host's: created in place, so no
    # link ever appears in the root namespace.
    "${T[@]}" ip -n "$SW" link add "h$i" type veth peer name eth0 netns "$ns"
    "${T[@]}" ip -n "$SW" link set "h$i" master br0
    "${T[@]}" ip -n "$SW" link set "h$i" up
    "${T[@]}" ip -n "$ns" link set lo up
    "${T[@]}" ip -n "$ns" addr add "$(ip_of "$i")/24" dev eth0
    "${T[@]}" ip -n "$ns" link set eth0 up
    # Upload cap: what the host sends. Download cap: what the bridge sends to the host.
    "${T[@]}" ip netns exec "$ns" tc qdisc add dev eth0 root "${TBF[@]}"
    "${T[@]}" ip netns exec "$SW" tc qdisc add dev "h$i" root "${TBF[@]}"
  done
}

sweep_leftovers
[[ -z "$OTHERS" ]] || bench_warn "another bench/swarm.sh is running (pid$OTHERS): both share this machine's 2 cores, so the timings of both are off"
bench_cleanup_add net_teardown
net_setup
bench_log "$((N + 1)) hosts ${PFX}h0..h$N ($(ip_of 0)..$(ip_of "$N")) on bridge br0 in $SW, each capped at $RATE up and down (tbf burst $BURST latency 50ms)"

# in_ns I CMD...: run CMD in host I's namespace.
in_ns() {
  local i=$1
  shift
  ip netns exec "$(ns_of "$i")" "$@"
}

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
# The bench log of bench/lib.sh has $bytes_sent (headers included); the body log has what the
# file cost the origin: one line per request, client address and $body_bytes_sent.
BODY_LOG=$RUN/nginx/body.log
# shellcheck disable=SC2034  # read by bench_nginx_start (bench/lib.sh)
BENCH_NGINX_HTTP_EXTRA="  log_format swarm_body '\$msec \$remote_addr \$status \$body_bytes_sent rt=\$request_time \"\$http_range\" \"\$http_user_agent\"';
  access_log $BODY_LOG swarm_body;"
# shellcheck disable=SC2034
BENCH_NGINX_PREFIX=(ip netns exec "$(ns_of 0)")
mkdir -p "$RUN/nginx"
: >"$BODY_LOG"
bench_nginx_start origin "$RUN/nginx" "$ORIGIN_IP:80" "location /files/ { alias $SRC_DIR/; }" ||
  bench_die "nginx in $(ns_of 0) would not start (see $RUN/nginx/error.log)"
# shellcheck disable=SC2034
BENCH_NGINX_PREFIX=()
BENCH_NGINX_HTTP_EXTRA=""
NGINX_VERSION=$(nginx -v 2>&1 | sed 's/^nginx version: //')
URL=http://$ORIGIN_IP/files/$SRC_NAME
hdr=$(in_ns 1 timeout 10 curl -q -sS -r 0-0 -D - -o /dev/null "$URL") ||
  bench_die "host 1 cannot reach the origin at $URL across the bridge"
grep -qi "^content-range: bytes 0-0/$SIZE_BYTES" <<<"$hdr" ||
  bench_die "the origin did not answer a range request with 206 and length $SIZE_BYTES: $hdr"
bench_log "nginx ($NGINX_VERSION) in $(ns_of 0) serving $URL"

# ----------------------------------------------------------------------------- fleet
TRACKER_PORT=7700
TRACKER_URL=http://$ORIGIN_IP:$TRACKER_PORT
AGENT_PORT=7701
FLEET_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
READER_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
umask_old=$(umask)
umask 077
cat >"$RUN/tokens.toml" <<TOML
[[token]]
name = "fleet"
secret = "$FLEET_SECRET"
role = "agent"

[[token]]
name = "bench"
secret = "$READER_SECRET"
role = "reader"
TOML
printf '%s\n' "$FLEET_SECRET" >"$RUN/fleet.token"
umask "$umask_old"

TRACKER_PID=""
declare -A AGENT_PIDS=()
CLIENT_PIDS=()

# dump_threads PID FILE: what a process that did not finish is doing, for its log directory:
# every thread's state, wait channel and kernel stack, and (gdb installed) every thread's
# backtrace. Bounded; never fails.
dump_threads() {
  local pid=$1 out=$2 t
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
  {
    echo "# $(date -u '+%H:%M:%S') pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-300)"
    for t in /proc/"$pid"/task/*; do
      echo "## thread ${t##*/} $(cat "$t/comm" 2>/dev/null): state $(awk '{ print $3 }' "$t/stat" 2>/dev/null), wchan $(cat "$t/wchan" 2>/dev/null)"
      cat "$t/stack" 2>/dev/null
    done
    if command -v gdb >/dev/null 2>&1; then
      timeout 60 gdb -p "$pid" -batch -nx -ex 'set pagination off' -ex 'thread apply all bt' 2>&1
    fi
  } >"$out" 2>&1 || true
  bench_log "$(basename "$out"): the threads of pid $pid, which did not finish"
}

stop_fleet() {
  local i
  for i in "${!AGENT_PIDS[@]}"; do
    bench_stop_pid "${AGENT_PIDS[$i]}"
  done
  AGENT_PIDS=()
  bench_stop_pid "$TRACKER_PID"
  TRACKER_PID=""
}
stop_clients() {
  local pid
  for pid in "${CLIENT_PIDS[@]}"; do
    bench_stop_pid "$pid" 20
  done
  CLIENT_PIDS=()
}
bench_cleanup_add stop_fleet
bench_cleanup_add stop_clients

# tracker_get PATH: the tracker's answer to a reader's GET, from host 0.
tracker_get() {
  in_ns 0 curl -q -sS --fail --max-time 5 -H "Authorization: Bearer $READER_SECRET" "$TRACKER_URL$1"
}

# start_fleet DIR: a tracker with a fresh database in DIR/tracker, and N agents with fresh data
# directories in OUT/h<i>/data; returns once all N are registered at the tracker.
start_fleet() {
  local dir=$1 out=$2 i k n=0
  mkdir -p "$dir"
  # Started with `ip netns exec` itself (which execs), so $! is the tracker's own pid.
  ip netns exec "$(ns_of 0)" env ${TRACKER_LOG:+RUST_LOG="$TRACKER_LOG"} "$SHOAL" tracker --listen "$ORIGIN_IP:$TRACKER_PORT" --data "$dir/tracker" \
    --tokens "$RUN/tokens.toml" </dev/null >"$dir/tracker.log" 2>&1 &
  TRACKER_PID=$!
  for ((k = 0; k < 100; k++)); do
    kill -0 "$TRACKER_PID" 2>/dev/null || bench_die "shoal tracker exited at start: $(tail -n 3 "$dir/tracker.log")"
    in_ns 0 curl -q -s --fail --max-time 2 -o /dev/null "$TRACKER_URL/healthz" && break
    sleep 0.1
  done
  ((k < 100)) || bench_die "shoal tracker did not answer /healthz within 10 s (see $dir/tracker.log)"
  for ((i = 1; i <= N; i++)); do
    mkdir -p "$out/h$i"
    ip netns exec "$(ns_of "$i")" env RUST_LOG="$AGENT_LOG" "$SHOAL" agent --id "h$i" --tracker "$TRACKER_URL" \
      --token-file "$RUN/fleet.token" --data "$out/h$i/data" \
      --listen "0.0.0.0:$AGENT_PORT" --advertise "$(ip_of "$i"):$AGENT_PORT" \
      ${AGENT_EXTRA[@]+"${AGENT_EXTRA[@]}"} </dev/null >"$dir/agent-h$i.log" 2>&1 &
    AGENT_PIDS[$i]=$!
  done
  for ((i = 1; i <= N; i++)); do
    for ((k = 0; k < 100; k++)); do
      kill -0 "${AGENT_PIDS[$i]}" 2>/dev/null ||
        bench_die "shoal agent h$i exited at start: $(tail -n 3 "$dir/agent-h$i.log")"
      in_ns "$i" timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$AGENT_PORT" 2>/dev/null && break
      sleep 0.1
    done
    ((k < 100)) || bench_die "shoal agent h$i did not listen within 10 s (see $dir/agent-h$i.log)"
  done
  for ((k = 0; k < 150; k++)); do
    n=$(tracker_get /v1/agents 2>/dev/null | jq '.agents | length' 2>/dev/null || echo 0)
    ((n >= N)) && break
    sleep 0.2
  done
  ((n >= N)) || bench_die "only $n of $N agents registered at the tracker within 30 s (see $dir/)"
}

# ----------------------------------------------------------------------------- measuring
# A client: waits (≤ 60 s) until GO exists, then runs CMD with its output in LOG and writes
# "rc start_ns end_ns" to RESULT. Started under `timeout`, in its host's namespace.
# shellcheck disable=SC2016  # expanded by the inner bash
CLIENT_SCRIPT='
go=$1 ready=$2 result=$3 log=$4
shift 4
: >"$ready"
for ((i = 0; i < 12000; i++)); do
  [[ -e $go ]] && break
  sleep 0.005
done
[[ -e $go ]] || { echo "125 0 0" >"$result"; exit 125; }
t0=$(date +%s%N)
"$@" >"$log" 2>&1 </dev/null
rc=$?
t1=$(date +%s%N)
echo "$rc $t0 $t1" >"$result.tmp" && mv "$result.tmp" "$result"
exit "$rc"
'

# counters: "tx_bytes rx_bytes" of every host's eth0, one host per line, to stdout.
counters() {
  local i
  for ((i = 0; i <= N; i++)); do
    "${T[@]}" ip -n "$(ns_of "$i")" -s -j link show eth0 | jq -r '.[0].stats64 | "\(.tx.bytes) \(.rx.bytes)"'
  done
}

# origin_tcp: "OutSegs RetransSegs" of host 0's TCP (its namespace's /proc/net/snmp).
origin_tcp() {
  # shellcheck disable=SC2016  # awk's $, not the shell's
  "${T[@]}" ip netns exec "$(ns_of 0)" awk '/^Tcp:/ { if (!h) { for (f = 2; f <= NF; f++) c[$f] = f; h = 1 }
    else print $c["OutSegs"], $c["RetransSegs"] }' /proc/net/snmp
}

# cpu_ticks PID...: utime + stime of the processes, in clock ticks (gone ones count 0).
cpu_ticks() {
  local pid t=0 s
  for pid in "$@"; do
    s=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }') || s=0
    t=$((t + ${s:-0}))
  done
  echo "$t"
}
CLK_TCK=$(getconf CLK_TCK)
# /proc/stat: "busy total" jiffies of all cores (idle and iowait count as idle).
cpu_all() { awk '/^cpu / { t = 0; for (f = 2; f <= NF; f++) t += $f; print t - $5 - $6, t }' /proc/stat; }

# run_phase NAME DIR CMD_BUILDER: starts one client per host 1..N (CMD_BUILDER I OUT sets CMD),
# releases them at once and waits for all. Sets PH_SECS (GO to the last exit), PH_RC[i],
# PH_END[i] and PH_SKEW[i] (ms from GO to the client's own start), PH_OUT[i], and the counters.
run_phase() {
  local name=$1 dir=$2 builder=$3 i k t_go t_now rc res
  mkdir -p "$dir"
  local go=$dir/GO
  rm -f "$go" "$dir"/ready-* "$dir"/result-*
  CLIENT_PIDS=()
  PH_RC=() PH_END=() PH_SKEW=() PH_OUT=()
  for ((i = 1; i <= N; i++)); do
    PH_OUT[i]=$OUT_ROUND/h$i/$name.bin
    "$builder" "$i" "${PH_OUT[i]}"
    ip netns exec "$(ns_of "$i")" timeout -k 5 "$TIMEOUT" bash -c "$CLIENT_SCRIPT" client "$go" "$dir/ready-$i" \
      "$dir/result-$i" "$dir/$name-h$i.log" "${CMD[@]}" </dev/null >/dev/null 2>&1 &
    CLIENT_PIDS+=($!)
  done
  for ((k = 0; k < 300; k++)); do
    [[ $(find "$dir" -maxdepth 1 -name 'ready-*' | wc -l) -ge $N ]] && break
    sleep 0.1
  done
  ((k < 300)) || bench_die "the $name clients were not all ready within 30 s"
  OTHERS_SEEN+=" $(other_runs)"
  COUNTERS_BEFORE=$(counters)
  TCP_BEFORE=$(origin_tcp)
  CPU_BEFORE=$(cpu_all)
  # shellcheck disable=SC2046  # one pid per word
  H0_CPU_BEFORE=$(cpu_ticks $("${T[@]}" ip netns pids "$(ns_of 0)"))
  AGENT_CPU_BEFORE=()
  for i in "${!AGENT_PIDS[@]}"; do AGENT_CPU_BEFORE[i]=$(cpu_ticks "${AGENT_PIDS[$i]}"); done
  t_go=$(date +%s%N)
  : >"$go.tmp"
  mv "$go.tmp" "$go"
  for ((i = 1; i <= N; i++)); do
    rc=0
    wait "${CLIENT_PIDS[i - 1]}" || rc=$?
    t_now=$(date +%s%N)
    if [[ -s "$dir/result-$i" ]]; then
      read -r -a res <"$dir/result-$i"
      PH_RC[i]=${res[0]}
      PH_END[i]=$(awk -v a="$t_go" -v b="${res[2]}" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
      PH_SKEW[i]=$(awk -v a="$t_go" -v b="${res[1]}" 'BEGIN { printf "%.0f", (b - a) / 1e6 }')
    else
      # Killed by its timeout (124) or a signal before it could write its result.
      PH_RC[i]=$rc
      PH_END[i]=$(awk -v a="$t_go" -v b="$t_now" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
      PH_SKEW[i]="-"
    fi
  done
  CLIENT_PIDS=()
  PH_SECS=$(bench_max "${PH_END[@]}")
  OTHERS_SEEN+=" $(other_runs)"
  CPU_AFTER=$(cpu_all)
  # shellcheck disable=SC2046  # one pid per word
  H0_CPU_AFTER=$(cpu_ticks $("${T[@]}" ip netns pids "$(ns_of 0)"))
  AGENT_CPU=()
  for i in "${!AGENT_PIDS[@]}"; do
    AGENT_CPU[i]=$(awk -v a="${AGENT_CPU_BEFORE[i]}" -v b="$(cpu_ticks "${AGENT_PIDS[$i]}")" -v t="$CLK_TCK" \
      'BEGIN { printf "%.1f", (b - a) / t }')
  done
  CPU_BUSY=$(awk -v a="$CPU_BEFORE" -v b="$CPU_AFTER" 'BEGIN {
    split(a, x, " "); split(b, y, " "); t = y[2] - x[2]
    if (t <= 0) print "-"; else printf "%.0f", 100 * (y[1] - x[1]) / t }')
  H0_CPU=$(awk -v a="$H0_CPU_BEFORE" -v b="$H0_CPU_AFTER" -v t="$CLK_TCK" 'BEGIN { printf "%.1f", (b - a) / t }')
}

# After the phase (and after the agents are stopped, so every connection is closed and logged):
# COUNTERS_AFTER, and nginx's body bytes since the mark, in total and per client address.
read_origin() {
  local mark=$1
  sleep 0.5
  COUNTERS_AFTER=$(counters)
  # Share of host 0's TCP segments that were retransmissions (tbf drops what its queue of 50 ms
  # cannot hold).
  ORIGIN_RETRANS=$(awk -v a="$TCP_BEFORE" -v b="$(origin_tcp)" 'BEGIN {
    split(a, x, " "); split(b, y, " "); o = y[1] - x[1]
    if (o <= 0) print "-"; else printf "%.2f", 100 * (y[2] - x[2]) / o }')
  ORIGIN_BODY=$(tail -n "+$((mark + 1))" "$BODY_LOG" | awk '{ s += $4 } END { printf "%d", s }')
  ORIGIN_REQS=$(tail -n "+$((mark + 1))" "$BODY_LOG" | wc -l)
  declare -gA ORIGIN_BY_IP=()
  local ip bytes
  while read -r ip bytes; do
    [[ -n "$ip" ]] && ORIGIN_BY_IP[$ip]=$bytes
  done < <(tail -n "+$((mark + 1))" "$BODY_LOG" | awk '{ s[$2] += $4 } END { for (a in s) print a, s[a] }')
  ORIGIN_TX=$(paste <(sed -n 1p <<<"$COUNTERS_BEFORE") <(sed -n 1p <<<"$COUNTERS_AFTER") | awk '{ print $3 - $1 }')
  AGENTS_TX=$(paste <(sed -n '2,$p' <<<"$COUNTERS_BEFORE") <(sed -n '2,$p' <<<"$COUNTERS_AFTER") | awk '{ s += $3 - $1 } END { printf "%d", s }')
}
# host_tx I: bytes host I sent during the phase.
host_tx() {
  paste <(sed -n "$(($1 + 1))p" <<<"$COUNTERS_BEFORE") <(sed -n "$(($1 + 1))p" <<<"$COUNTERS_AFTER") | awk '{ print $3 - $1 }'
}

swarm_cmd() { CMD=("$SHOAL" get --agent "unix:$OUT_ROUND/h$1/data/control.sock" --progress json -o "$2" "$URL"); }
direct_cmd() { CMD=(curl -q -sS --fail -o "$2" "$URL"); }

# verify: sets PH_OK[i] to ok / why not, PH_ALL_OK (1/0) and PH_WRONG (1 if a copy exited 0
# but is wrong). Hashes two at a time.
verify() {
  local i sums
  PH_OK=()
  PH_ALL_OK=1
  PH_WRONG=0
  sums=$(for ((i = 1; i <= N; i++)); do
    [[ "${PH_RC[i]}" == 0 && -f "${PH_OUT[i]}" ]] && printf '%s\0' "${PH_OUT[i]}"
  done | xargs -0 -r -P 2 -n 1 sha256sum)
  for ((i = 1; i <= N; i++)); do
    if [[ "${PH_RC[i]}" != 0 ]]; then
      case ${PH_RC[i]} in
        124 | 137) PH_OK[i]="timed out after ${TIMEOUT}s" ;;
        *) PH_OK[i]="exit ${PH_RC[i]}" ;;
      esac
      PH_ALL_OK=0
    elif [[ ! -f "${PH_OUT[i]}" ]]; then
      PH_OK[i]="WRONG: exit 0 but no file"
      PH_ALL_OK=0
      PH_WRONG=1
    elif [[ "$(awk -v f="${PH_OUT[i]}" 'substr($0, 67) == f { print $1 }' <<<"$sums")" != "$SRC_SHA" ]]; then
      PH_OK[i]="WRONG: sha256 differs"
      PH_ALL_OK=0
      PH_WRONG=1
    else
      PH_OK[i]=ok
    fi
  done
}

# swarm_sources LOG LEADER_IP: "origin_bytes peer_bytes fetched leader_bytes" from a get's
# finished line ("- - - -" without one).
swarm_sources() {
  jq -r --arg o "http://$ORIGIN_IP" --arg l "http://$2:$AGENT_PORT/" 'select(.event == "finished") |
    ([.sources[] | select(.url | startswith($o + "/") or . == $o) | .bytes] | add // 0) as $from_origin |
    ([.sources[] | select(.url | startswith($l)) | .bytes] | add // 0) as $from_leader |
    ([.sources[] | .bytes] | add // 0) as $all |
    "\($from_origin) \($all - $from_origin) \(.fetched) \($from_leader)"' "$1" 2>/dev/null | tail -n 1 | grep . || echo "- - - -"
}
mib() {
  if [[ "$1" == "-" || -z "$1" ]]; then echo "-"; else awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; fi
}
times_f() { awk -v b="$1" -v f="$SIZE_BYTES" 'BEGIN { printf "%.3f", b / f }'; }

# ----------------------------------------------------------------------------- rounds
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
WRONG_ANY=0
CHECK_FAILS=()
SW_TIMES=() SW_BODY=() SW_TX=() DIRECT_TIMES=()
DETAILS=""
ROUND_ROWS=""

for ((r = 1; r <= ROUNDS; r++)); do
  LOGR=$RUN/r$r
  OUT_ROUND=$OUT_BASE/r$r
  mkdir -p "$LOGR" "$OUT_ROUND"
  bench_log "round $r/$ROUNDS: starting a tracker and $N agents (fresh data)"
  start_fleet "$LOGR" "$OUT_ROUND"
  mark=$(wc -l <"$BODY_LOG")
  bench_log "round $r/$ROUNDS: swarm — $N × shoal get --agent, at once"
  run_phase swarm "$LOGR" swarm_cmd
  sw_secs=$PH_SECS
  sw_cpu_busy=$CPU_BUSY
  sw_h0_cpu=$H0_CPU
  declare -A sw_agent_cpu=()
  for i in "${!AGENT_CPU[@]}"; do sw_agent_cpu[$i]=${AGENT_CPU[i]}; done
  # An agent whose client did not finish: keep a picture of what it was doing.
  for ((i = 1; i <= N; i++)); do
    [[ "${PH_RC[i]}" == 0 ]] || dump_threads "${AGENT_PIDS[$i]:-}" "$LOGR/agent-h$i.threads.txt"
  done
  stop_fleet
  read_origin "$mark"
  verify
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
    b=${ORIGIN_BY_IP[$(ip_of "$i")]:-0}
    if ((b > leader_bytes)); then leader=$i leader_bytes=$b; fi
  done
  declare -A sw_end=() sw_skew=() sw_ok=() sw_src=() sw_from_nginx=() sw_tx_host=()
  for ((i = 1; i <= N; i++)); do
    sw_end[$i]=${PH_END[i]}
    sw_skew[$i]=${PH_SKEW[i]}
    sw_ok[$i]=${PH_OK[i]}
    sw_src[$i]=$(swarm_sources "$LOGR/swarm-h$i.log" "$(ip_of "$leader")")
    read -r s_o _ <<<"${sw_src[$i]}"
    [[ "$s_o" == "-" ]] || sw_read_origin=$((sw_read_origin + s_o))
    sw_from_nginx[$i]=${ORIGIN_BY_IP[$(ip_of "$i")]:-0}
    sw_tx_host[$i]=$(host_tx "$i")
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
    CHECK_FAILS+=("round $r: the origin sent $eg $eg_what = $(times_f "$eg") × SIZE (> $CHECK_MAX ×)")
  fi
  if ((sw_ok_all)); then
    SW_TIMES+=("$sw_secs")
    SW_BODY+=("$sw_body")
    SW_TX+=("$sw_tx")
  fi
  bench_log "round $r/$ROUNDS: swarm $sw_secs s ($( ((sw_ok_all)) && echo "all $N verified" || echo "NOT all verified")); origin sent $sw_body body bytes ($(times_f "$sw_body") × F) in $ORIGIN_REQS requests; veth tx $sw_tx ($(times_f "$sw_tx") × F); cpu busy $sw_cpu_busy %"
  rm -rf "${OUT_ROUND:?}"/h*/data "${OUT_ROUND:?}"/h*/swarm.bin

  dr_secs="-"
  declare -A dr_end=() dr_ok=()
  if ((!CHECK)); then
    mark=$(wc -l <"$BODY_LOG")
    bench_log "round $r/$ROUNDS: direct — $N × curl from the origin, at once"
    run_phase direct "$LOGR" direct_cmd
    read_origin "$mark"
    verify
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

  ROUND_ROWS+="| $r | $( ((sw_ok_all)) && echo "$sw_secs" || echo "FAIL ($sw_secs)") | $(bench_ratio "$sw_secs" "$BOUND") | $(bench_min "${sw_end[@]}") | h$leader, $(mib "${sw_tx_host[$leader]:-0}") MiB = $(times_f "${sw_tx_host[$leader]:-0}") × F | $sw_body | $(times_f "$sw_body") | $sw_tx | $(times_f "$sw_tx") | $(times_f "$sw_read_origin") | $sw_retrans | $origin_util | $(times_f "$sw_agents_tx") | $sw_cpu_busy | $sw_h0_cpu | $dr_secs |"$'\n'
  DETAILS+=$'\n'"Round $r, per host (swarm: seconds from the common start to the copy; the skew is when the client itself started; from origin = nginx's body bytes to that host; origin/peers (agent) = the sources the get reported, and the part of them from the leader (the host nginx sent the most to); upload = the host's veth tx; agent cpu = its user+system seconds during the swarm):"$'\n\n'
  DETAILS+="| host | swarm s | skew ms | swarm copy | from origin MiB (nginx) | origin / peers MiB (agent) | of which from the leader | fetched MiB | upload MiB | agent cpu s | direct s | direct copy |"$'\n'
  DETAILS+="|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"$'\n'
  for ((i = 1; i <= N; i++)); do
    read -r s_o s_p s_f s_l <<<"${sw_src[$i]}"
    ((i != leader)) || s_l="-"
    DETAILS+="| h$i$( ((i == leader)) && echo " (leader)") | ${sw_end[$i]} | ${sw_skew[$i]} | ${sw_ok[$i]} | $(mib "${sw_from_nginx[$i]}") | $(mib "$s_o") / $(mib "$s_p") | $(mib "$s_l") | $(mib "$s_f") | $(mib "${sw_tx_host[$i]}") | ${sw_agent_cpu[$i]:--} | ${dr_end[$i]:--} | ${dr_ok[$i]:--} |"$'\n'
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
OTHERS_SEEN+=" $OTHERS $(other_runs)"
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
[[ "$BODY_MED" == "-" ]] || BODY_MED=$(printf '%.0f' "$BODY_MED")
[[ "$TX_MED" == "-" ]] || TX_MED=$(printf '%.0f' "$TX_MED")
VS_BOUND=$(bench_ratio "$SW_MED" "$BOUND")
SPEEDUP=$(bench_ratio "$DR_MED" "$SW_MED")
xf() { if [[ "$1" == "-" ]]; then echo "-"; else times_f "$1"; fi; }
if ((CHECK)); then
  if ((${#CHECK_FAILS[@]} == 0)); then VERDICT=PASS; else VERDICT=FAIL; fi
fi

report() {
  echo "## shoal swarm benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')$( ((CHECK)) && echo " (--check)")"
  echo
  echo "- command: \`bench/swarm.sh$( ((CHECK)) && echo " --check") $N $RATE $SIZE_ARG\`, ROUNDS=$ROUNDS, TIMEOUT=${TIMEOUT}s per phase"
  echo "- network: $((N + 1)) network namespaces on one bridge; host 0 ($ORIGIN_IP) runs nginx ($NGINX_VERSION, sendfile on) and \`shoal tracker\`, hosts 1..$N run \`shoal agent\`; every host capped at $RATE up and down (tc tbf, burst $BURST bytes, latency 50ms, on both ends of its veth; 1 mbit = 10^6 bit/s)"
  echo "- file: $SIZE_MIB MiB of random data (F = $SIZE_BYTES bytes, sha256 ${SRC_SHA:0:16}…), page cache warmed first"
  echo "- swarm: \`shoal get --agent unix:DATA/control.sock --progress json -o OUT $URL\` on every host at the same moment, each agent started fresh as \`shoal agent --id hI --tracker $TRACKER_URL --token-file F --data DIR --listen 0.0.0.0:$AGENT_PORT --advertise 10.77.0.(10+I):$AGENT_PORT${AGENT_ARGS:+ $AGENT_ARGS}\` (RUST_LOG=$AGENT_LOG), a fresh tracker database each round"
  ((CHECK)) || echo "- direct: \`curl -q -sS --fail -o OUT $URL\` on every host at the same moment (ideal N·F/RATE = $DIRECT_IDEAL s)"
  echo "- time: from the release of all clients to the last one's exit; every copy sha256-checked afterwards (not timed); copies and agent data in $OUT_BASE ($OUT_FS)"
  echo "- fluid bound: max(F/u_origin, F/d_min, N·F/(u_origin + Σ u_agents)) = $BOUND s (payload over a tbf-capped link is ~0.96 × the cap, so ~1.05 × the bound is about the best possible)"
  echo "- shoal: $SHOAL_DESC"
  echo "- machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r); load average $LOAD_START at start, $LOAD_END at end$OTHERS_NOTE"
  echo "- logs: $RUN"
  echo
  echo "| N | rate | size | swarm s | bound s | swarm / bound | origin egress: nginx body bytes | × F | origin veth tx bytes | × F | direct s | speedup (direct / swarm) |"
  echo "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  echo "| $N | $RATE | $SIZE_ARG | $SW_MED | $BOUND | $VS_BOUND | $BODY_MED | $(xf "$BODY_MED") | $TX_MED | $(xf "$TX_MED") | $( ((CHECK)) && echo "skipped" || echo "$DR_MED") | $SPEEDUP |"
  echo
  echo "Egress: nginx body bytes count what nginx handed to its sockets, so a request the client cuts short counts up to a socket buffer (megabytes) more than ever left the host; origin veth tx is what did leave host 0 (headers, retransmissions and the tracker's answers included)."
  echo
  echo "Per round: first copy = when the first host (usually the leader) had its copy; leader = the host nginx sent the most to, and what it uploaded to the others; read from origin = the origin bytes the agents' downloads report; retrans = host 0's TCP segments sent again; origin link use = veth tx × 8 / swarm time / RATE; agents' upload = Σ veth tx of hosts 1..N; cpu busy = all $(nproc) cores during the swarm; h0 cpu = nginx + tracker seconds."
  echo
  echo "| round | swarm s | / bound | first copy s | leader, its upload | origin body bytes | × F | origin veth tx | × F | read from origin × F | origin retrans % | origin link use % | agents' upload × F | cpu busy % | h0 cpu s | direct s |"
  echo "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
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
  echo "direct_s=$( ((CHECK)) && echo skipped || echo "$DR_MED")"
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
