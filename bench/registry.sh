#!/usr/bin/env bash
# shellcheck disable=SC2317  # cleanups and command builders are called indirectly
# bench/registry.sh — N machines pull the same container image at once: through their agents'
# registry mirrors (skopeo with a registries.conf mirror) against N pulls straight from the
# registry, next to the fluid lower bound of the network.
#
#   bench/registry.sh N RATE SIZE        e.g. bench/registry.sh 6 200mbit 256M
#
# Hosts are network namespaces on one bridge, as in bench/swarm.sh (bench/fleet.sh builds
# them): host 0 (10.77.0.10) runs Debian's docker-registry (the CNCF distribution registry) on
# port 5000 and `shoal tracker`; hosts 1..N each run `shoal agent --proxy-listen
# 127.0.0.1:7702 --registry-upstream http://10.77.0.10:5000`. Every host's upload and download
# are capped at RATE (tc tbf on both ends of its veth).
#
# The image: SIZE of random data in 5 uncompressed tar layers (and a small config), built once
# in WORK as an OCI layout and pushed with skopeo.
#
# Each round, from a fresh tracker database and fresh agent data directories:
#   1. mirror — every host runs `skopeo copy docker://127.0.0.1:1/bench/app:v1 dir:OUT` with a
#      registries.conf whose registry is a dead loopback port and whose mirror is its agent, so
#      nothing reaches the registry but through the mirror (skopeo falls back to the registry
#      itself when a mirror fails; here that would fail the pull instead of hiding it).
#   2. direct — every host runs `skopeo copy docker://10.77.0.10:5000/bench/app:v1 dir:OUT`.
#   3. bound  — max(F/u_origin, F/d_min, N·F/(u_origin + Σ u_agents)), F the image's blobs in
#      bits; with equal rates that is F/RATE.
# Egress is the registry's own count (body bytes of blob GETs, from its access log) and the
# bytes that left host 0's veth. Every layer of every copy is checked against its digest
# afterwards (not timed).
#
# Knobs (environment): SHOAL_BIN (default target/release/shoal), ROUNDS (1), DIRECT=0 (no direct
# pulls: the mirror alone, for comparing builds), TIMEOUT (seconds
# per phase), AGENT_LOG (RUST_LOG of the agents, default shoal_agent=info), AGENT_ARGS, WORK
# (default bench/out/registry-work), OUT_DIR (where copies and agent data go).
#
# Needs root (network namespaces, veths, a bridge, tc); refuses to run otherwise. Exit status:
# 0 when the benchmark ran, 1 when a copy was wrong or the harness could not run, 2 for a
# usage error.
set -Eeuo pipefail
trap 'printf "[bench] ERROR: bench/registry.sh line %s: \"%s\" failed (exit %s)\n" "$LINENO" "$BASH_COMMAND" "$?" >&2' ERR

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
export PATH="$PATH:/usr/sbin:/sbin"

usage() { sed -n '3,/^set -Eeuo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
bad_usage() {
  echo "bench/registry.sh: $*" >&2
  exit 2
}
case ${1:-} in -h | --help)
  usage
  exit 0
  ;;
esac
(($# == 3)) || bad_usage "usage: bench/registry.sh N RATE SIZE, e.g. bench/registry.sh 6 200mbit 256M (--help for more)"
N=$1
RATE=${2,,}
SIZE_ARG=$3
[[ "$N" =~ ^[1-9][0-9]*$ ]] && ((N <= 50)) || bad_usage "N must be 1..50 hosts, not '$N'"
if [[ "$RATE" =~ ^([1-9][0-9]*)(mbit|gbit)$ ]]; then
  case ${BASH_REMATCH[2]} in
    mbit) RATE_BPS=$((BASH_REMATCH[1] * 1000000)) ;;
    gbit) RATE_BPS=$((BASH_REMATCH[1] * 1000000000)) ;;
  esac
else
  bad_usage "RATE must be a whole number of mbit or gbit (tc's units), not '$2'"
