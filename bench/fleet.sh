# shellcheck shell=bash
# bench/fleet.sh — sourced by bench/lib.sh, not run: see the comment below.

# ---------------------------------------------------------------------------------------------
# Fleets in network namespaces (bench/swarm.sh, bench/chaos.sh)
#
# Hosts are network namespaces on one bridge, which lives in a "switch" namespace of its own
# (nothing is added to the root namespace). Host 0 (10.77.0.10) runs nginx and `shoal tracker`;
# hosts 1..N (10.77.0.11…) each run `shoal agent`; every host's upload and download are capped
# at RATE with tc tbf. The caller sets N, RATE, RATE_BPS, SIZE_BYTES, SHOAL (the binary), RUN
# (its log directory), AGENT_LOG, TRACKER_LOG, AGENT_EXTRA (extra agent arguments) and
# OUT_ROUND (the agents' data go in OUT_ROUND/hI/data), then calls bench_fleet_init TAG: the
# namespaces are named shoal-TAG-<pid>-*, so two runs never collide, and leftovers of a TAG.sh
# run that is gone are removed.

# bench_fleet_init TAG: the fleet's names, addresses, tc caps and tokens (in RUN).
bench_fleet_init() {
  BENCH_TAG=$1
  # Every ip/tc command is bounded.
  T=(timeout 15)
  PFX=shoal-$BENCH_TAG-$$-
  SW=${PFX}sw
  SUBNET=10.77.0
  ORIGIN_IP=$SUBNET.10
  # Burst: at least 256 KiB (bench/mirrors.sh's), and 10 ms worth at higher rates so the
  # bucket is never smaller than what a timer tick lets through.
  BURST=$(awk -v r="$RATE_BPS" 'BEGIN { b = r / 8 / 100; if (b < 262144) b = 262144; printf "%d", b }')
  TBF=(tbf rate "$RATE" burst "$BURST" latency 50ms)
  OTHERS=""
  OTHERS_SEEN=""
  TRACKER_PORT=7700
  TRACKER_URL=http://$ORIGIN_IP:$TRACKER_PORT
  AGENT_PORT=7701
  TRACKER_PID=""
  declare -gA AGENT_PIDS=()
  CLIENT_PIDS=()
  CLK_TCK=$(getconf CLK_TCK)
  FLEET_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  READER_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  local umask_old
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
}

bench_ns_of() { echo "${PFX}h$1"; }
bench_ip_of() { echo "$SUBNET.$((10 + $1))"; }

