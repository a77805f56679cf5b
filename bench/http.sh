#!/usr/bin/env bash
# bench/http.sh — shoal against aria2c, axel and curl on one file behind a local nginx.
#
# A random file (512 MiB by default) is served by nginx on 127.0.0.1 twice: under /throttled/
# with `limit_rate 16m` (16 MiB/s per connection, where many connections pay off) and under
# /fast/ without a limit (where one connection is already as fast as loopback and disk allow).
# Each tool downloads it ROUNDS times per scenario; the script prints, per scenario, the median,
# min and max wall time, the ratio to aria2c, to curl and (throttled) to the ideal
# 512 MiB / (16 × 16 MiB/s) = 2.0 s, and peak RSS; then whether shoal meets its targets.
# The same Markdown goes to bench/out/http-<date>.md for bench/RESULTS.md.
#
# Knobs (environment):
#   SIZE_MIB=512    file size (SIZE_MIB=64 ROUNDS=1 for a quick check of the harness)
#   ROUNDS=3        runs per tool per scenario
#   SHOAL=path      use this shoal binary instead of building `cargo build --release -p shoal`
#   TOOLS="shoal shoal16 aria2c axel curl shoalpipe curlpipe"   which rows to run (the *pipe
#                   rows stream to stdout into `sha256sum`: `shoal get -o -` against curl; aria2c
#                   and axel cannot stream, they write to a file only, so they have no such row)
#   SCENARIOS="throttled fast"              which scenarios to run
#   TIMEOUT=secs    per command (default: 120, or more for files too big for curl at 16 MiB/s)
#   WORK=dir        source file, nginx config and logs, this run's tool logs in WORK/logs
#                   (default bench/out/http-work; the source file is kept there and reused by
#                   later runs of the same size)
#   OUT_DIR=dir     where the tools write (default WORK): in a fresh mktemp -d directory inside
#                   it, emptied before every run and removed at exit (OUT_DIR=/dev/shm: no disk)
#
# Exit status: 0 when the benchmark ran (FAIL rows and missed targets are in the report),
# 1 when any tool wrote a wrong file (loud), or the harness itself could not run.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
bench_init
export PATH="$PATH:/usr/sbin:/sbin"

# ----------------------------------------------------------------------------- knobs
SIZE_MIB=${SIZE_MIB:-512}
ROUNDS=${ROUNDS:-3}
TOOLS=${TOOLS:-shoal shoal16 aria2c axel curl shoalpipe curlpipe}
SCENARIOS=${SCENARIOS:-throttled fast}
CONNS=16     # connections for shoal -c, aria2c -x/-s, axel -n (aria2c allows at most 16)
RATE_MIB=16  # nginx limit_rate per connection, MiB/s ("16m" in nginx is 16 × 1024 × 1024)
WORK=${WORK:-$BENCH_DIR/out/http-work}

[[ "$SIZE_MIB" =~ ^[1-9][0-9]*$ ]] || bench_die "SIZE_MIB must be a positive integer, not '$SIZE_MIB'"
if ! [[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || ((ROUNDS > 20)); then
  bench_die "ROUNDS must be 1..20, not '$ROUNDS'"
fi
# curl alone at 16 MiB/s needs SIZE/16 s; allow twice that plus slack.
default_timeout=$((2 * SIZE_MIB / RATE_MIB + 30))
((default_timeout < 120)) && default_timeout=120
TIMEOUT=${TIMEOUT:-$default_timeout}
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || bench_die "TIMEOUT must be a positive integer (seconds)"
for t in $TOOLS; do
  case $t in shoal | shoal16 | aria2c | axel | curl | shoalpipe | curlpipe) ;; *) bench_die "unknown tool '$t' in TOOLS" ;; esac
done
for s in $SCENARIOS; do
  case $s in throttled | fast) ;; *) bench_die "unknown scenario '$s' in SCENARIOS" ;; esac
done
has_tool() { [[ " $TOOLS " == *" $1 "* ]]; }
has_scenario() { [[ " $SCENARIOS " == *" $1 "* ]]; }

SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))
IDEAL=$(awk -v s="$SIZE_MIB" -v c="$CONNS" -v r="$RATE_MIB" 'BEGIN { printf "%.3f", s / (c * r) }')

mkdir -p "$WORK" "$BENCH_DIR/out"
WORK=$(cd "$WORK" && pwd)

# ----------------------------------------------------------------------------- tools
needs=(nginx:nginx-light curl:curl /usr/bin/time:time timeout:coreutils sha256sum:coreutils)
has_tool aria2c && needs+=(aria2c:aria2)
has_tool axel && needs+=(axel:axel)
bench_need "${needs[@]}"