fi
[[ "$SIZE_ARG" =~ ^([1-9][0-9]*)(M|MiB)$ ]] || bad_usage "SIZE must be a whole number of MiB, e.g. 256M, not '$3'"
SIZE_MIB=${BASH_REMATCH[1]}
((SIZE_MIB >= 5 && SIZE_MIB <= 4096)) || bad_usage "SIZE must be 5M..4096M"
ROUNDS=${ROUNDS:-1}
DIRECT=${DIRECT:-1}
[[ "$DIRECT" =~ ^[01]$ ]] || bad_usage "DIRECT must be 0 or 1"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] && ((ROUNDS <= 20)) || bad_usage "ROUNDS must be 1..20"
AGENT_LOG=${AGENT_LOG:-shoal_agent=info}
PROXY_PORT=7702
REGISTRY_PORT=5000
LAYERS=5

[[ $(id -u) -eq 0 ]] || bench_die "bench/registry.sh must run as root: it creates network namespaces, veth pairs, a bridge and tc qdiscs"
bench_init
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY RUST_LOG
bench_need docker-registry:docker-registry skopeo:skopeo python3:python3 curl:curl ip:iproute2 \
  tc:iproute2 jq:jq timeout:coreutils sha256sum:coreutils

SHOAL_BIN=${SHOAL_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/shoal}
[[ -x "$SHOAL_BIN" ]] || bench_die "no shoal binary at $SHOAL_BIN: cargo build --release -p shoal, or set SHOAL_BIN"
WORK=${WORK:-$BENCH_DIR/out/registry-work}
mkdir -p "$WORK" "$BENCH_DIR/out"
WORK=$(cd "$WORK" && pwd)
STAMP=$(date -u '+%Y-%m-%d-%H%M%S')
RUN=$WORK/runs/$STAMP-$$
mkdir -p "$RUN/bin"
cp -f "$SHOAL_BIN" "$RUN/bin/shoal"
SHOAL=$RUN/bin/shoal
SHOAL_DESC="$("$SHOAL" --version 2>/dev/null | head -n 1 || true) ($SHOAL_BIN)"

# ----------------------------------------------------------------------------- the image
IMAGE=$WORK/image-${SIZE_MIB}MiB
if [[ ! -s "$IMAGE/index.json" ]]; then
  bench_log "building an image of $LAYERS layers, $SIZE_MIB MiB in all, in $IMAGE"
  rm -rf "$IMAGE"
  python3 - "$IMAGE" "$((SIZE_MIB * 1024 * 1024))" "$LAYERS" <<'PY'
