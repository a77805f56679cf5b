#!/usr/bin/env bash
# bench/mirrors.sh — one file from three mirrors of different speeds at once: shoal against
# aria2c, in the same run, with each mirror's curl speed as the reference.
#
# Three nginx origins serve the same random file (256 MiB by default), each in its own network
# namespace (shoal-m1..3) behind a veth on a bridge in the root namespace (shoalbr0,
# 10.200.0.1/24; the mirrors are 10.200.0.11..13). Each mirror's upload is capped by a `tc` tbf
# qdisc on its namespace's side of the veth: 100, 200 and 300 Mbit/s. The clients run in the root
# namespace. Nothing leaves this machine: the addresses exist only on the bridge and in the
# namespaces this script creates, and are removed at exit (also on failure and Ctrl-C).
#
# Each round runs, in a rotated order: curl from each mirror alone (to show the caps hold:
# ~12.5, 25 and 37.5 MB/s), aria2c with the three URLs, and shoal with the three URLs
# (`shoal get -q -o OUT URL1 URL2 URL3`; a shoal that does not take several URLs shows as FAIL).
# It prints a Markdown table (median/min/max seconds, median throughput, ratios to the caps and
# to aria2c) and PASS/MISS lines for the targets, and writes the report to
# bench/out/mirrors-<date>.md.
#
# Targets: shoal's three-mirror throughput ≥ 0.9 × the sum of the caps (540 Mbit/s), and shoal
# faster than aria2c in the same run.
#
# Knobs (environment):
#   SIZE_MIB=256     file size (SIZE_MIB=32 ROUNDS=1 for a quick check of the harness)
#   ROUNDS=3         rounds (1–20)
#   CAPS="100 200 300"   the three mirrors' upload caps, Mbit/s (tc: 1 Mbit = 10^6 bit)
#   SHOAL=path       use this shoal binary instead of building `cargo build --release -p shoal`
#   ARIA2_FLAGS="-x4 -s12 -k1M"   aria2c's split settings (why these: see below)
#   ROWS="curl1 curl2 curl3 split aria2c shoal"   which rows to run
#   TIMEOUT=secs     per command (default: twice the slowest mirror's curl time, plus 30)
#   WORK=dir         source file, nginx configs and logs, this run's tool logs in WORK/logs
#                    (default bench/out/mirrors-work)
#   OUT_DIR=dir      where the tools write (default WORK), in a fresh mktemp -d inside it
#
# Needs root (network namespaces, veths, a bridge, tc); refuses to run otherwise.
# Exit status: 0 when the benchmark ran (FAIL rows and missed targets are in the report), 1 when
# a tool wrote a wrong file or the harness itself could not run.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
export PATH="$PATH:/usr/sbin:/sbin"

if [[ $(id -u) -ne 0 ]]; then
  bench_die "bench/mirrors.sh must run as root: it creates network namespaces, veth pairs, a bridge and tc qdiscs (e.g. sudo bench/mirrors.sh)"
fi
bench_init

# The clients must reach the mirrors directly, never through a proxy from the environment.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

# ----------------------------------------------------------------------------- knobs
SIZE_MIB=${SIZE_MIB:-256}
ROUNDS=${ROUNDS:-3}
CAPS=${CAPS:-100 200 300}
# -x4: up to 4 connections per mirror; -s12: up to 12 connections in all (4 × 3 mirrors);
# -k1M: pieces down to 1 MiB, so the split is not limited by the default 20 MiB minimum. Tried
# on this setup (256 MiB, 5 rounds each, median s): -x4 -s12 -k1M 4.91, -x8 -s16 -k1M 4.84,
# -x16 -s16 -k1M 5.12, the same with --uri-selector=adaptive 4.94, -x4 -s12 -k1M with adaptive
# or inorder ~4.7 over 3 rounds, and the issue's minimum -x4 -s3 6.31: beyond -s3 they are all
# within noise of each other, so the plain recipe stays. aria2c's default URI selector
# (feedback) picks mirrors by the speeds it has seen. Like bench/http.sh, --no-conf=true and
# --file-allocation=none are always added.
ARIA2_FLAGS=${ARIA2_FLAGS:--x4 -s12 -k1M}
WORK=${WORK:-$BENCH_DIR/out/mirrors-work}
ROWS_WANTED=${ROWS:-curl1 curl2 curl3 split aria2c shoal}
for row in $ROWS_WANTED; do
  case $row in curl1 | curl2 | curl3 | split | aria2c | shoal) ;; *) bench_die "unknown row '$row' in ROWS" ;; esac
