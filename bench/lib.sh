# shellcheck shell=bash
# bench/lib.sh — shared helpers for shoal's benchmark scripts. Source it, don't run it:
#
#   BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
#   . "$BENCH_DIR/lib.sh"
#   bench_init                      # traps: cleanup runs on exit, error, Ctrl-C, TERM
#
# What it offers (all names start with bench_ / BENCH_):
#   bench_log / bench_warn / bench_die          messages to stderr
#   bench_need CMD:PKG...                      install missing Debian packages (root) or explain
#   bench_cleanup_add 'shell words'            run at exit, last added first
#   bench_free_port                            a TCP port nobody listens on at 127.0.0.1
#   bench_nginx_start NAME DIR LISTEN BODY     nginx with a generated config, logs/pid in DIR
#   bench_nginx_stop NAME / bench_nginx_stop_all
#   bench_stop_pid PID [TENTHS]                TERM, bounded wait, then KILL one process we started
#   bench_measure TIMEOUT LOG CMD...           wall time + peak RSS of one command, bounded
#   bench_median / bench_min / bench_max N...  over decimal numbers, 3 decimals
#   bench_ratio A B                            A / B with 2 decimals, "-" if either is missing
#   bench_fleet_init and the rest (bench/fleet.sh)  hosts in network namespaces, nginx, tracker,
#                                              agents, phases of clients, counters (see there)
#
# Every wait in here is bounded. Nothing in here talks to anything but 127.0.0.1 (or whatever
# LISTEN address a caller gives nginx, e.g. inside its own network namespace).

if [[ -n "${BENCH_LIB_LOADED:-}" ]]; then
  return 0
fi
BENCH_LIB_LOADED=1

# ---------------------------------------------------------------------------------------------
# Messages

