#!/usr/bin/env bash
# bench/abuse.sh — slow clients against shoal's servers: a tracker (GET /healthz) and an
# agent's piece server (GET /v1/pieces/ID with the agent token; a content it does not hold, so
# each answer is a cheap 404 after the token check), both on 127.0.0.1.
#
# For each server bench/abuse.py measures REQUESTS legitimate requests (one connection each)
# without, then with STALLED connections that each sent half a request head (spread over
# source addresses 127.0.0.2.., PER_ADDR each) and OVER more from one address, and reports
# when the server closed the stalled ones. Prints Markdown for bench/RESULTS.md.
#
# Knobs (environment): SHOAL=path (default: target/debug/shoal from `cargo build -p shoal`),
# REQUESTS=2000 CONCURRENCY=8 STALLED=3000 PER_ADDR=250 OVER=300 WATCH=45 (seconds),
# WORK=dir (servers' data and logs; default a temporary one), KEEP=1 (keep WORK).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
bench_init

# The client holds ~3,300 sockets at once plus the load's.
ulimit -n "$(ulimit -Hn)"
(( $(ulimit -n) >= 8192 )) || bench_die "ulimit -n is $(ulimit -n); need 8192 for the client side"

if [[ -z "${SHOAL:-}" ]]; then
  (cd "$REPO" && cargo build -q -p shoal)
  SHOAL="${CARGO_TARGET_DIR:-$REPO/target}/debug/shoal"
fi
WORK=${WORK:-$(mktemp -d)}
[[ -n "${KEEP:-}" ]] || bench_cleanup_add "rm -rf '$WORK'"

secret=abuse-$RANDOM$RANDOM
printf '%s\n' "$secret" > "$WORK/agent.token"
cat > "$WORK/tokens.toml" <<TOML
[[token]]
name = "abuse"
secret = "$secret"
role = "agent"
TOML
chmod 600 "$WORK/agent.token" "$WORK/tokens.toml"

wait_up() {
  local i
  for i in $(seq 100); do
    if curl -s --noproxy "*" -o /dev/null "http://127.0.0.1:$1/"; then return 0; fi
    sleep 0.1
  done
  bench_die "nothing listens on 127.0.0.1:$1"
}

tracker_port=$(bench_free_port)
"$SHOAL" tracker --listen "127.0.0.1:$tracker_port" --data "$WORK/tracker" \
  --tokens "$WORK/tokens.toml" 2> "$WORK/tracker.log" &
tracker_pid=$!
bench_cleanup_add "bench_stop_pid $tracker_pid"
wait_up "$tracker_port"

agent_port=$(bench_free_port)
"$SHOAL" agent --listen "127.0.0.1:$agent_port" --data "$WORK/agent" \
  --token-file "$WORK/agent.token" --id abuse 2> "$WORK/agent.log" &
agent_pid=$!
bench_cleanup_add "bench_stop_pid $agent_pid"
wait_up "$agent_port"

echo "### tracker: GET /healthz"
echo
python3 "$BENCH_DIR/abuse.py" 127.0.0.1 "$tracker_port" /healthz
echo
echo "### agent piece server: GET /v1/pieces/ID (404, after the token check)"
echo
python3 "$BENCH_DIR/abuse.py" 127.0.0.1 "$agent_port" "/v1/pieces/$(printf '%064d' 0)" \
  "Authorization: Bearer $secret"
for pid in $tracker_pid $agent_pid; do
  kill -0 "$pid" 2>/dev/null || bench_die "a server died; see $WORK/*.log"
done