done
[[ -n "${ROWS_WANTED// /}" ]] || bench_die "ROWS names no row"

[[ "$SIZE_MIB" =~ ^[1-9][0-9]*$ ]] || bench_die "SIZE_MIB must be a positive integer, not '$SIZE_MIB'"
if ! [[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || ((ROUNDS > 20)); then
  bench_die "ROUNDS must be 1..20, not '$ROUNDS'"
fi
read -r -a CAP <<<"$CAPS"
((${#CAP[@]} == 3)) || bench_die "CAPS must name three rates in Mbit/s, not '$CAPS'"
for c in "${CAP[@]}"; do
  if ! [[ "$c" =~ ^[1-9][0-9]*$ ]] || ((c > 10000)); then
    bench_die "CAPS: '$c' is not a rate of 1..10000 Mbit/s"
  fi
done
CAP_SUM=$((CAP[0] + CAP[1] + CAP[2]))
CAP_MIN=$(printf '%s\n' "${CAP[@]}" | sort -n | head -n 1)
SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))
# The slowest mirror alone takes SIZE × 8 / cap seconds; allow twice that plus slack.
default_timeout=$(awk -v b="$SIZE_BYTES" -v c="$CAP_MIN" 'BEGIN { printf "%d", 2 * b * 8 / (c * 1e6) + 30 }')
TIMEOUT=${TIMEOUT:-$default_timeout}
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || bench_die "TIMEOUT must be a positive integer (seconds)"
read -r -a ARIA2_SPLIT <<<"$ARIA2_FLAGS"
# Every ip/tc/sysctl command is bounded.
T=(timeout 15)

# ----------------------------------------------------------------------------- tools
bench_need nginx:nginx-light curl:curl aria2c:aria2 ip:iproute2 tc:iproute2 \
  /usr/bin/time:time timeout:coreutils sha256sum:coreutils

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
mkdir -p "$WORK/bin" "$BENCH_DIR/out"
WORK=$(cd "$WORK" && pwd)
# A snapshot, so that a rebuild in the work tree during the benchmark cannot swap binaries.
cp -f "$SHOAL" "$WORK/bin/shoal"
SHOAL=$WORK/bin/shoal
SHOAL_DESC+=", sha256 $(sha256sum "$SHOAL" | cut -c1-12)"

# ----------------------------------------------------------------------------- network
BRIDGE=shoalbr0
BRIDGE_ADDR=10.200.0.1
NETS=(shoal-m1 shoal-m2 shoal-m3)
ADDRS=(10.200.0.11 10.200.0.12 10.200.0.13)
# veth ends: shoal-mNh on the bridge (root namespace), shoal-mNn inside namespace shoal-mN.
host_end() { echo "${NETS[$1]}h"; }
ns_end() { echo "${NETS[$1]}n"; }

# Removes everything this script creates, whatever is left of it; safe to run twice. Deleting a
# namespace deletes its veth end and so the pair; the host ends are deleted too in case a
# namespace is gone but its pair is not.
net_teardown() {
  local i pid
  for i in 0 1 2; do
    if "${T[@]}" ip netns list 2>/dev/null | grep -qw "^${NETS[i]}"; then
      # Only processes inside our own namespace: an nginx this script (or a killed earlier
      # run of it) started. A namespace with processes in it outlives `ip netns del`.
      for pid in $("${T[@]}" ip netns pids "${NETS[i]}" 2>/dev/null || true); do
        kill -KILL "$pid" 2>/dev/null || true
      done
      "${T[@]}" ip netns del "${NETS[i]}" 2>/dev/null || true
    fi
    "${T[@]}" ip link del "$(host_end "$i")" 2>/dev/null || true
  done
  "${T[@]}" ip link del "$BRIDGE" 2>/dev/null || true
}

net_setup() {
  local i
  # Leftovers of an earlier run that was killed too hard to clean up: the same names are ours.
  net_teardown
  if "${T[@]}" ip -4 route show to match "$BRIDGE_ADDR" | grep -qv '^default'; then
    bench_die "10.200.0.0/24 is already routed here ($("${T[@]}" ip -4 route show to match "$BRIDGE_ADDR" | grep -v '^default' | head -n 1)); this benchmark needs it for its bridge"
  fi
  "${T[@]}" ip link add "$BRIDGE" type bridge
  "${T[@]}" ip addr add "$BRIDGE_ADDR/24" dev "$BRIDGE"
  "${T[@]}" ip link set "$BRIDGE" up
  for i in 0 1 2; do
    "${T[@]}" ip netns add "${NETS[i]}"
    "${T[@]}" ip link add "$(host_end "$i")" type veth peer name "$(ns_end "$i")"
    "${T[@]}" ip link set "$(host_end "$i")" master "$BRIDGE"
    "${T[@]}" ip link set "$(host_end "$i")" up
    "${T[@]}" ip link set "$(ns_end "$i")" netns "${NETS[i]}"
    "${T[@]}" ip -n "${NETS[i]}" addr add "${ADDRS[i]}/24" dev "$(ns_end "$i")"
    "${T[@]}" ip -n "${NETS[i]}" link set lo up
    "${T[@]}" ip -n "${NETS[i]}" link set "$(ns_end "$i")" up
    # The cap: the mirror's egress, i.e. everything it sends to the clients.
    "${T[@]}" ip netns exec "${NETS[i]}" tc qdisc add dev "$(ns_end "$i")" root \
      tbf rate "${CAP[i]}mbit" burst 256kb latency 50ms
  done
}

bench_cleanup_add net_teardown
net_setup
bench_log "bridge $BRIDGE $BRIDGE_ADDR/24; mirrors ${ADDRS[*]} in namespaces ${NETS[*]}, capped at ${CAP[*]} Mbit/s"

# ----------------------------------------------------------------------------- files
mkdir -p "${OUT_DIR:-$WORK}"
# Only a directory of our own is ever emptied or removed, whatever OUT_DIR points at.
OUT_DIR=$(mktemp -d "$(cd "${OUT_DIR:-$WORK}" && pwd)/shoal-mirrors-dl.XXXXXX")
bench_cleanup_add "rm -rf $(printf %q "$OUT_DIR")"
OUT_FS=$(df -PT "$OUT_DIR" | awk 'NR == 2 { print $2 }')
LOG_DIR=$WORK/logs
rm -rf "$LOG_DIR"
mkdir -p "$LOG_DIR"
bench_source_file "$WORK" "$SIZE_MIB"

# ----------------------------------------------------------------------------- nginx
for i in 0 1 2; do
  # shellcheck disable=SC2034  # read by bench_nginx_start (bench/lib.sh)
  # No `timeout` here: nginx runs until the cleanup stops it (bounded, in bench_nginx_stop).
  BENCH_NGINX_PREFIX=(ip netns exec "${NETS[i]}")
  bench_nginx_start "m$((i + 1))" "$WORK/nginx-m$((i + 1))" "${ADDRS[i]}:80" \
    "location /files/ { alias $SRC_DIR/; }" ||
    bench_die "nginx in ${NETS[i]} would not start (see $WORK/nginx-m$((i + 1))/error.log)"
done
# shellcheck disable=SC2034  # read by bench_nginx_start (bench/lib.sh)
BENCH_NGINX_PREFIX=()
NGINX_VERSION=$(nginx -v 2>&1 | sed 's/^nginx version: //')

URLS=()
for i in 0 1 2; do
  URLS+=("http://${ADDRS[i]}/files/$SRC_NAME")
  hdr=$(timeout 10 curl -q -sS -r 0-0 -D - -o /dev/null "${URLS[i]}") ||
    bench_die "mirror ${NETS[i]} does not answer ${URLS[i]}"
  grep -qi "^content-range: bytes 0-0/$SIZE_BYTES" <<<"$hdr" ||
    bench_die "mirror ${NETS[i]} did not answer a range request with 206 and length $SIZE_BYTES: $hdr"
done
bench_log "nginx ($NGINX_VERSION) serving $SRC_NAME at ${URLS[*]}"

# ----------------------------------------------------------------------------- rows
read -r -a ROWS <<<"$ROWS_WANTED"

row_label() {
  case $1 in
    curl[123]) echo "curl, mirror ${1#curl} alone (${CAP[${1#curl} - 1]} Mbit)" ;;
    split) echo "3 curls at once, static split by cap (reference)" ;;
    aria2c) echo "aria2c ${ARIA2_FLAGS}, 3 mirrors" ;;
    shoal) echo "shoal, 3 mirrors" ;;
  esac
}