# bench_ns_kill_all NS: KILL every process in namespace NS (ours: this run's, or a dead run's).
bench_ns_kill_all() {
  local pid
  for pid in $("${T[@]}" ip netns pids "$1" 2>/dev/null || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
}

# Deletes every namespace whose name starts with PREFIX; its processes are killed first (a
# namespace with processes in it outlives `ip netns del`). Deleting a namespace deletes its
# veth ends, and so the pairs.
bench_ns_delete_prefix() {
  local prefix=$1 ns
  for ns in $("${T[@]}" ip netns list 2>/dev/null | awk '{ print $1 }'); do
    [[ "$ns" == "$prefix"* ]] || continue
    bench_ns_kill_all "$ns"
    "${T[@]}" ip netns del "$ns" 2>/dev/null || true
  done
}

bench_net_teardown() { bench_ns_delete_prefix "$PFX"; }

# Leftovers of runs killed too hard to clean up: namespaces of a pid that is gone (or is us,
# before we made any). Another live run is left alone, and named.
OTHERS=""
OTHERS_SEEN=""
bench_sweep_leftovers() {
  local ns pid seen=" "
  for ns in $("${T[@]}" ip netns list 2>/dev/null | awk '{ print $1 }'); do
    [[ "$ns" =~ ^shoal-$BENCH_TAG-([0-9]+)- ]] || continue
    pid=${BASH_REMATCH[1]}
    [[ "$seen" == *" $pid "* ]] && continue
    seen+="$pid "
    if [[ "$pid" != "$$" ]] && kill -0 "$pid" 2>/dev/null && grep -qa "$BENCH_TAG.sh" "/proc/$pid/cmdline" 2>/dev/null; then
      OTHERS+=" $pid"
    else
      bench_log "removing the namespaces of an earlier run (pid $pid) that is gone"
      bench_ns_delete_prefix "shoal-$BENCH_TAG-$pid-"
    fi
  done
}

# bench_other_runs: the pids of other live runs that have namespaces now, space-separated. Never fails.
bench_other_runs() {
  local pid
  for pid in $("${T[@]}" ip netns list 2>/dev/null | sed -nE "s/^shoal-$BENCH_TAG-([0-9]+)-.*/\\1/p" | sort -u || true); do
    if [[ "$pid" != "$$" ]] && kill -0 "$pid" 2>/dev/null; then
      printf '%s ' "$pid"
    fi
  done
  return 0
}

bench_net_setup() {
  local i ns
  "${T[@]}" ip netns add "$SW"
  "${T[@]}" ip -n "$SW" link set lo up
  "${T[@]}" ip -n "$SW" link add br0 type bridge forward_delay 0 stp_state 0
  "${T[@]}" ip -n "$SW" link set br0 up
  for ((i = 0; i <= N; i++)); do
    ns=$(bench_ns_of "$i")
    "${T[@]}" ip netns add "$ns"
    # h<i> on the bridge in the switch namespace, eth0 in the host's: created in place, so no
    # link ever appears in the root namespace.
    "${T[@]}" ip -n "$SW" link add "h$i" type veth peer name eth0 netns "$ns"
    "${T[@]}" ip -n "$SW" link set "h$i" master br0
    "${T[@]}" ip -n "$SW" link set "h$i" up
    "${T[@]}" ip -n "$ns" link set lo up
    "${T[@]}" ip -n "$ns" addr add "$(bench_ip_of "$i")/24" dev eth0
    "${T[@]}" ip -n "$ns" link set eth0 up
    # Upload cap: what the host sends. Download cap: what the bridge sends to the host.
    "${T[@]}" ip netns exec "$ns" tc qdisc add dev eth0 root "${TBF[@]}"
    "${T[@]}" ip netns exec "$SW" tc qdisc add dev "h$i" root "${TBF[@]}"
  done
}


# bench_in_ns I CMD...: run CMD in host I's namespace.
bench_in_ns() {
  local i=$1
  shift
  ip netns exec "$(bench_ns_of "$i")" "$@"
}

# bench_fleet_origin: nginx in host 0 serving SRC_DIR (see bench_source_file) under /files/,
# with BODY_LOG (RUN/nginx/body.log) holding what the file cost the origin: one line per
# request, client address and $body_bytes_sent. Sets URL, BODY_LOG and NGINX_VERSION; dies
# unless host 1 gets a 206 of SIZE_BYTES from it across the bridge.
bench_fleet_origin() {
  local hdr
  BODY_LOG=$RUN/nginx/body.log
  mkdir -p "$RUN/nginx"
  : >"$BODY_LOG"
  bench_fleet_origin_up
  NGINX_VERSION=$(nginx -v 2>&1 | sed 's/^nginx version: //')
  URL=http://$ORIGIN_IP/files/$SRC_NAME
  hdr=$(bench_in_ns 1 timeout 10 curl -q -sS -r 0-0 -D - -o /dev/null "$URL") ||
    bench_die "host 1 cannot reach the origin at $URL across the bridge"
  grep -qi "^content-range: bytes 0-0/$SIZE_BYTES" <<<"$hdr" ||
    bench_die "the origin did not answer a range request with 206 and length $SIZE_BYTES: $hdr"
  bench_log "nginx ($NGINX_VERSION) in $(bench_ns_of 0) serving $URL"
}

# bench_fleet_origin_up: starts the origin's nginx, its body log going on. With
# bench_fleet_origin_down, an origin that dies (nginx stopped: new connections are refused,
# open ones closed) and comes back on the same address and files.
bench_fleet_origin_up() {
  # shellcheck disable=SC2034  # read by bench_nginx_start
  BENCH_NGINX_HTTP_EXTRA="  log_format swarm_body '\$msec \$remote_addr \$status \$body_bytes_sent rt=\$request_time \"\$http_range\" \"\$http_user_agent\"';
  access_log $BODY_LOG swarm_body;"
  # shellcheck disable=SC2034
  BENCH_NGINX_PREFIX=(ip netns exec "$(bench_ns_of 0)")
  bench_nginx_start origin "$RUN/nginx" "$ORIGIN_IP:80" "location /files/ { alias $SRC_DIR/; }" ||
    bench_die "nginx in $(bench_ns_of 0) would not start (see $RUN/nginx/error.log)"
  # shellcheck disable=SC2034
  BENCH_NGINX_PREFIX=()
  BENCH_NGINX_HTTP_EXTRA=""
}
bench_fleet_origin_down() { bench_nginx_stop origin; }

# bench_dump_threads PID FILE: what a process that did not finish is doing, for its log directory:
# every thread's state, wait channel and kernel stack, and (gdb installed) every thread's
# backtrace. Bounded; never fails.
bench_dump_threads() {
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

bench_stop_fleet() {
  local i
  for i in "${!AGENT_PIDS[@]}"; do
    bench_stop_pid "${AGENT_PIDS[$i]}"
  done
  AGENT_PIDS=()
  bench_stop_pid "$TRACKER_PID"
  TRACKER_PID=""
}
bench_stop_clients() {
  local pid
  for pid in "${CLIENT_PIDS[@]}"; do
    bench_stop_pid "$pid" 20
  done
  CLIENT_PIDS=()
}

# bench_tracker_get PATH: the tracker's answer to a reader's GET, from host 0.
bench_tracker_get() {
  bench_in_ns 0 curl -q -sS --fail --max-time 5 -H "Authorization: Bearer $READER_SECRET" "$TRACKER_URL$1"
}

# bench_tracker_start DIR: `shoal tracker` in host 0 on DIR/tracker (fresh, or the same one
# again after a kill), logging to DIR/tracker.log (appended); returns once it answers /healthz.
bench_tracker_start() {
  local dir=$1 k
  mkdir -p "$dir"
  # Started with `ip netns exec` itself (which execs), so $! is the tracker's own pid.
  ip netns exec "$(bench_ns_of 0)" env ${TRACKER_LOG:+RUST_LOG="$TRACKER_LOG"} "$SHOAL" tracker --listen "$ORIGIN_IP:$TRACKER_PORT" --data "$dir/tracker" \
    --tokens "$RUN/tokens.toml" </dev/null >>"$dir/tracker.log" 2>&1 &
  TRACKER_PID=$!
  for ((k = 0; k < 100; k++)); do
    kill -0 "$TRACKER_PID" 2>/dev/null || bench_die "shoal tracker exited at start: $(tail -n 3 "$dir/tracker.log")"
    bench_in_ns 0 curl -q -s --fail --max-time 2 -o /dev/null "$TRACKER_URL/healthz" && break
    sleep 0.1
  done
  ((k < 100)) || bench_die "shoal tracker did not answer /healthz within 10 s (see $dir/tracker.log)"
}

# bench_agent_start I DIR OUT: `shoal agent` hI on OUT/hI/data (fresh, or the same again after
# a kill), logging to DIR/agent-hI.log (appended); returns once it listens.
bench_agent_start() {
  local i=$1 dir=$2 out=$3 k
  mkdir -p "$out/h$i"
  ip netns exec "$(bench_ns_of "$i")" env RUST_LOG="$AGENT_LOG" "$SHOAL" agent --id "h$i" --tracker "$TRACKER_URL" \
    --token-file "$RUN/fleet.token" --data "$out/h$i/data" \
    --listen "0.0.0.0:$AGENT_PORT" --advertise "$(bench_ip_of "$i"):$AGENT_PORT" \
    ${AGENT_EXTRA[@]+"${AGENT_EXTRA[@]}"} </dev/null >>"$dir/agent-h$i.log" 2>&1 &
  AGENT_PIDS[$i]=$!
  for ((k = 0; k < 100; k++)); do
    kill -0 "${AGENT_PIDS[$i]}" 2>/dev/null ||
      bench_die "shoal agent h$i exited at start: $(tail -n 3 "$dir/agent-h$i.log")"
    bench_in_ns "$i" timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$AGENT_PORT" 2>/dev/null && return 0
    sleep 0.1
  done
  bench_die "shoal agent h$i did not listen within 10 s (see $dir/agent-h$i.log)"
}

# bench_start_fleet DIR OUT: a tracker with a fresh database in DIR/tracker, and N agents with
# fresh data directories in OUT/h<i>/data; returns once all N are registered at the tracker.
bench_start_fleet() {
  local dir=$1 out=$2 i k n=0
  bench_tracker_start "$dir"
  for ((i = 1; i <= N; i++)); do
    bench_agent_start "$i" "$dir" "$out"
  done
  for ((k = 0; k < 150; k++)); do
    n=$(bench_tracker_get /v1/agents 2>/dev/null | jq '.agents | length' 2>/dev/null || echo 0)
    ((n >= N)) && break
    sleep 0.2
  done
  ((n >= N)) || bench_die "only $n of $N agents registered at the tracker within 30 s (see $dir/)"
}

# A client: waits (≤ 60 s) until GO exists, then runs CMD with its output in LOG and writes
# "rc start_ns end_ns" to RESULT, and CMD's peak RSS in KiB to RESULT.rss (GNU time, when
# /usr/bin/time is there). Started under `timeout`, in its host's namespace.
# shellcheck disable=SC2016  # expanded by the inner bash
BENCH_CLIENT_SCRIPT='
go=$1 ready=$2 result=$3 log=$4
shift 4
: >"$ready"
for ((i = 0; i < 12000; i++)); do
  [[ -e $go ]] && break
  sleep 0.005
done
[[ -e $go ]] || { echo "125 0 0" >"$result"; exit 125; }
rss=()
[[ -x /usr/bin/time ]] && rss=(/usr/bin/time -q -f %M -o "$result.rss")
t0=$(date +%s%N)
"${rss[@]}" "$@" >"$log" 2>&1 </dev/null
rc=$?
t1=$(date +%s%N)
echo "$rc $t0 $t1" >"$result.tmp" && mv "$result.tmp" "$result"
exit "$rc"
'

# bench_counters: "tx_bytes rx_bytes" of every host's eth0, one host per line, to stdout.
bench_counters() {
  local i
  for ((i = 0; i <= N; i++)); do
    "${T[@]}" ip -n "$(bench_ns_of "$i")" -s -j link show eth0 | jq -r '.[0].stats64 | "\(.tx.bytes) \(.rx.bytes)"'
  done
}

# bench_origin_tcp: "OutSegs RetransSegs" of host 0's TCP (its namespace's /proc/net/snmp).
bench_origin_tcp() {
  # shellcheck disable=SC2016  # awk's $, not the shell's
  "${T[@]}" ip netns exec "$(bench_ns_of 0)" awk '/^Tcp:/ { if (!h) { for (f = 2; f <= NF; f++) c[$f] = f; h = 1 }
    else print $c["OutSegs"], $c["RetransSegs"] }' /proc/net/snmp
}

# bench_cpu_ticks PID...: utime + stime of the processes, in clock ticks (gone ones count 0).
bench_cpu_ticks() {
  local pid t=0 s
  for pid in "$@"; do
    s=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }') || s=0
    t=$((t + ${s:-0}))
  done
  echo "$t"
}
# bench_peak_rss_kib PID: the process's peak resident set (VmHWM) in KiB, nothing if it is gone.
bench_peak_rss_kib() {
  awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true
}
# bench_tracker_requests: the requests the tracker has answered so far (its /metrics counters,
# summed over routes and statuses; its own /metrics reads left out), "-" if it does not answer.
bench_tracker_requests() {
  [[ -n "${TRACKER_PID:-}" ]] && kill -0 "$TRACKER_PID" 2>/dev/null || {
    echo "-"
    return 0
  }
  local text
  text=$(bench_in_ns 0 curl -q -sS --fail --max-time 2 "$TRACKER_URL/metrics" 2>/dev/null) || text=""
  awk '/^shoal_tracker_requests_total\{/ && !/route="\/metrics"/ { s += $NF; f = 1 } END { if (f) printf "%d\n", s; else print "-" }' <<<"$text"
}
# /proc/stat: "busy total" jiffies of all cores (idle and iowait count as idle).
bench_cpu_all() { awk '/^cpu / { t = 0; for (f = 2; f <= NF; f++) t += $f; print t - $5 - $6, t }' /proc/stat; }