bench_log() { printf '[bench] %s\n' "$*" >&2; }
bench_warn() { printf '[bench] WARNING: %s\n' "$*" >&2; }
bench_die() {
  printf '[bench] ERROR: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------
# Cleanup and signals

BENCH_CLEANUPS=()
BENCH_CHILD=""   # pid of the command bench_measure is waiting for, killed on interrupt

# bench_cleanup_add WORDS: eval WORDS at exit (last added runs first). Quote carefully.
bench_cleanup_add() { BENCH_CLEANUPS+=("$1"); }

bench__run_cleanups() {
  local rc=$? i
  trap - EXIT INT TERM HUP
  set +e
  if [[ -n "$BENCH_CHILD" ]] && kill -0 "$BENCH_CHILD" 2>/dev/null; then
    kill -TERM "$BENCH_CHILD" 2>/dev/null
    bench__wait_gone "$BENCH_CHILD" 50
  fi
  for ((i = ${#BENCH_CLEANUPS[@]} - 1; i >= 0; i--)); do
    eval "${BENCH_CLEANUPS[i]}"
  done
  exit "$rc"
}

# bench_init: install the traps. Call once, right after sourcing.
bench_init() {
  trap bench__run_cleanups EXIT
  trap 'bench_warn "interrupted"; exit 130' INT
  trap 'bench_warn "terminated"; exit 143' TERM
  trap 'exit 129' HUP
}

# bench__wait_gone PID TENTHS: wait up to TENTHS × 0.1 s for PID to exit; 0 if it did.
bench__wait_gone() {
  local pid=$1 n=$2 i
  for ((i = 0; i < n; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  ! kill -0 "$pid" 2>/dev/null
}

# ---------------------------------------------------------------------------------------------
# Packages

# bench_need CMD:PKG ...: makes sure every CMD is on PATH. When root, installs the Debian
# packages of the missing ones (apt-get update -qq once first); otherwise lists them and dies.
# CMD may be a path (e.g. /usr/bin/time:time).
bench_need() {
  local spec cmd pkg missing_pkgs=() missing_cmds=()
  for spec in "$@"; do
    cmd=${spec%%:*}
    pkg=${spec#*:}
    if ! command -v "$cmd" >/dev/null 2>&1; then
      missing_cmds+=("$cmd")
      [[ " ${missing_pkgs[*]} " == *" $pkg "* ]] || missing_pkgs+=("$pkg")
    fi
  done
  ((${#missing_pkgs[@]} == 0)) && return 0
  if [[ $(id -u) -ne 0 ]]; then
    bench_die "missing: ${missing_cmds[*]}. Install them, e.g.: sudo apt-get install -y ${missing_pkgs[*]}"
  fi
  command -v apt-get >/dev/null 2>&1 ||
    bench_die "missing: ${missing_cmds[*]} (Debian packages: ${missing_pkgs[*]}), and no apt-get here"
  bench_log "installing ${missing_pkgs[*]} (apt-get)"
  if [[ -z "${BENCH_APT_UPDATED:-}" ]]; then
    timeout 600 apt-get update -qq || bench_die "apt-get update failed"
    BENCH_APT_UPDATED=1
  fi
  # policy-rc.d-less containers would otherwise try to start a system nginx on port 80.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 timeout 900 \
    apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null ||
    bench_die "apt-get install ${missing_pkgs[*]} failed"
  for cmd in "${missing_cmds[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || bench_die "$cmd still missing after installing ${missing_pkgs[*]}"
  done
}

# ---------------------------------------------------------------------------------------------
# Ports

# bench__port_listening PORT: 0 if something accepts TCP on 127.0.0.1:PORT.
bench__port_listening() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# bench_free_port: prints a port in 20000–59999 that nobody listens on at 127.0.0.1.
# (A race with another process is possible; bench_nginx_start retries on a bind failure.)
bench_free_port() {
  local i p
  for ((i = 0; i < 50; i++)); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    if ! bench__port_listening "$p"; then
      echo "$p"
      return 0
    fi
  done
  bench_die "no free port found in 50 tries"
}

# ---------------------------------------------------------------------------------------------
# nginx

declare -gA BENCH_NGINX_PIDS=()

# bench_nginx_start NAME DIR LISTEN SERVER_BODY
#   Writes DIR/nginx.conf (worker_processes auto, sendfile on, logs and pid in DIR, `user root`
#   when root), runs `nginx -p DIR -c DIR/nginx.conf` with `daemon off` in the background and
#   waits (bounded) until it has bound LISTEN — nginx writes its pid file only after opening its
#   listening sockets. SERVER_BODY goes verbatim inside `server { listen LISTEN; ... }`, e.g.
#   'location /fast/ { alias /srv/files/; }'. Returns 1 if nginx exited (e.g. port taken), so
#   a caller can retry on another port; dies on a timeout.
#   BENCH_NGINX_PREFIX (array, optional) is put before the nginx command, e.g.
#   (ip netns exec mirror1) for bench/mirrors.sh.
#   BENCH_NGINX_HTTP_EXTRA (string, optional, empty by default) goes verbatim into the `http`
#   block, before `server`: e.g. a second log_format and access_log (bench/swarm.sh logs
#   $body_bytes_sent there). Unset, the generated config is what it always was.
#   Stopped by bench_nginx_stop NAME, or at exit by the cleanup trap.
bench_nginx_start() {
  local name=$1 dir=$2 listen=$3 body=$4 user_line="" pid i
  local nginx_bin
  nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
  [[ -x "$nginx_bin" ]] || bench_die "nginx not found"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [[ $(id -u) -eq 0 ]] && user_line="user root;"
  rm -f "$dir/nginx.pid"
  : >"$dir/access.log" # one run's requests per log
  cat >"$dir/nginx.conf" <<EOF
# generated by bench/lib.sh for "$name"
$user_line
daemon off;
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
  # end time, client port, connection id and its request count, range asked, status, bytes
  # sent, seconds taken, user agent: enough to see how a tool spread its requests.
  log_format bench '\$msec \$remote_addr:\$remote_port c=\$connection n=\$connection_requests '
                   '"\$request" range="\$http_range" \$status \$bytes_sent rt=\$request_time '
                   '"\$http_user_agent"';
  access_log $dir/access.log bench;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65;
  default_type application/octet-stream;
  client_body_temp_path $dir/tmp_client;
  proxy_temp_path $dir/tmp_proxy;
${BENCH_NGINX_HTTP_EXTRA:-}
  server {
    listen $listen;
    server_name localhost;
    $body
  }
}
EOF
  ${BENCH_NGINX_PREFIX[@]+"${BENCH_NGINX_PREFIX[@]}"} "$nginx_bin" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" \
    >>"$dir/nginx.out" 2>&1 &
  pid=$!
  BENCH_NGINX_PIDS[$name]=$pid
  if ((${#BENCH_NGINX_PIDS[@]} == 1)); then
    bench_cleanup_add bench_nginx_stop_all
  fi
  for ((i = 0; i < 100; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      unset "BENCH_NGINX_PIDS[$name]"
      wait "$pid" 2>/dev/null || true
      bench_warn "nginx '$name' exited at start on $listen: $(tail -n 3 "$dir/error.log" "$dir/nginx.out" 2>/dev/null | tr '\n' ' ')"
      return 1
    fi
    [[ -s "$dir/nginx.pid" ]] && return 0
    sleep 0.1
  done
  bench_nginx_stop "$name"
  bench_die "nginx '$name' did not come up on $listen within 10 s (see $dir/error.log)"
}

# bench_nginx_stop NAME: graceful stop (TERM), bounded wait, then KILL.
bench_nginx_stop() {
  local name=$1 pid
  pid=${BENCH_NGINX_PIDS[$name]:-}
  [[ -n "$pid" ]] || return 0
  unset "BENCH_NGINX_PIDS[$name]"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! bench__wait_gone "$pid" 50; then
      bench_warn "nginx '$name' ignored TERM, killing"
      kill -KILL "$pid" 2>/dev/null || true
      # workers of a killed master: same process group is not guaranteed, find by parent
      pkill -KILL -P "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

bench_nginx_stop_all() {
  local name
  for name in "${!BENCH_NGINX_PIDS[@]}"; do
    bench_nginx_stop "$name"
  done
}

# bench_stop_pid PID [TENTHS]: stops one process this script started, by its id: TERM, then up
# to TENTHS × 0.1 s (default 50) for it to go, then KILL. Reaps it if it is our child. Never
# fails; a PID that is already gone (or empty) is fine.
bench_stop_pid() {
  local pid=${1:-} n=${2:-50}
  [[ -n "$pid" ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! bench__wait_gone "$pid" "$n"; then
      bench_warn "process $pid ignored TERM for $((n / 10)) s, killing it"
      kill -KILL "$pid" 2>/dev/null || true
      bench__wait_gone "$pid" 20 || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------
# Measuring

# bench_measure TIMEOUT_S LOG CMD...
#   Runs CMD under `timeout -k 5 TIMEOUT_S /usr/bin/time -v`, its stdout+stderr to LOG and
#   time's report to LOG.time. Sets:
#     BENCH_RC    exit status (124 = timed out)
#     BENCH_SECS  wall seconds, from date +%s%N around the command (3 decimals)
#     BENCH_RSS   peak RSS in KiB ("Maximum resident set size"), empty if unknown
#   Never fails itself (a failing CMD is the caller's to report). The command runs in the
#   background and is waited for, so Ctrl-C reaches the trap at once and kills it.
# shellcheck disable=SC2034  # BENCH_RC, BENCH_SECS, BENCH_RSS are read by the caller
bench_measure() {
  local tmo=$1 log=$2 t0 t1
  shift 2
  BENCH_RC=0
  BENCH_RSS=""
  rm -f "$log.time"
  t0=$(date +%s%N)
  timeout -k 5 "$tmo" /usr/bin/time -v -o "$log.time" "$@" >"$log" 2>&1 </dev/null &
  BENCH_CHILD=$!
  wait "$BENCH_CHILD" || BENCH_RC=$?
  t1=$(date +%s%N)
  BENCH_CHILD=""
  BENCH_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
  if [[ -s "$log.time" ]]; then
    BENCH_RSS=$(awk -F': *' '/Maximum resident set size/ { print $2 }' "$log.time")
  fi
  return 0
}

# bench_kib_to_mib KIB: one decimal.
bench_kib_to_mib() {
  [[ -n "${1:-}" ]] || {
    echo "-"
    return
  }
  awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'
}

# ---------------------------------------------------------------------------------------------
# Statistics over decimal numbers given as arguments; print "-" when given none.

bench_median() {
  (($# > 0)) || {
    echo "-"
    return
  }
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.3f", m }'
}

bench_min() {
  (($# > 0)) || {
    echo "-"
    return
  }
  printf '%s\n' "$@" | sort -g | head -n 1 | awk '{ printf "%.3f", $1 }'
}

bench_max() {
  (($# > 0)) || {
    echo "-"
    return
  }
  printf '%s\n' "$@" | sort -g | tail -n 1 | awk '{ printf "%.3f", $1 }'
}

# bench_ratio A B: A / B, two decimals; "-" if either is "-"/empty or B is 0.
bench_ratio() {
  local a=${1:-} b=${2:-}
  if [[ -z "$a" || -z "$b" || "$a" == "-" || "$b" == "-" ]]; then
    echo "-"
    return
  fi
  awk -v a="$a" -v b="$b" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f", a / b }'
}

# bench_le A B: exit 0 if A <= B (decimals).
bench_le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 <= b + 0) }'; }

# bench_source_file WORK SIZE_MIB: a file of SIZE_MIB MiB of random data in WORK/files, kept
# and reused by later runs of the same size, read once into the page cache so every tool is
# served from memory alike. Sets SRC_DIR, SRC_NAME, SRC and SRC_SHA (its sha256).
bench_source_file() {
  local work=$1 size_mib=$2
  local size_bytes=$((size_mib * 1024 * 1024))
  SRC_DIR=$work/files
  SRC_NAME=random-${size_mib}MiB.bin
  SRC=$SRC_DIR/$SRC_NAME
  mkdir -p "$SRC_DIR"
  if [[ -f "$SRC" && -s "$SRC.sha256" && $(stat -c %s "$SRC") -eq $size_bytes ]]; then
    bench_log "reusing $SRC"
  else
    local need_kib=$((size_mib * 1024 * 2 + 65536)) avail_kib
    avail_kib=$(df -Pk "$work" | awk 'NR == 2 { print $4 }')
    ((avail_kib >= need_kib)) ||
      bench_die "not enough space in $work: need ~$((need_kib / 1024)) MiB, have $((avail_kib / 1024)) MiB"
    bench_log "generating $size_mib MiB of random data into $SRC"
    rm -f "$SRC" "$SRC.sha256"
    head -c "$size_bytes" /dev/urandom >"$SRC.tmp"
    mv "$SRC.tmp" "$SRC"
    sha256sum "$SRC" | cut -d' ' -f1 >"$SRC.sha256"
  fi
  # shellcheck disable=SC2034  # read by the scripts that source this file
  SRC_SHA=$(cat "$SRC.sha256")
  cat "$SRC" >/dev/null
}

# The fleets in network namespaces of bench/swarm.sh and bench/chaos.sh (bench_fleet_init and
# the rest), kept in a file of their own to keep this one short.
# shellcheck source=bench/fleet.sh
. "$(dirname "${BASH_SOURCE[0]}")/fleet.sh"