# The cap a row is compared with: its mirror's, or the sum of the three.
row_cap() {
  case $1 in
    curl[123]) echo "${CAP[${1#curl} - 1]}" ;;
    *) echo "$CAP_SUM" ;;
  esac
}

# row_cmd ROW OUTFILE: sets CMD (array).
row_cmd() {
  local out=$2
  case $1 in
    # -q first: ignore ~/.curlrc; --fail: an HTTP error is an error.
    curl[123]) CMD=(curl -q -sS --fail -o "$out" "${URLS[${1#curl} - 1]}") ;;
    # --no-conf: ignore ~/.aria2/aria2.conf; --file-allocation=none: no zero-filling first.
    # Several URIs on one command line are mirrors of one file to aria2c.
    aria2c) CMD=(aria2c --no-conf=true -q "${ARIA2_SPLIT[@]}" --file-allocation=none
      --allow-overwrite=true --auto-file-renaming=false
      -d "$(dirname "$out")" -o "$(basename "$out")" "${URLS[@]}") ;;
    shoal) CMD=("$SHOAL" get -q -o "$out" "${URLS[@]}") ;;
    # What a client that knew the caps in advance would do: one connection per mirror, each
    # fetching the share of the file its cap is of the sum, written in place at its offset
    # (one write per byte, like the others). It shows what this network allows.
    split) CMD=(bash -c "$SPLIT_SCRIPT" split "$out" "${URLS[@]}" "${SPLIT_AT[@]}" "$SIZE_BYTES") ;;
  esac
}

