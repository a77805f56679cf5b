#!/usr/bin/env bash
# bench/resume.sh — what a kill -9 halfway through a download costs: shoal against aria2c.
#
# A random file (512 MiB by default) is served by a local nginx with `limit_rate 2m` per
# connection. Each tool downloads it with 16 connections; once the tool has received half the
# file (read from /proc/PID/io), it is killed with SIGKILL, and the same command is run again
# to finish. nginx's access log gives the bytes it sent over both runs: what exceeds the file
# size was downloaded twice. The report shows, per tool, the median over ROUNDS of the resume
# time and of the bytes re-downloaded (MiB and % of the file), and whether the final file
# hashes right. aria2c resumes from its `.aria2` control file; it is run with its defaults
# (the control file saved every 60 s) and with `--auto-save-interval=1`, shoal's cadence.
#
# Targets (from issue 3): shoal re-downloads at most 1 % of the file, and no more than aria2c.
#
# Knobs (environment):
#   SIZE_MIB=512   file size (SIZE_MIB=64 ROUNDS=1 for a quick check of the harness)
#   ROUNDS=3       kills and resumes per tool
#   RATE_MIB=2     nginx limit_rate per connection, MiB/s (16 connections: 32 MiB/s in all)
#   KILL_PCT=50    kill once the tool has received this share of the file
#   SHOAL=path     use this shoal binary instead of `cargo build --release -p shoal`
#   TOOLS="shoal aria2c aria2c1s"
#   WORK=dir       source file, nginx, logs (default bench/out/resume-work; the source file
#                  is reused by later runs of the same size)
#
# Exit status: 0 when the benchmark ran (missed targets are in the report), 1 when a tool
# wrote a wrong file or the harness could not run.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
bench_init
export PATH="$PATH:/usr/sbin:/sbin"

SIZE_MIB=${SIZE_MIB:-512}
ROUNDS=${ROUNDS:-3}
RATE_MIB=${RATE_MIB:-2}
KILL_PCT=${KILL_PCT:-50}
TOOLS=${TOOLS:-shoal aria2c aria2c1s}
CONNS=16
WORK=${WORK:-$BENCH_DIR/out/resume-work}

for knob in SIZE_MIB ROUNDS RATE_MIB KILL_PCT; do
  [[ "${!knob}" =~ ^[1-9][0-9]*$ ]] || bench_die "$knob must be a positive integer, not '${!knob}'"
done
((ROUNDS <= 20)) || bench_die "ROUNDS must be 1..20"
((KILL_PCT < 100)) || bench_die "KILL_PCT must be below 100"
for t in $TOOLS; do
  case $t in shoal | aria2c | aria2c1s) ;; *) bench_die "unknown tool '$t' in TOOLS" ;; esac
done

SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))
KILL_BYTES=$((SIZE_BYTES * KILL_PCT / 100))
# A whole download at the ideal rate, twice, plus slack: the bound on every wait below.
TIMEOUT=$((2 * SIZE_MIB / (CONNS * RATE_MIB) + 60))

bench_need nginx:nginx-light curl:curl aria2c:aria2 /usr/bin/time:time sha256sum:coreutils ss:iproute2
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

if [[ " $TOOLS " == *" shoal "* ]]; then
  if [[ -z "${SHOAL:-}" ]]; then
    bench_log "building: cargo build --release -p shoal"
    (cd "$REPO" && timeout 3600 cargo build --release -p shoal) || bench_die "build failed"
    SHOAL="${CARGO_TARGET_DIR:-$REPO/target}/release/shoal"
  fi
  [[ -x "$SHOAL" ]] || bench_die "shoal binary '$SHOAL' is not executable"
  mkdir -p "$WORK/bin"
  cp -f "$SHOAL" "$WORK/bin/shoal" # a rebuild during the run cannot swap binaries
  SHOAL=$WORK/bin/shoal
fi

bench_source_file "$WORK" "$SIZE_MIB"

NGINX_DIR=$WORK/nginx
PORT=""
for attempt in 1 2 3 4 5; do
  p=$(bench_free_port)
  if bench_nginx_start resume "$NGINX_DIR" "127.0.0.1:$p" \
    "location /throttled/ { alias $SRC_DIR/; limit_rate ${RATE_MIB}m; }"; then
    PORT=$p
    break
  fi
  bench_log "nginx start attempt $attempt failed, trying another port"
done
[[ -n "$PORT" ]] || bench_die "nginx would not start (see $NGINX_DIR/error.log)"
URL="http://127.0.0.1:$PORT/throttled/$SRC_NAME"

OUT=$(mktemp -d "$WORK/dl.XXXXXX")
bench_cleanup_add "rm -rf $(printf %q "$OUT")"
LOG_DIR=$WORK/logs
rm -rf "$LOG_DIR"
mkdir -p "$LOG_DIR"