if has_tool shoal || has_tool shoal16 || has_tool shoalpipe; then
  SHOAL_DESC=""
  if [[ -z "${SHOAL:-}" ]]; then
    SHOAL_DESC="built from $(cd "$REPO" && git describe --always --dirty 2>/dev/null || echo '?')"
    cargo_bin=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
    [[ -x "$cargo_bin" ]] || bench_die "cargo not found (or set SHOAL=path/to/shoal)"
    bench_log "building: cargo build --release -p shoal"
    (cd "$REPO" && timeout 3600 "$cargo_bin" build --release -p shoal) ||
      bench_die "cargo build --release -p shoal failed (SHOAL=path/to/shoal benchmarks a binary you have)"
    SHOAL="${CARGO_TARGET_DIR:-$REPO/target}/release/shoal"
  fi
  [[ -x "$SHOAL" ]] || bench_die "shoal binary '$SHOAL' is not executable"
  SHOAL_DESC="$("$SHOAL" --version 2>/dev/null | head -n 1 || true)${SHOAL_DESC:+, $SHOAL_DESC}"
  # A snapshot, so that a rebuild in the work tree during the benchmark cannot swap binaries.
  mkdir -p "$WORK/bin"
  cp -f "$SHOAL" "$WORK/bin/shoal"
  SHOAL=$WORK/bin/shoal
  SHOAL_DESC+=", sha256 $(sha256sum "$SHOAL" | cut -c1-12)"
fi

tool_label() {
  case $1 in
    shoal) echo "shoal" ;;
    shoal16) echo "shoal -c $CONNS" ;;
    aria2c) echo "aria2c -x$CONNS -s$CONNS -k1M" ;;
    axel) echo "axel -n $CONNS" ;;
    curl) echo "curl" ;;
    shoalpipe) echo "shoal -c $CONNS -o - \| sha256sum" ;;
    curlpipe) echo "curl \| sha256sum" ;;
  esac
}

# Whether TOOL streams to stdout: its output file holds `sha256sum`'s line, not the file.
is_pipe() { [[ $1 == *pipe ]]; }

# tool_cmd TOOL OUTFILE URL: sets CMD (array).
tool_cmd() {
  local out=$2 url=$3
  case $1 in
    shoal) CMD=("$SHOAL" get -q -o "$out" "$url") ;;
    shoal16) CMD=("$SHOAL" get -c "$CONNS" -q -o "$out" "$url") ;;
    # --no-conf: ignore ~/.aria2/aria2.conf; --file-allocation=none: no zero-filling before
    # the download (aria2c's default "prealloc" writes the whole file first; "none" is its
    # fastest setting and what speed guides recommend).
    aria2c) CMD=(aria2c --no-conf=true -q "-x$CONNS" "-s$CONNS" -k1M --file-allocation=none
      --allow-overwrite=true --auto-file-renaming=false
      -d "$(dirname "$out")" -o "$(basename "$out")" "$url") ;;
    axel) CMD=(axel -q -n "$CONNS" -o "$out" "$url") ;;
    # -q first: ignore ~/.curlrc; --fail: an HTTP error is an error.
    curl) CMD=(curl -q -sS --fail -o "$out" "$url") ;;
    # Streamed to stdout, hashed on the way: what a user piping the file into another tool
    # waits for. aria2c has no such mode (its -o names a file; it cannot write to stdout).
    shoalpipe) CMD=(bash -c 'set -o pipefail; "$0" get -c "$1" -q -o - "$2" | sha256sum >"$3"'
      "$SHOAL" "$CONNS" "$url" "$out") ;;
    curlpipe) CMD=(bash -c 'set -o pipefail; curl -q -sS --fail "$0" | sha256sum >"$1"'
      "$url" "$out") ;;
  esac
}

tool_version() {
  case $1 in
    shoal | shoal16 | shoalpipe) echo "$SHOAL_DESC" ;;
    aria2c) aria2c --version 2>/dev/null | head -n 1 ;;
    axel) axel --version 2>/dev/null | head -n 1 ;;
    curl | curlpipe) curl --version 2>/dev/null | head -n 1 | cut -d' ' -f1-2 ;;
  esac
}