# bench_phase_start NAME DIR CMD_BUILDER: starts one client per host 1..N (CMD_BUILDER I OUT
# sets CMD), waits until all are ready, takes the counters and releases them at once (T_GO).
# bench_phase_wait then waits for all: it sets PH_SECS (GO to the last exit), PH_RC[i],
# PH_END[i] and PH_SKEW[i] (ms from GO to the client's own start), PH_RSS[i] (the client's peak
# RSS, MiB), PH_OUT[i], and the counters: CPU_BUSY, H0_CPU, AGENT_CPU[i], AGENT_RSS[i] (each
# agent's peak RSS since it started, MiB, read before it is stopped) and TRACKER_RPS (the
# tracker's requests per second between GO and the last exit; "-" if it was down or restarted).
# Between the two, the caller may do what it likes to the fleet (bench/chaos.sh's faults).
bench_phase_start() {
  local name=$1 dir=$2 builder=$3 i k
  mkdir -p "$dir"
  PH_GO=$dir/GO
  PH_DIR=$dir
  rm -f "$PH_GO" "$dir"/ready-* "$dir"/result-*
  CLIENT_PIDS=()
  PH_RC=() PH_END=() PH_SKEW=() PH_OUT=() PH_RSS=()
  for ((i = 1; i <= N; i++)); do
    PH_OUT[i]=$OUT_ROUND/h$i/$name.bin
    "$builder" "$i" "${PH_OUT[i]}"
    ip netns exec "$(bench_ns_of "$i")" timeout -k 5 "$TIMEOUT" bash -c "$BENCH_CLIENT_SCRIPT" client "$PH_GO" "$dir/ready-$i" \
      "$dir/result-$i" "$dir/$name-h$i.log" "${CMD[@]}" </dev/null >/dev/null 2>&1 &
    CLIENT_PIDS+=($!)
  done
  for ((k = 0; k < 300; k++)); do
    [[ $(find "$dir" -maxdepth 1 -name 'ready-*' | wc -l) -ge $N ]] && break
    sleep 0.1
  done
  ((k < 300)) || bench_die "the $name clients were not all ready within 30 s"
  OTHERS_SEEN+=" $(bench_other_runs)"
  COUNTERS_BEFORE=$(bench_counters)
  TCP_BEFORE=$(bench_origin_tcp)
  CPU_BEFORE=$(bench_cpu_all)
  # shellcheck disable=SC2046  # one pid per word
  H0_CPU_BEFORE=$(bench_cpu_ticks $("${T[@]}" ip netns pids "$(bench_ns_of 0)"))
  AGENT_CPU_BEFORE=()
  for i in "${!AGENT_PIDS[@]}"; do AGENT_CPU_BEFORE[i]=$(bench_cpu_ticks "${AGENT_PIDS[$i]}"); done
  TRACKER_REQS_BEFORE=$(bench_tracker_requests)
  T_GO=$(date +%s%N)
  : >"$PH_GO.tmp"
  mv "$PH_GO.tmp" "$PH_GO"
}