# Offsets where the static split cuts the file: after the first mirror's share and the second's.
SPLIT_AT=(
  "$(awk -v b="$SIZE_BYTES" -v a="${CAP[0]}" -v t="$CAP_SUM" 'BEGIN { printf "%d", b * a / t }')"
  "$(awk -v b="$SIZE_BYTES" -v a="$((CAP[0] + CAP[1]))" -v t="$CAP_SUM" 'BEGIN { printf "%d", b * a / t }')"
)
# Arguments: OUT URL1 URL2 URL3 CUT1 CUT2 SIZE. Fails if any part fails; the outer timeout
# (bench_measure) bounds it, and its TERM reaches the children through the process group.
# shellcheck disable=SC2016  # expanded by the inner bash
SPLIT_SCRIPT='
set -euo pipefail
out=$1; starts=(0 "$5" "$6"); ends=("$(($5 - 1))" "$(($6 - 1))" "$(($7 - 1))")
: >"$out"
pids=()
for i in 0 1 2; do
  url=${*:2+i:1}
  curl -q -sS --fail -r "${starts[i]}-${ends[i]}" "$url" |
    dd of="$out" bs=1M seek="${starts[i]}" oflag=seek_bytes conv=notrunc iflag=fullblock status=none &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit "$rc"
'