# ----------------------------------------------------------------------------- files
mkdir -p "${OUT_DIR:-$WORK}"
# Only a directory of our own is ever emptied or removed, whatever OUT_DIR points at.
OUT_DIR=$(mktemp -d "$(cd "${OUT_DIR:-$WORK}" && pwd)/shoal-http-dl.XXXXXX")
bench_cleanup_add "rm -rf $(printf %q "$OUT_DIR")"
OUT_FS=$(df -PT "$OUT_DIR" | awk 'NR == 2 { print $2 }')
LOG_DIR=$WORK/logs # this run's tool output, <scenario>-<tool>-r<round>.txt (+ .time)
rm -rf "$LOG_DIR"
mkdir -p "$LOG_DIR"
bench_source_file "$WORK" "$SIZE_MIB"

# ----------------------------------------------------------------------------- nginx
NGINX_DIR=$WORK/nginx
body="
    location /throttled/ { alias $SRC_DIR/; limit_rate ${RATE_MIB}m; }
    location /fast/ { alias $SRC_DIR/; }"
PORT=""
for attempt in 1 2 3 4 5; do
  p=$(bench_free_port)
  if bench_nginx_start http "$NGINX_DIR" "127.0.0.1:$p" "$body"; then
    PORT=$p
    break
  fi
  bench_log "nginx start attempt $attempt failed, trying another port"
done
[[ -n "$PORT" ]] || bench_die "nginx would not start (see $NGINX_DIR/error.log)"
NGINX_VERSION=$(nginx -v 2>&1 | sed 's/^nginx version: //')
bench_log "nginx ($NGINX_VERSION) on 127.0.0.1:$PORT, files in $SRC_DIR"

url_for() { echo "http://127.0.0.1:$PORT/$1/$SRC_NAME"; }

# Sanity: both locations serve the file with ranges and the right length.
for s in throttled fast; do
  hdr=$(timeout 10 curl -q -sS -r 0-0 -D - -o /dev/null "$(url_for "$s")") ||
    bench_die "nginx does not answer $(url_for "$s")"
  grep -qi "^content-range: bytes 0-0/$SIZE_BYTES" <<<"$hdr" ||
    bench_die "nginx did not answer a range request for /$s/ with 206 and length $SIZE_BYTES: $hdr"
done

# ----------------------------------------------------------------------------- run
declare -A TIMES=() RSS=() OKS=() FAILS=() WRONG=()
WRONG_ANY=0
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
read -r -a tool_list <<<"$TOOLS"
ntools=${#tool_list[@]}

for sc in $SCENARIOS; do
  url=$(url_for "$sc")
  for ((r = 1; r <= ROUNDS; r++)); do
    # Round-robin, the order rotated every round, so no tool always runs first or last.
    for ((k = 0; k < ntools; k++)); do
      t=${tool_list[$(((k + r - 1) % ntools))]}
      key="$sc|$t"
      find "$OUT_DIR" -mindepth 1 -delete
      timeout 60 sync -f "$OUT_DIR" 2>/dev/null || true
      out=$OUT_DIR/$t.bin
      tool_cmd "$t" "$out" "$url"
      log=$LOG_DIR/$sc-$t-r$r.txt
      bench_measure "$TIMEOUT" "$log" "${CMD[@]}"
      fail=""
      if ((BENCH_RC == 124 || BENCH_RC == 137)); then
        fail="timed out after ${TIMEOUT}s"
      elif ((BENCH_RC > 128)); then
        fail="killed by SIG$(kill -l $((BENCH_RC - 128)) 2>/dev/null || echo "$((BENCH_RC - 128))")"
      elif ((BENCH_RC != 0)); then
        fail="exit $BENCH_RC"
      elif [[ ! -f "$out" ]]; then
        fail="exit 0 but no output file"
      elif is_pipe "$t"; then
        # Every round: the hash is computed anyway.
        sha=$(cut -d' ' -f1 "$out")
        [[ "$sha" == "$SRC_SHA" ]] || fail="WRONG FILE: streamed sha256 $sha, expected $SRC_SHA"
      else
        got=$(stat -c %s "$out")
        if ((got != SIZE_BYTES)); then
          fail="WRONG FILE: $got bytes, expected $SIZE_BYTES"
        elif ((r == 1)); then
          sha=$(sha256sum "$out" | cut -d' ' -f1)
          [[ "$sha" == "$SRC_SHA" ]] || fail="WRONG FILE: sha256 $sha, expected $SRC_SHA"
        fi
      fi
      label=$(tool_label "$t")
      if [[ -z "$fail" ]]; then
        TIMES[$key]="${TIMES[$key]:-} $BENCH_SECS"
        OKS[$key]=$((${OKS[$key]:-0} + 1))
        if [[ -n "$BENCH_RSS" ]] && ((BENCH_RSS > ${RSS[$key]:-0})); then
          RSS[$key]=$BENCH_RSS
        fi
        bench_log "$sc r$r/$ROUNDS $label: ${BENCH_SECS} s, peak RSS $(bench_kib_to_mib "$BENCH_RSS") MiB"
      else
        FAILS[$key]="${FAILS[$key]:+${FAILS[$key]}; }r$r: $fail"
        last=$(tail -n 2 "$log" 2>/dev/null | tr '\n' ' ' | cut -c1-200)
        if [[ "$fail" == WRONG* ]]; then
          WRONG[$key]=1
          WRONG_ANY=1
          printf '\n[bench] !!!!!!!! %s (%s, round %d) %s !!!!!!!!\n\n' "$label" "$sc" "$r" "$fail" >&2
        else
          bench_log "$sc r$r/$ROUNDS $label: FAIL ($fail) ${last:+— $last}"
        fi
      fi
    done
  done
done
find "$OUT_DIR" -mindepth 1 -delete
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ----------------------------------------------------------------------------- report
# stat_of SCENARIO TOOL: sets MED MIN MAX (or "-").
stat_of() {
  local -a v
  read -r -a v <<<"${TIMES[$1|$2]:-}"
  if ((${#v[@]} == 0)); then
    MED="-" MIN="-" MAX="-"
    return
  fi
  MED=$(bench_median "${v[@]}")
  MIN=$(bench_min "${v[@]}")
  MAX=$(bench_max "${v[@]}")
}

scenario_name() {
  case $1 in throttled) echo throttled ;; fast) echo unthrottled ;; esac
}

scenario_title() {
  case $1 in
    throttled) echo "throttled: nginx \`limit_rate ${RATE_MIB}m\` per connection, ideal $SIZE_MIB MiB / ($CONNS × $RATE_MIB MiB/s) = $IDEAL s" ;;
    fast) echo "unthrottled: nginx without a rate limit, on loopback" ;;
  esac
}