bench_phase_wait() {
  local dir=$PH_DIR i t_go=$T_GO t_now rc res
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
    PH_RSS[i]=$(bench_kib_to_mib "$(tail -n 1 "$dir/result-$i.rss" 2>/dev/null | grep -E '^[0-9]+$' || true)")
  done
  CLIENT_PIDS=()
  PH_SECS=$(bench_max "${PH_END[@]}")
  TRACKER_RPS=$(awk -v a="$TRACKER_REQS_BEFORE" -v b="$(bench_tracker_requests)" -v s="$PH_SECS" 'BEGIN {
    if (a == "-" || b == "-" || b + 0 < a + 0 || s + 0 == 0) print "-"; else printf "%.1f", (b - a) / s }')
  OTHERS_SEEN+=" $(bench_other_runs)"
  CPU_AFTER=$(bench_cpu_all)
  # shellcheck disable=SC2046  # one pid per word
  H0_CPU_AFTER=$(bench_cpu_ticks $("${T[@]}" ip netns pids "$(bench_ns_of 0)"))
  AGENT_CPU=() AGENT_RSS=()
  for i in "${!AGENT_PIDS[@]}"; do
    AGENT_RSS[i]=$(bench_kib_to_mib "$(bench_peak_rss_kib "${AGENT_PIDS[$i]}")")
    AGENT_CPU[i]=$(awk -v a="${AGENT_CPU_BEFORE[i]:-0}" -v b="$(bench_cpu_ticks "${AGENT_PIDS[$i]}")" -v t="$CLK_TCK" \
      'BEGIN { printf "%.1f", (b - a) / t }')
  done
  CPU_BUSY=$(awk -v a="$CPU_BEFORE" -v b="$CPU_AFTER" 'BEGIN {
    split(a, x, " "); split(b, y, " "); t = y[2] - x[2]
    if (t <= 0) print "-"; else printf "%.0f", 100 * (y[1] - x[1]) / t }')
  H0_CPU=$(awk -v a="$H0_CPU_BEFORE" -v b="$H0_CPU_AFTER" -v t="$CLK_TCK" 'BEGIN { printf "%.1f", (b - a) / t }')
}