# ----------------------------------------------------------------------------- run
declare -A TIMES=() OKS=() FAILS=() WRONG=() SHARES=()
LOG_MARK=(0 0 0)

# mirror_shares: sets SHARE to "a/b/c", the percentages of the bytes the three mirrors sent
# (nginx $bytes_sent, the field before rt= in bench/lib.sh's log format) since LOG_MARK.
mirror_shares() {
  local i bytes=() total=0
  for i in 0 1 2; do
    bytes[i]=$(tail -n "+$((LOG_MARK[i] + 1))" "$WORK/nginx-m$((i + 1))/access.log" |
      awk '{ for (f = 2; f <= NF; f++) if ($f ~ /^rt=/) { s += $(f - 1); break } } END { printf "%d", s }')
    total=$((total + bytes[i]))
  done
  if ((total == 0)); then
    SHARE="0/0/0"
    return
  fi
  SHARE=$(awk -v a="${bytes[0]}" -v b="${bytes[1]}" -v c="${bytes[2]}" -v t="$total" \
    'BEGIN { printf "%.0f/%.0f/%.0f", 100 * a / t, 100 * b / t, 100 * c / t }')
}

# mean_shares ROW: the mean of the row's per-run shares, "a/b/c" (or "-").
mean_shares() {
  # shellcheck disable=SC2086  # one word per run
  printf '%s\n' ${SHARES[$1]:-} | awk -F/ '{ a += $1; b += $2; c += $3; n++ }
    END { if (n) printf "%.0f/%.0f/%.0f", a / n, b / n, c / n; else print "-" }'
}
WRONG_ANY=0
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
nrows=${#ROWS[@]}
mbit() { awk -v b="$SIZE_BYTES" -v s="$1" 'BEGIN { if (s + 0 == 0) print "-"; else printf "%.1f", b * 8 / s / 1e6 }'; }

for ((r = 1; r <= ROUNDS; r++)); do
  # Round-robin, the order rotated every round, so no row always runs first or last.
  for ((k = 0; k < nrows; k++)); do
    row=${ROWS[$(((k + r - 1) % nrows))]}
    find "$OUT_DIR" -mindepth 1 -delete
    timeout 60 sync -f "$OUT_DIR" 2>/dev/null || true
    out=$OUT_DIR/$row.bin
    row_cmd "$row" "$out"
    log=$LOG_DIR/$row-r$r.txt
    for i in 0 1 2; do
      LOG_MARK[i]=$(wc -l <"$WORK/nginx-m$((i + 1))/access.log")
    done
    bench_measure "$TIMEOUT" "$log" "${CMD[@]}"
    mirror_shares
    fail=""
    if ((BENCH_RC == 124 || BENCH_RC == 137)); then
      fail="timed out after ${TIMEOUT}s"
    elif ((BENCH_RC > 128)); then
      fail="killed by SIG$(kill -l $((BENCH_RC - 128)) 2>/dev/null || echo "$((BENCH_RC - 128))")"
    elif ((BENCH_RC != 0)); then
      fail="exit $BENCH_RC"
    elif [[ ! -f "$out" ]]; then
      fail="exit 0 but no output file"
    else
      got=$(stat -c %s "$out")
      if ((got != SIZE_BYTES)); then
        fail="WRONG FILE: $got bytes, expected $SIZE_BYTES"
      elif ((r == 1)); then
        sha=$(sha256sum "$out" | cut -d' ' -f1)
        [[ "$sha" == "$SRC_SHA" ]] || fail="WRONG FILE: sha256 $sha, expected $SRC_SHA"
      fi
    fi
    label=$(row_label "$row")
    if [[ -z "$fail" ]]; then
      TIMES[$row]="${TIMES[$row]:-} $BENCH_SECS"
      OKS[$row]=$((${OKS[$row]:-0} + 1))
      SHARES[$row]="${SHARES[$row]:-} $SHARE"
      bench_log "r$r/$ROUNDS $label: $BENCH_SECS s, $(mbit "$BENCH_SECS") Mbit/s; bytes sent by m1/m2/m3: $SHARE %"
    else
      last=$(tail -n 2 "$log" 2>/dev/null | tr '\n' ' ' | cut -c1-200)
      # The first error line says most (clap, curl and aria2c all start theirs so).
      why=$(grep -m 1 -iE '^(error|curl:|.*exception)' "$log" 2>/dev/null | cut -c1-160 || true)
      FAILS[$row]="${FAILS[$row]:+${FAILS[$row]}; }r$r: $fail${why:+ ($why)}"
      if [[ "$fail" == WRONG* ]]; then
        WRONG[$row]=1
        WRONG_ANY=1
        printf '\n[bench] !!!!!!!! %s (round %d) %s !!!!!!!!\n\n' "$label" "$r" "$fail" >&2
      else
        bench_log "r$r/$ROUNDS $label: FAIL ($fail)${last:+ — $last}"
      fi
    fi
  done
done
find "$OUT_DIR" -mindepth 1 -delete
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ----------------------------------------------------------------------------- report
# stat_of ROW: sets MED MIN MAX (seconds, or "-").
stat_of() {
  local -a v
  read -r -a v <<<"${TIMES[$1]:-}"
  if ((${#v[@]} == 0)); then
    MED="-" MIN="-" MAX="-"
    return
  fi
  MED=$(bench_median "${v[@]}")
  MIN=$(bench_min "${v[@]}")
  MAX=$(bench_max "${v[@]}")
}

report_table() {
  local row aria rate
  stat_of aria2c
  aria=$MED
  echo "| row | median s | min s | max s | Mbit/s (median) | vs cap | vs aria2c | bytes from m1/m2/m3 % | runs ok |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for row in "${ROWS[@]}"; do
    stat_of "$row"
    if [[ -n "${WRONG[$row]:-}" ]]; then
      echo "| $(row_label "$row") | WRONG FILE | - | - | - | - | - | - | ${OKS[$row]:-0}/$ROUNDS |"
    elif [[ $MED == "-" ]]; then
      echo "| $(row_label "$row") | FAIL | - | - | - | - | - | - | 0/$ROUNDS |"
    else
      rate=$(mbit "$MED")
      echo "| $(row_label "$row") | $MED | $MIN | $MAX | $rate | $(bench_ratio "$rate" "$(row_cap "$row")") | $(bench_ratio "$MED" "$aria") | $(mean_shares "$row") | ${OKS[$row]:-0}/$ROUNDS |"
    fi
  done
  local any=0
  for row in "${ROWS[@]}"; do
    if [[ -n "${FAILS[$row]:-}" ]]; then
      ((any)) || echo
      any=1
      echo "- $(row_label "$row") failed: ${FAILS[$row]}"
    fi
  done
  echo
}

verdict() {
  if [[ $1 == pass ]]; then echo "- PASS — $2"; else echo "- MISS — $2"; fi
}

report_targets() {
  local want rate aria ratio
  want=$(awk -v s="$CAP_SUM" 'BEGIN { printf "%.0f", 0.9 * s }')
  echo "### Targets"
  echo
  stat_of aria2c
  aria=$MED
  stat_of shoal
  if [[ -n "${WRONG[shoal]:-}" ]]; then
    verdict miss "shoal, 3 mirrors ≥ 0.9 × $CAP_SUM = $want Mbit/s: shoal wrote a wrong file"
    verdict miss "shoal faster than aria2c: shoal wrote a wrong file"
  elif [[ $MED == "-" ]]; then
    verdict miss "shoal, 3 mirrors ≥ 0.9 × $CAP_SUM = $want Mbit/s: no successful shoal run"
    verdict miss "shoal faster than aria2c: no successful shoal run"
  else
    rate=$(mbit "$MED")
    if bench_le "$want" "$rate"; then
      verdict pass "shoal, 3 mirrors ≥ 0.9 × $CAP_SUM = $want Mbit/s: $rate Mbit/s ($MED s)"
    else
      verdict miss "shoal, 3 mirrors ≥ 0.9 × $CAP_SUM = $want Mbit/s: $rate Mbit/s ($MED s)"
    fi
    if [[ $aria == "-" ]]; then
      verdict miss "shoal faster than aria2c: no successful aria2c run to compare with"
    else
      ratio=$(bench_ratio "$MED" "$aria")
      if awk -v a="$MED" -v b="$aria" 'BEGIN { exit !(a + 0 < b + 0) }'; then
        verdict pass "shoal faster than aria2c: $MED s vs $aria s = $ratio ×"
      else
        verdict miss "shoal faster than aria2c: $MED s vs $aria s = $ratio ×"
      fi
    fi
  fi
  if [[ $aria != "-" ]]; then
    echo "- (for reference: aria2c reached $(mbit "$aria") Mbit/s, $(bench_ratio "$(mbit "$aria")" "$CAP_SUM") × the sum of the caps)"
  fi
  echo
}

report() {
  echo "## shoal mirrors benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- file: $SIZE_MIB MiB of random data (sha256 ${SRC_SHA:0:16}…), served by $NGINX_VERSION (sendfile on) from three network namespaces, page cache warmed first"
  echo "- mirrors: ${URLS[0]%/files/*} capped at ${CAP[0]} Mbit/s, ${URLS[1]%/files/*} at ${CAP[1]}, ${URLS[2]%/files/*} at ${CAP[2]} (tc tbf on each mirror's egress, burst 256kb, latency 50ms; 1 Mbit = 10^6 bit); sum of caps $CAP_SUM Mbit/s; clients in the root namespace through bridge $BRIDGE"
  echo "- $ROUNDS round$( ((ROUNDS == 1)) || echo s), rows round-robin with the order rotated each round; wall time from \`date +%s%N\` around each command under \`timeout $TIMEOUT\`; median/min/max over successful runs; every output size-checked, round 1 sha256-checked; outputs in $OUT_DIR ($OUT_FS)"
  echo "- Mbit/s = file bytes × 8 / median seconds / 10^6 (payload; TCP/IP headers take ~4% of a capped link, so ~0.96 × cap is the most one can see); vs cap = that over the mirror's cap (curl rows) or the sum of caps (3-mirror rows); vs aria2c = median time / aria2c's, below 1 is faster; bytes from m1/m2/m3 = each mirror's share of the bytes nginx sent during the row's runs (mean over runs; with caps ${CAP[0]}/${CAP[1]}/${CAP[2]} the ideal split is $(awk -v a="${CAP[0]}" -v b="${CAP[1]}" -v c="${CAP[2]}" 'BEGIN { t = a + b + c; printf "%.0f/%.0f/%.0f", 100 * a / t, 100 * b / t, 100 * c / t }'); bytes sent twice or cut off count too)"
  echo "- machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r); load average $LOAD_START at start, $LOAD_END at end"
  echo "- commands (URLn = http://10.200.0.1n/files/$SRC_NAME):"
  echo "  - curl: \`curl -q -sS --fail -o OUT URLn\` — $(curl --version 2>/dev/null | head -n 1 | cut -d' ' -f1-2)"
  echo "  - aria2c: \`aria2c --no-conf=true -q $ARIA2_FLAGS --file-allocation=none --allow-overwrite=true --auto-file-renaming=false -d DIR -o OUT URL1 URL2 URL3\` — $(aria2c --version 2>/dev/null | head -n 1)"
  echo "  - shoal: \`shoal get -q -o OUT URL1 URL2 URL3\` — $SHOAL_DESC"
  echo
  report_table
  report_targets
}

STAMP=$(date -u '+%Y-%m-%d-%H%M%S')
REPORT=$BENCH_DIR/out/mirrors-$STAMP.md
report | tee "$REPORT"
bench_log "report written to $REPORT; tool logs in $LOG_DIR"
if ((WRONG_ANY)); then
  bench_warn "a tool wrote a WRONG FILE (see above)"
  exit 1
fi