report_table() {
  local sc=$1 t aria curl_med curl_pipe_med ideal_col="" ideal_sep="" cells
  stat_of "$sc" aria2c
  aria=$MED
  stat_of "$sc" curl
  curl_med=$MED
  stat_of "$sc" curlpipe
  curl_pipe_med=$MED
  if [[ $sc == throttled ]]; then
    ideal_col=" vs ideal |"
    ideal_sep="---:|"
  fi
  echo "### $(scenario_title "$sc")"
  echo
  echo "| tool | median s | min s | max s | vs aria2c | vs curl |$ideal_col peak RSS MiB | runs ok |"
  echo "|---|---:|---:|---:|---:|---:|$ideal_sep---:|---:|"
  for t in "${tool_list[@]}"; do
    stat_of "$sc" "$t"
    local ok=${OKS[$sc|$t]:-0}
    if [[ -n "${WRONG[$sc|$t]:-}" ]]; then
      cells="| WRONG FILE | - | - | - | - |${ideal_col:+ - |} - |"
    elif [[ $MED == "-" ]]; then
      cells="| FAIL | - | - | - | - |${ideal_col:+ - |} - |"
    else
      # A streamed row is compared with curl streaming into the same sha256sum.
      local vs_curl=$curl_med
      is_pipe "$t" && vs_curl=$curl_pipe_med
      cells="| $MED | $MIN | $MAX | $(bench_ratio "$MED" "$aria") | $(bench_ratio "$MED" "$vs_curl") |"
      [[ -n "$ideal_col" ]] && cells+=" $(bench_ratio "$MED" "$IDEAL") |"
      cells+=" $(bench_kib_to_mib "${RSS[$sc|$t]:-}") |"
    fi
    echo "| $(tool_label "$t") $cells $ok/$ROUNDS |"
  done
  local any=0
  for t in "${tool_list[@]}"; do
    if [[ -n "${FAILS[$sc|$t]:-}" ]]; then
      ((any)) || echo
      any=1
      echo "- $(tool_label "$t") failed: ${FAILS[$sc|$t]}"
    fi
  done
  echo
}

# verdict OK? TEXT
verdict() {
  if [[ $1 == pass ]]; then echo "- PASS — $2"; else echo "- MISS — $2"; fi
}