tool_label() {
  case $1 in
    shoal) echo "shoal -c $CONNS" ;;
    aria2c) echo "aria2c -x$CONNS -s$CONNS -k1M (control file every 60 s, its default)" ;;
    aria2c1s) echo "aria2c -x$CONNS -s$CONNS -k1M --auto-save-interval=1" ;;
  esac
}

# tool_cmd TOOL: sets CMD to download URL into $OUT/f.bin, continuing whatever is there.
tool_cmd() {
  local aria=(aria2c --no-conf=true -q "-x$CONNS" "-s$CONNS" -k1M --file-allocation=none
    --auto-file-renaming=false -d "$OUT" -o f.bin)
  case $1 in
    shoal) CMD=("$SHOAL" get -c "$CONNS" -q -o "$OUT/f.bin" "$URL") ;;
    aria2c) CMD=("${aria[@]}" "$URL") ;;
    aria2c1s) CMD=("${aria[@]}" --auto-save-interval=1 "$URL") ;;
  esac
}

# nginx's bytes sent for every request logged so far (each line ends a request, killed ones
# included: nginx logs them when it sees the connection close).
sent_bytes() {
  awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^rt=/) { s += $(i - 1); break } } END { printf "%d", s }' \
    "$NGINX_DIR/access.log"
}

# Bytes nginx has sent so far, while a download runs: each open connection's bytes_sent
# (from ss), plus the logged requests of connections already closed. A logged request whose
# client port is still open is in that connection's count already.
served_now() {
  awk '
    FNR == NR {
      if ($0 !~ /^[ \t]/) { n = split($4, a, ":"); peer = a[n] }
      else if (match($0, /bytes_sent:[0-9]+/)) { live[peer] = substr($0, RSTART + 11, RLENGTH - 11) }
      next
    }
    {
      n = split($2, a, ":")
      if (a[n] in live) next
      for (i = 3; i <= NF; i++) if ($i ~ /^rt=/) { s += $(i - 1); break }
    }
    END { for (p in live) s += live[p]; printf "%d", s }
  ' <(ss -tinH state established "( sport = :$PORT )" 2>/dev/null) "$NGINX_DIR/access.log"
}

# file_intervals LOG: the byte intervals of the file that the logged responses carried, as
# sorted, merged "start end" lines (end exclusive). A response's body is its bytes sent less
# ~300 bytes of headers (nginx's 206 headers for this file; a few bytes off at most).
file_intervals() {
  awk -v size="$SIZE_BYTES" '{
    start = 0; sent = 0
    for (i = 2; i <= NF; i++) {
      if ($i ~ /^range="bytes=[0-9]+-/) { split($i, a, /[=-]/); start = a[3] + 0 }
      if ($i ~ /^rt=/) { sent = $(i - 1) - 300 }
    }
    if (sent > 0) { end = start + sent; if (end > size) end = size; print start, end }
  }' "$1" | sort -n -k1,1 | awk '
    NR == 1 { s = $1; e = $2; next }
    $1 <= e { if ($2 > e) e = $2; next }
    { print s, e; s = $1; e = $2 }
    END { if (NR) print s, e }'
}

# overlap A B: bytes in both sets of merged intervals (files of "start end" lines).
overlap() {
  awk 'FNR == NR { as[++n] = $1; ae[n] = $2; next }
       { for (i = 1; i <= n; i++) {
           lo = ($1 > as[i]) ? $1 : as[i]; hi = ($2 < ae[i]) ? $2 : ae[i]
           if (hi > lo) total += hi - lo } }
       END { printf "%d", total }' "$1" "$2"
}

# reset_log: empties nginx's access log, so that it holds one run's requests.
reset_log() {
  : >"$NGINX_DIR/access.log"
  kill -USR1 "$(cat "$NGINX_DIR/nginx.pid")" # reopen the emptied log
  sleep 0.2
}