# bench_run_phase NAME DIR CMD_BUILDER: bench_phase_start and bench_phase_wait.
bench_run_phase() {
  bench_phase_start "$@"
  bench_phase_wait
}

# After the phase (and after the agents are stopped, so every connection is closed and logged):
# COUNTERS_AFTER, and nginx's body bytes since the mark, in total and per client address.
bench_read_origin() {
  local mark=$1
  sleep 0.5
  COUNTERS_AFTER=$(bench_counters)
  # Share of host 0's TCP segments that were retransmissions (tbf drops what its queue of 50 ms
  # cannot hold).
  ORIGIN_RETRANS=$(awk -v a="$TCP_BEFORE" -v b="$(bench_origin_tcp)" 'BEGIN {
    split(a, x, " "); split(b, y, " "); o = y[1] - x[1]
    if (o <= 0) print "-"; else printf "%.2f", 100 * (y[2] - x[2]) / o }')
  ORIGIN_BODY=$(tail -n "+$((mark + 1))" "$BODY_LOG" | awk '{ s += $4 } END { printf "%.0f", s }')
  ORIGIN_REQS=$(tail -n "+$((mark + 1))" "$BODY_LOG" | wc -l)
  declare -gA ORIGIN_BY_IP=()
  local ip bytes
  while read -r ip bytes; do
    [[ -n "$ip" ]] && ORIGIN_BY_IP[$ip]=$bytes
  done < <(tail -n "+$((mark + 1))" "$BODY_LOG" | awk '{ s[$2] += $4 } END { for (a in s) printf "%s %.0f\n", a, s[a] }')
  ORIGIN_TX=$(paste <(sed -n 1p <<<"$COUNTERS_BEFORE") <(sed -n 1p <<<"$COUNTERS_AFTER") | awk '{ printf "%.0f\n", $3 - $1 }')
  AGENTS_TX=$(paste <(sed -n '2,$p' <<<"$COUNTERS_BEFORE") <(sed -n '2,$p' <<<"$COUNTERS_AFTER") | awk '{ s += $3 - $1 } END { printf "%.0f", s }')
}
# bench_host_tx I: bytes host I sent during the phase.
bench_host_tx() {
  paste <(sed -n "$(($1 + 1))p" <<<"$COUNTERS_BEFORE") <(sed -n "$(($1 + 1))p" <<<"$COUNTERS_AFTER") | awk '{ printf "%.0f\n", $3 - $1 }'
}


