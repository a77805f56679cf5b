#!/usr/bin/env bash
# bench/ui-load.sh — how long the tracker's /ui takes to show a big fleet in headless
# Chromium: a tracker with AGENTS agents holding CONTENTS contents (registered over the API),
# then ROUNDS page loads, each timed from navigation start to the first page of agents and
# contents drawn (50 rows each, with availability bars). Also the size of one event of the
# page's stream. Prints Markdown for bench/RESULTS.md. The target (issue 16): ≤ 1 s for 1,000
# agents and 10,000 contents.
#
# Knobs (environment): SHOAL=path (default: target/debug/shoal from `cargo build -p shoal`),
# AGENTS=1000 CONTENTS=10000 ROUNDS=5, PYTHON=a python with selenium (default: the venv
# scripts/test makes, ${CARGO_TARGET_DIR:-target}/python), WORK=dir, KEEP=1 (keep WORK).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
bench_init

if [[ -z "${SHOAL:-}" ]]; then
  (cd "$REPO" && cargo build -q -p shoal)
  SHOAL="${CARGO_TARGET_DIR:-$REPO/target}/debug/shoal"
fi
PYTHON=${PYTHON:-$(realpath -m "${CARGO_TARGET_DIR:-$REPO/target}/python/bin/python")}
"$PYTHON" -c 'import selenium' 2>/dev/null \
  || bench_die "$PYTHON has no selenium: run scripts/test once, or set PYTHON"
[[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]] \
  || bench_die "needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)"
WORK=${WORK:-$(mktemp -d)}
[[ -n "${KEEP:-}" ]] || bench_cleanup_add "rm -rf '$WORK'"

agent_secret=ui-agent-$RANDOM$RANDOM$RANDOM
reader_secret=ui-reader-$RANDOM$RANDOM$RANDOM
cat > "$WORK/tokens.toml" <<TOML
[[token]]
name = "fleet"
secret = "$agent_secret"
role = "agent"

[[token]]
name = "ops"
secret = "$reader_secret"
role = "reader"
TOML
chmod 600 "$WORK/tokens.toml"

port=$(bench_free_port)
# A long lease: the registered agents never heartbeat.
"$SHOAL" tracker --listen "127.0.0.1:$port" --data "$WORK/tracker" --tokens "$WORK/tokens.toml" \
  --lease 3600 2> "$WORK/tracker.log" &
tracker_pid=$!
bench_cleanup_add "bench_stop_pid $tracker_pid"
for _ in $(seq 100); do
  curl -s --noproxy "*" -o /dev/null "http://127.0.0.1:$port/healthz" && break
  sleep 0.1
done

"$PYTHON" "$BENCH_DIR/ui_load.py" "http://127.0.0.1:$port" "$agent_secret" "$reader_secret" \
  "${AGENTS:-1000}" "${CONTENTS:-10000}" "${ROUNDS:-5}"
kill -0 "$tracker_pid" 2>/dev/null || bench_die "the tracker died; see $WORK/tracker.log"