declare -A RESUME=() REDONE=() BEYOND=() KILLED_AT=() WRONG=()
for ((round = 1; round <= ROUNDS; round++)); do
  for tool in $TOOLS; do
    rm -rf "${OUT:?}"/*
    reset_log
    tool_cmd "$tool"
    log=$LOG_DIR/$tool-r$round
    "${CMD[@]}" >"$log-1.txt" 2>&1 </dev/null &
    pid=$!
    deadline=$((SECONDS + TIMEOUT))
    while kill -0 "$pid" 2>/dev/null && (($(served_now) < KILL_BYTES)); do
      ((SECONDS < deadline)) || break
      sleep 0.05
    done
    if ! kill -KILL "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      bench_warn "$tool round $round finished before it could be killed: round skipped"
      continue
    fi
    wait "$pid" 2>/dev/null || true
    sleep 0.5 # nginx notices the closed connections and logs them
    got=$(sent_bytes)
    cp "$NGINX_DIR/access.log" "$log-1.access.log"
    reset_log
    bench_measure "$TIMEOUT" "$log-2.txt" "${CMD[@]}"
    sleep 0.5
    cp "$NGINX_DIR/access.log" "$log-2.access.log"
    sent=$((got + $(sent_bytes)))
    file_intervals "$log-1.access.log" >"$log-1.intervals"
    file_intervals "$log-2.access.log" >"$log-2.intervals"
    twice=$(overlap "$log-1.intervals" "$log-2.intervals")
    sha=$(sha256sum "$OUT/f.bin" 2>/dev/null | cut -d' ' -f1 || true)
    if ((BENCH_RC != 0)) || [[ "$sha" != "$SRC_SHA" ]]; then
      WRONG[$tool]=1
      bench_warn "$tool round $round: exit $BENCH_RC, sha256 ${sha:-none} (see $log-2.txt)"
    fi
    RESUME[$tool]+=" $BENCH_SECS"
    REDONE[$tool]+=" $twice"
    BEYOND[$tool]+=" $((sent - SIZE_BYTES))"
    KILLED_AT[$tool]+=" $got"
    bench_log "$tool round $round: killed after nginx sent $((got >> 20)) MiB; resume took $BENCH_SECS s; $twice bytes of the file sent in both runs; nginx sent $((sent - SIZE_BYTES)) bytes more than the file in all"
  done
done

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
pct() { awk -v b="$1" -v s="$SIZE_BYTES" 'BEGIN { printf "%.2f", 100 * b / s }'; }

REPORT=$BENCH_DIR/out/resume-$(date -u +%Y-%m-%d-%H%M%S).md
{
  echo "### kill -9 at ${KILL_PCT} % of a $SIZE_MIB MiB download, then the same command again"
  echo
  echo "nginx \`limit_rate ${RATE_MIB}m\` per connection, $CONNS connections, $ROUNDS rounds; $(nproc) cores," \
    "load at the end $(cut -d' ' -f1-3 /proc/loadavg). Medians (min–max) over the rounds."
  echo
  echo "\"Re-downloaded\" is the bytes of the file that nginx sent in both the killed run and the"
  echo "resume (from the ranges and byte counts in its access log). \"Sent beyond the file\" is all"
  echo "nginx sent over both runs minus the file size: it adds what a tool wastes without any kill"
  echo "(ranges cut short, connections closed with data in flight)."
  echo
  echo "| tool | sent before the kill, % | resume time, s | re-downloaded, MiB | re-downloaded, % of file | sent beyond the file, MiB | file correct |"
  echo "|---|---|---|---|---|---|---|"
  for tool in $TOOLS; do
    if [[ -z "${RESUME[$tool]:-}" ]]; then
      echo "| $(tool_label "$tool") | - | - | - | - | - | never killed mid-way |"
      continue
    fi
    read -r -a times <<<"${RESUME[$tool]}"
    read -r -a redone <<<"${REDONE[$tool]}"
    read -r -a beyond <<<"${BEYOND[$tool]}"
    med=$(bench_median "${redone[@]}")
    read -r -a killed <<<"${KILLED_AT[$tool]}"
    echo "| $(tool_label "$tool") | $(pct "$(bench_median "${killed[@]}")") | $(bench_median "${times[@]}") ($(bench_min "${times[@]}")–$(bench_max "${times[@]}")) |" \
      "$(mib "$med") ($(mib "$(bench_min "${redone[@]}")")–$(mib "$(bench_max "${redone[@]}")")) | $(pct "$med") |" \
      "$(mib "$(bench_median "${beyond[@]}")") |" \
      "$([[ -n "${WRONG[$tool]:-}" ]] && echo "NO" || echo yes) |"
  done
  echo
  if [[ -n "${REDONE[shoal]:-}" ]]; then
    read -r -a redone <<<"${REDONE[shoal]}"
    shoal_med=$(bench_median "${redone[@]}")
    if bench_le "$shoal_med" "$((SIZE_BYTES / 100))"; then
      echo "- shoal re-downloads ≤ 1 % of the file: met ($(pct "$shoal_med") %)."
    else
      echo "- shoal re-downloads ≤ 1 % of the file: MISSED ($(pct "$shoal_med") %)."
    fi
    for other in aria2c aria2c1s; do
      [[ -n "${REDONE[$other]:-}" ]] || continue
      read -r -a theirs <<<"${REDONE[$other]}"
      their_med=$(bench_median "${theirs[@]}")
      verdict=$(bench_le "$shoal_med" "$their_med" && echo met || echo MISSED)
      echo "- no worse than $(tool_label "$other"): $verdict ($(mib "$shoal_med") vs $(mib "$their_med") MiB)."
    done
  fi
} | tee "$REPORT"
bench_log "report: $REPORT"
[[ ${#WRONG[@]} -eq 0 ]] || exit 1