# bench_verify: sets PH_OK[i] to ok / why not, PH_ALL_OK (1/0) and PH_WRONG (1 if a copy exited 0
# but is wrong). Hashes two at a time.
bench_verify() {
  local i sums
  PH_OK=()
  PH_ALL_OK=1
  PH_WRONG=0
  sums=$(for ((i = 1; i <= N; i++)); do
    # An if, not &&: a last host without a copy must not fail the pipeline.
    if [[ "${PH_RC[i]}" == 0 && -f "${PH_OUT[i]}" ]]; then printf '%s\0' "${PH_OUT[i]}"; fi
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

# bench_swarm_sources LOG LEADER_IP: "origin_bytes peer_bytes fetched leader_bytes" from a get's
# finished line ("- - - -" without one).
bench_swarm_sources() {
  jq -r --arg o "http://$ORIGIN_IP" --arg l "http://$2:$AGENT_PORT/" 'select(.event == "finished") |
    ([.sources[] | select(.url | startswith($o + "/") or . == $o) | .bytes] | add // 0) as $from_origin |
    ([.sources[] | select(.url | startswith($l)) | .bytes] | add // 0) as $from_leader |
    ([.sources[] | .bytes] | add // 0) as $all |
    "\($from_origin) \($all - $from_origin) \(.fetched) \($from_leader)"' "$1" 2>/dev/null | tail -n 1 | grep . || echo "- - - -"
}
bench_mib() {
  if [[ "$1" == "-" || -z "$1" ]]; then echo "-"; else awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; fi
}
bench_times_f() { awk -v b="$1" -v f="$SIZE_BYTES" 'BEGIN { printf "%.3f", b / f }'; }