# target_ratio SCENARIO TOOL REF_NAME REF_VALUE LIMIT
target_ratio() {
  local sc=$1 t=$2 ref_name=$3 ref=$4 limit=$5 what ratio
  stat_of "$sc" "$t"
  what="$(scenario_name "$sc"): $(tool_label "$t") ≤ $limit × $ref_name"
  if [[ -n "${WRONG[$sc|$t]:-}" ]]; then
    verdict miss "$what: $(tool_label "$t") wrote a wrong file"
  elif [[ $MED == "-" ]]; then
    verdict miss "$what: no successful $(tool_label "$t") run"
  elif [[ $ref == "-" ]]; then
    verdict miss "$what: no $ref_name time to compare with"
  else
    ratio=$(bench_ratio "$MED" "$ref")
    if bench_le "$ratio" "$limit"; then
      verdict pass "$what: $MED s vs $ref s = $ratio ×"
    else
      verdict miss "$what: $MED s vs $ref s = $ratio × (needs ≤ $(awk -v r="$ref" -v l="$limit" 'BEGIN { printf "%.3f", r * l }') s)"
    fi
  fi
}

report_targets() {
  local lines
  lines=$(target_lines)
  echo "### Targets"
  echo
  echo "${lines:-- (none applies to the tools and scenarios run)}"
  echo
}

target_lines() {
  if has_scenario throttled; then
    for t in shoal shoal16; do
      has_tool "$t" || continue
      target_ratio throttled "$t" ideal "$IDEAL" 1.05
      if has_tool aria2c; then
        stat_of throttled aria2c
        target_ratio throttled "$t" aria2c "$MED" 0.7
      fi
    done
  fi
  if has_scenario fast && has_tool shoal && has_tool curl; then
    stat_of fast curl
    target_ratio fast shoal curl "$MED" 1.1
  fi
  if has_tool shoal16; then
    local sc parts="" worst=0 kib seen=0 bad=0
    for sc in $SCENARIOS; do
      kib=${RSS[$sc|shoal16]:-}
      if [[ -z "$kib" || -n "${WRONG[$sc|shoal16]:-}" ]]; then
        parts+="${parts:+, }$(scenario_name "$sc"): no successful run"
        bad=1
      else
        parts+="${parts:+, }$(scenario_name "$sc"): $(bench_kib_to_mib "$kib") MiB"
        seen=1
        ((kib > worst)) && worst=$kib
      fi
    done
    if ((seen && !bad && worst <= 32 * 1024)); then
      verdict pass "peak RSS of $(tool_label shoal16) ≤ 32 MiB: $parts"
    else
      verdict miss "peak RSS of $(tool_label shoal16) ≤ 32 MiB: $parts"
    fi
  fi
}

report() {
  local t
  echo "## shoal HTTP benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- file: $SIZE_MIB MiB of random data (sha256 ${SRC_SHA:0:16}…), served by $NGINX_VERSION on 127.0.0.1 (worker_processes auto, sendfile on), page cache warmed before the first run"
  echo "- $ROUNDS round$( ((ROUNDS == 1)) || echo s) per tool per scenario, round-robin with the order rotated each round; wall time from \`date +%s%N\` around each command; median/min/max over successful runs; peak RSS = largest \"Maximum resident set size\" from \`/usr/bin/time -v\`; each command under \`timeout $TIMEOUT\`; every output size-checked, first round of each scenario sha256-checked; outputs in $OUT_DIR ($OUT_FS), deleted before every run"
  echo "- machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r); load average $LOAD_START at start, $LOAD_END at end"
  echo "- ratios are time / reference time: below 1 is faster; the \`| sha256sum\` rows are compared with \`curl | sha256sum\`"
  echo "- commands (DIR/OUT = output file, URL = http://127.0.0.1:PORT/{throttled,fast}/$SRC_NAME):"
  for t in "${tool_list[@]}"; do
    local -a CMD=()
    tool_cmd "$t" DIR/OUT URL
    CMD[0]=$(basename "${CMD[0]}")
    echo "  - $(tool_label "$t"): \`${CMD[*]}\` ($(tool_version "$t"))"
  done
  echo
  for sc in $SCENARIOS; do
    report_table "$sc"
  done
  report_targets
  if ((WRONG_ANY)); then
    echo "**A tool wrote a WRONG FILE: this benchmark run is invalid.**"
    echo
  fi
}

REPORT_FILE=$BENCH_DIR/out/http-$(date +%Y-%m-%d-%H%M%S).md
report >"$REPORT_FILE"
echo
cat "$REPORT_FILE"
bench_log "report written to ${REPORT_FILE#"$REPO"/}"

if ((WRONG_ANY)); then
  bench_die "a tool wrote a wrong file (see WRONG FILE above)"
fi
