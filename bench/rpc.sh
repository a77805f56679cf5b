#!/usr/bin/env bash
# bench/rpc.sh — the download daemon's RPC under a full queue: shoal agent against aria2c.
#
# Each daemon is started with an empty queue and its idle RSS read (/proc/PID/status VmRSS,
# after 2 s). Then 1,000 downloads are queued with one system.multicall: the first 5 (the
# concurrency cap of both) run against a local nginx that sends 64 KiB/s per connection, so
# they stay active, and 995 wait behind them. Then REQUESTS calls of aria2.tellActive, and as
# many of aria2.tellWaiting(0, 1000), each on one keep-alive HTTP connection, one at a time,
# are timed from the client (Python's http.client): the report gives the median and p99 in
# milliseconds, and the RSS with the full queue.
#
# Targets (issue 16): tellActive for 1,000 queued downloads in ≤ 10 ms; idle RSS ≤ 20 MiB.
#
# Knobs (environment):
#   QUEUED=1000    downloads queued
#   REQUESTS=500   timed calls per method
#   SHOAL=path     the shoal binary (default: ${CARGO_TARGET_DIR:-target}/release/shoal,
#                  built with `cargo build --release -p shoal` when missing)
#   TOOLS="shoal aria2c"
#   WORK=dir       nginx, daemons' data and logs (default bench/out/rpc-work)
#
# Exit status: 0 when the benchmark ran (missed targets are in the report), 1 when the harness
# could not run.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
bench_init

QUEUED=${QUEUED:-1000}
REQUESTS=${REQUESTS:-500}
TOOLS=${TOOLS:-"shoal aria2c"}
WORK=${WORK:-$BENCH_DIR/out/rpc-work}
SECRET=bench-rpc-secret
bench_need nginx:nginx-light python3:python3
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

if [[ -z "${SHOAL:-}" ]]; then
  SHOAL="${CARGO_TARGET_DIR:-$REPO/target}/release/shoal"
  [[ -x "$SHOAL" ]] || (cd "$REPO" && cargo build --release -p shoal)
fi
[[ -x "$SHOAL" ]] || bench_die "no shoal binary at $SHOAL"

# A 64 MiB file, sent at 64 KiB/s per connection: the active downloads stay active.
head -c $((64 << 20)) /dev/zero >"$WORK/file.bin"
NGINX_PORT=$(bench_free_port)
bench_nginx_start origin "$WORK/nginx" "127.0.0.1:$NGINX_PORT" \
  "location / { root $WORK; limit_rate 64k; }"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# wait_rpc PORT: until the RPC answers getVersion (bounded: 20 s).
wait_rpc() {
  local i
  for ((i = 0; i < 200; i++)); do
    if python3 "$WORK/client.py" ping "$1" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

cat >"$WORK/client.py" <<'EOF'
import http.client, json, statistics, sys, time

def call(conn, method, params):
    # system.multicall takes no secret of its own: each call in it carries one.
    secret = [] if method == "system.multicall" else ["token:" + SECRET]
    body = json.dumps({"jsonrpc": "2.0", "id": "b", "method": method, "params": secret + params})
    conn.request("POST", "/jsonrpc", body, {"Content-Type": "application/json"})
    answer = json.loads(conn.getresponse().read())
    if "error" in answer:
        raise SystemExit(f"{method}: {answer['error']}")
    return answer["result"]

what, port = sys.argv[1], int(sys.argv[2])
SECRET = "bench-rpc-secret"
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
if what == "ping":
    call(conn, "aria2.getVersion", [])
elif what == "fill":
    url, queued = sys.argv[3], int(sys.argv[4])
    calls = [{"methodName": "aria2.addUri",
              "params": ["token:" + SECRET, [f"{url}?n={i}"], {"out": f"f{i}.bin"}]}
             for i in range(queued)]
    results = call(conn, "system.multicall", [calls])
    bad = [r for r in results if not isinstance(r, list)]
    if bad:
        raise SystemExit(f"addUri failed: {bad[0]}")
    time.sleep(3)
    stat = call(conn, "aria2.getGlobalStat", [])
    print(stat["numActive"], stat["numWaiting"])
else:
    requests = int(sys.argv[3])
    for method, params in (("aria2.tellActive", []), ("aria2.tellWaiting", [0, 1000])):
        times = []
        for _ in range(requests):
            start = time.perf_counter()
            listed = call(conn, method, params)
            times.append((time.perf_counter() - start) * 1000)
        times.sort()
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        print(method, len(listed), f"{statistics.median(times):.3f}", f"{p99:.3f}")
EOF

results=()
for tool in $TOOLS; do
  port=$(bench_free_port)
  data="$WORK/$tool"
  rm -rf "$data"
  mkdir -p "$data/out"
  case $tool in
    shoal)
      printf '%s\n' "$SECRET" >"$data/secret"
      chmod 600 "$data/secret"
      "$SHOAL" agent --data "$data/data" --listen "127.0.0.1:$(bench_free_port)" \
        --rpc-listen "127.0.0.1:$port" --rpc-secret-file "$data/secret" --dir "$data/out" \
        >"$data/log" 2>&1 &
      ;;
    aria2c)
      command -v aria2c >/dev/null || { bench_warn "no aria2c: skipped"; continue; }
      aria2c --enable-rpc --rpc-listen-port="$port" --rpc-secret="$SECRET" --dir="$data/out" \
        --max-concurrent-downloads=5 --quiet >"$data/log" 2>&1 &
      ;;
    *) bench_die "unknown tool $tool" ;;
  esac
  pid=$!
  bench_cleanup_add "bench_stop_pid $pid"
  wait_rpc "$port" || bench_die "$tool's RPC did not answer on $port (see $data/log)"
  sleep 2
  idle=$(rss_kib "$pid")
  read -r active waiting < <(python3 "$WORK/client.py" fill "$port" \
    "http://127.0.0.1:$NGINX_PORT/file.bin" "$QUEUED")
  bench_log "$tool: $active active, $waiting waiting"
  while read -r method listed median p99; do
    results+=("$tool $method $listed $median $p99")
  done < <(python3 "$WORK/client.py" time "$port" "$REQUESTS")
  full=$(rss_kib "$pid")
  results+=("$tool rss $idle $full")
  bench_stop_pid "$pid"
done

printf '\n%-7s %-18s %7s %10s %9s\n' tool method listed "median ms" "p99 ms"
for line in "${results[@]}"; do
  read -r tool method a b c <<<"$line"
  if [[ $method == rss ]]; then
    printf '%-7s idle RSS %s KiB (%s MiB); with %s queued %s KiB\n' "$tool" "$a" \
      "$(awk -v k="$a" 'BEGIN { printf "%.1f", k / 1024 }')" "$QUEUED" "$b"
  else
    printf '%-7s %-18s %7s %10s %9s\n' "$tool" "$method" "$a" "$b" "$c"
  fi
done