import hashlib, io, json, os, sys, tarfile
out, total, layers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs)
def put(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}
descs = []
for i in range(layers):
    payload = os.urandom(total // layers)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(f"layer-{i}.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    descs.append(dict(put(buf.getvalue()), mediaType="application/vnd.oci.image.layer.v1.tar"))
config = put(json.dumps({"architecture": "amd64", "os": "linux", "config": {},
    "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descs]}}).encode())
manifest = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"), "layers": descs}).encode())
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [dict(manifest, mediaType="application/vnd.oci.image.manifest.v1+json",
        annotations={"org.opencontainers.image.ref.name": "v1"})]}, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
with open(os.path.join(out, "layers.txt"), "w") as f:
    f.write("".join(d["digest"][7:] + "\n" for d in descs))
PY
fi
mapfile -t LAYER_HEX <"$IMAGE/layers.txt"
# F: every blob a pull fetches (layers and config), in bytes.
SIZE_BYTES=$(find "$IMAGE/blobs/sha256" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
SIZE_BYTES=$((SIZE_BYTES - $(stat -c %s "$IMAGE/blobs/sha256/$(jq -r '.manifests[0].digest[7:]' "$IMAGE/index.json")")))
F_BITS=$((SIZE_BYTES * 8))
BOUND=$(awk -v f="$F_BITS" -v u="$RATE_BPS" -v n="$N" 'BEGIN { b = f / u; s = n * f / (u + n * u); if (s > b) b = s; printf "%.3f", b }')
DIRECT_IDEAL=$(awk -v f="$F_BITS" -v u="$RATE_BPS" -v n="$N" 'BEGIN { printf "%.3f", n * f / u }')
TIMEOUT=${TIMEOUT:-$(awk -v d="$DIRECT_IDEAL" 'BEGIN { t = int(3 * d + 60); if (t > 1200) t = 1200; print t }')}

# ----------------------------------------------------------------------------- network
bench_fleet_init registry
bench_sweep_leftovers
bench_cleanup_add bench_net_teardown
bench_net_setup
OUT_BASE=$(mktemp -d "$(cd "${OUT_DIR:-$WORK}" && pwd)/shoal-registry-dl.XXXXXX")
bench_cleanup_add "rm -rf $(printf %q "$OUT_BASE")"

# ----------------------------------------------------------------------------- registry
REG=$RUN/registry
mkdir -p "$REG/data"
REG_LOG=$REG/registry.log
cat >"$REG/config.yml" <<YML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $REG/data
http:
  addr: $ORIGIN_IP:$REGISTRY_PORT
  secret: bench-registry
YML
ip netns exec "$(bench_ns_of 0)" docker-registry serve "$REG/config.yml" </dev/null >"$REG_LOG" 2>&1 &
REG_PID=$!
bench_cleanup_add "bench_stop_pid $REG_PID"
for ((k = 0; k < 100; k++)); do
  bench_in_ns 0 curl -q -s --fail --max-time 2 -o /dev/null "http://$ORIGIN_IP:$REGISTRY_PORT/v2/" && break
  sleep 0.1
done
((k < 100)) || bench_die "docker-registry did not answer within 10 s (see $REG_LOG)"
bench_in_ns 0 timeout 600 skopeo --insecure-policy copy --preserve-digests --dest-tls-verify=false \
  "oci:$IMAGE:v1" "docker://$ORIGIN_IP:$REGISTRY_PORT/bench/app:v1" >"$RUN/push.log" 2>&1 ||
  bench_die "pushing the image failed (see $RUN/push.log)"
bench_log "docker-registry in $(bench_ns_of 0) holds bench/app:v1 ($LAYERS layers, $SIZE_BYTES bytes of blobs)"

for ((i = 1; i <= N; i++)); do
  cat >"$RUN/registries-h$i.conf" <<TOML
[[registry]]
location = "127.0.0.1:1"
insecure = true
[[registry.mirror]]
location = "127.0.0.1:$PROXY_PORT"
insecure = true
TOML
done
AGENT_EXTRA=(--proxy-listen "127.0.0.1:$PROXY_PORT" --registry-upstream "http://$ORIGIN_IP:$REGISTRY_PORT")
read -r -a more <<<"${AGENT_ARGS:-}"
AGENT_EXTRA+=(${more[@]+"${more[@]}"})
# bench_read_origin reads an nginx log; the registry's egress is read from its own log below.
BODY_LOG=$RUN/empty.log
: >"$BODY_LOG"

mirror_cmd() {
  mkdir -p "$(dirname "$2")"
  CMD=(skopeo --registries-conf "$RUN/registries-h$1.conf" --insecure-policy copy
    docker://127.0.0.1:1/bench/app:v1 "dir:$2")
}
direct_cmd() {
  mkdir -p "$(dirname "$2")"
  CMD=(skopeo --insecure-policy copy --src-tls-verify=false "docker://$ORIGIN_IP:$REGISTRY_PORT/bench/app:v1" "dir:$2")
}
# registry_sent MARK: body bytes of the blob GETs the registry answered after line MARK.
registry_sent() {
  tail -n "+$(($1 + 1))" "$REG_LOG" | awk '$6 == "\"GET" && $7 ~ /\/blobs\// && ($9 == 200 || $9 == 206) { s += $10 } END { printf "%d", s }'
}
# verify_copies: OK=1 when every host's copy holds every layer with the right digest.
verify_copies() {
  local i hex
  OK=1
  for ((i = 1; i <= N; i++)); do
    for hex in "${LAYER_HEX[@]}"; do
      if [[ "${PH_RC[i]}" != 0 || "$(sha256sum <"${PH_OUT[i]}/$hex" 2>/dev/null | cut -c1-64)" != "$hex" ]]; then
        bench_warn "h$i: layer sha256:${hex:0:12}… missing or wrong (exit ${PH_RC[i]}; see $LOGR)"
        OK=0
        break
      fi
    done
  done
}

MIRROR_T=() MIRROR_SENT=() MIRROR_TX=() DIRECT_T=() DIRECT_SENT=()
WRONG=0
bench_cleanup_add bench_stop_fleet
bench_cleanup_add bench_stop_clients
for ((r = 1; r <= ROUNDS; r++)); do
  LOGR=$RUN/r$r
  OUT_ROUND=$OUT_BASE/r$r
  mkdir -p "$LOGR" "$OUT_ROUND"
  bench_start_fleet "$LOGR" "$OUT_ROUND"
  mark=$(wc -l <"$REG_LOG")
  bench_log "round $r/$ROUNDS: mirror — $N × skopeo copy through the agents, at once"
  bench_run_phase mirror "$LOGR" mirror_cmd
  bench_stop_fleet
  bench_read_origin 0
  verify_copies
  ((OK)) || WRONG=1
  MIRROR_T+=("$PH_SECS")
  MIRROR_SENT+=("$(registry_sent "$mark")")
  MIRROR_TX+=("$ORIGIN_TX")
  bench_log "round $r: mirror $PH_SECS s; registry sent ${MIRROR_SENT[-1]} blob bytes ($(bench_times_f "${MIRROR_SENT[-1]}") × image), veth tx $ORIGIN_TX"
  rm -rf "${OUT_ROUND:?}"/h*

  ((DIRECT)) || continue
  mark=$(wc -l <"$REG_LOG")
  bench_log "round $r/$ROUNDS: direct — $N × skopeo copy from the registry, at once"
  bench_run_phase direct "$LOGR" direct_cmd
  bench_read_origin 0
  verify_copies
  ((OK)) || WRONG=1
  DIRECT_T+=("$PH_SECS")
  DIRECT_SENT+=("$(registry_sent "$mark")")
  bench_log "round $r: direct $PH_SECS s; registry sent ${DIRECT_SENT[-1]} blob bytes"
  rm -rf "${OUT_ROUND:?}"/h*
done

M_T=$(bench_median "${MIRROR_T[@]}")
M_SENT=$(bench_median "${MIRROR_SENT[@]}")
M_TX=$(bench_median "${MIRROR_TX[@]}")
D_T=skipped D_X=- SPEEDUP=-
if ((DIRECT)); then
  D_T=$(bench_median "${DIRECT_T[@]}")
  D_X=$(bench_times_f "$(bench_median "${DIRECT_SENT[@]}")")
  SPEEDUP=$(bench_ratio "$D_T" "$M_T")
fi
REPORT=$BENCH_DIR/out/registry-$STAMP.md
{
  echo "## shoal registry mirror benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- command: \`bench/registry.sh $N $RATE $SIZE_ARG\`, ROUNDS=$ROUNDS"
  echo "- network: $((N + 1)) namespaces on one bridge, every host capped at $RATE up and down; host 0 runs docker-registry ($(docker-registry --version 2>/dev/null | awk '{ print $3 }')) and the tracker"
  echo "- image: $LAYERS uncompressed layers + config, F = $SIZE_BYTES bytes of blobs"
  echo "- mirror: skopeo ($(skopeo --version | awk '{ print $3 }')) on every host through its agent's mirror (registries.conf, the registry itself unreachable); direct: skopeo from the registry"
  echo "- bound: max(F/u, N·F/(u + N·u)) = $BOUND s; direct ideal N·F/RATE = $DIRECT_IDEAL s"
  echo "- shoal: $SHOAL_DESC; machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  echo
  echo "| N | rate | image | mirror s | / bound | registry egress (blob bytes) | × image | host 0 veth tx | × image | direct s | direct egress × image | speedup |"
  echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  echo "| $N | $RATE | $SIZE_ARG | $M_T | $(bench_ratio "$M_T" "$BOUND") | ${M_SENT%.*} | $(bench_times_f "$M_SENT") | ${M_TX%.*} | $(bench_times_f "$M_TX") | $D_T | $D_X | $SPEEDUP |"
  echo
  echo "mirror_s=$M_T"
  echo "bound_s=$BOUND"
  echo "mirror_vs_bound=$(bench_ratio "$M_T" "$BOUND")"
  echo "registry_egress_x=$(bench_times_f "$M_SENT")"
  echo "origin_tx_x=$(bench_times_f "$M_TX")"
  echo "direct_s=$D_T"
  echo "direct_egress_x=$D_X"
} | tee "$REPORT"
bench_log "report written to $REPORT; logs in $RUN"
((WRONG == 0)) || {
  bench_warn "a copy was missing or WRONG (see above)"
  exit 1
}
