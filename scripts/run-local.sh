#!/usr/bin/env bash
# scripts/run-local.sh: `make run` after the build. Starts, on loopback, the tiered topology of
# a CDN in miniature: a local origin serving sample files (scripts/sample-origin.py), one
# shield in front of it (outpostd --role shield) and two edges whose misses go to the shield
# (outpostd --shield URL, with the origin as the fallback when the shield is down). The first
# edge serves plaintext HTTP/1.1 and h2c, HTTPS with HTTP/1.1 and HTTP/2, and HTTP/3 on the
# HTTPS port number, with a self-signed certificate made here for localhost and 127.0.0.1; the
# second edge plaintext only. Each node has its own cache dir, ports and admin API. The script
# waits until all answer, prints what to try, and stays in the foreground until Ctrl-C (or
# SIGTERM). Then it stops exactly the processes it started, by their pids, newest first.
#
# Environment (all optional):
#   OUTPOST_PORT=8080 ORIGIN_PORT=9000 ADMIN_PORT=8081   loopback ports (ADMIN: the first edge)
#   TLS_PORT=8443               HTTPS (TCP) and HTTP/3 (UDP) port of the first edge
#   EDGE2_PORT=8082 EDGE2_ADMIN_PORT=8083                 the second edge
#   SHIELD_PORT=8090 SHIELD_ADMIN_PORT=8091               the shield
#   OUTPOST_RUN_DIR=.run        where the caches (cache/, edge2-cache/, shield-cache/), origin
#                               files (origin/) and the certificate (tls/) go
#   OUTPOSTD=build/outpostd     the daemon (default: $BUILD/outpostd, build-san/ when SAN is set)
#   OUTPOST_ARGS="..."          extra arguments for both edges (e.g. "--workers 1 --set x=y")
#   SHIELD_ARGS="..."           extra arguments for the shield
#   RUN_LOCAL_TIMEOUT=15        seconds to wait for each process to answer
#   DEPS=0                      skip `scripts/deps.sh run` (python3 and curl for this script;
#                               the Makefile's `deps` target only checks the build set)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

BUILD=${BUILD:-build${SAN:+-san}}
OUTPOSTD=${OUTPOSTD:-$ROOT/$BUILD/outpostd}
OUTPOST_PORT=${OUTPOST_PORT:-8080}
ORIGIN_PORT=${ORIGIN_PORT:-9000}
ADMIN_PORT=${ADMIN_PORT:-8081}
TLS_PORT=${TLS_PORT:-8443}
EDGE2_PORT=${EDGE2_PORT:-8082}
EDGE2_ADMIN_PORT=${EDGE2_ADMIN_PORT:-8083}
SHIELD_PORT=${SHIELD_PORT:-8090}
SHIELD_ADMIN_PORT=${SHIELD_ADMIN_PORT:-8091}
RUN_DIR=${OUTPOST_RUN_DIR:-$ROOT/.run}
TIMEOUT=${RUN_LOCAL_TIMEOUT:-15}
PY=/usr/bin/python3
HOST=127.0.0.1

say() { printf 'run-local: %s\n' "$*"; }
die() {
    printf 'run-local: %s\n' "$*" >&2
    exit 1
}

PORT_VARS=(OUTPOST_PORT ORIGIN_PORT ADMIN_PORT TLS_PORT EDGE2_PORT EDGE2_ADMIN_PORT SHIELD_PORT
    SHIELD_ADMIN_PORT)
declare -A port_owner=()
for v in "${PORT_VARS[@]}"; do
    p=${!v}
    if ! [[ $p =~ ^[0-9]+$ ]] || [ "$p" -lt 1 ] || [ "$p" -gt 65535 ]; then
        die "bad port: $v=$p"
    fi
    [ -z "${port_owner[$p]:-}" ] || die "$v and ${port_owner[$p]} must differ (both $p)"
    port_owner[$p]=$v
done
if [ "${DEPS:-1}" = 1 ]; then
    "$ROOT/scripts/deps.sh" run || die "scripts/deps.sh run failed"
fi
[ -x "$OUTPOSTD" ] || die "$OUTPOSTD not found: build it first (make run does)"
[ -x "$PY" ] || die "$PY not found: scripts/deps.sh run installs python3"
command -v curl >/dev/null 2>&1 || die "curl not found: scripts/deps.sh run installs it"
command -v openssl >/dev/null 2>&1 || die "openssl not found: scripts/deps.sh run installs it"

# A port that accepts a connection is taken: say so now rather than fail half-started.
port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
for v in ORIGIN_PORT SHIELD_PORT SHIELD_ADMIN_PORT EDGE2_PORT EDGE2_ADMIN_PORT OUTPOST_PORT \
    ADMIN_PORT TLS_PORT; do
    if port_busy "${!v}"; then
        die "port $HOST:${!v} is already in use (set $v; the ports: ${PORT_VARS[*]})"
    fi
done

mkdir -p "$RUN_DIR/cache" "$RUN_DIR/edge2-cache" "$RUN_DIR/shield-cache" "$RUN_DIR/origin" \
    "$RUN_DIR/tls" || die "cannot create $RUN_DIR"
# A self-signed certificate for the edge's HTTPS and HTTP/3 (made once; the openssl command-line
# tool is a separate process: outpostd itself never loads OpenSSL)
CERT=$RUN_DIR/tls/cert.pem
KEY=$RUN_DIR/tls/key.pem
if [ ! -s "$CERT" ] || [ ! -s "$KEY" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$KEY" \
        -out "$CERT" -days 365 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:$HOST" >/dev/null 2>&1 ||
        die "openssl could not make a test certificate in $RUN_DIR/tls"
fi

# ---- process bookkeeping: only ever signal pids this script started ----------------------
NAMES=()
PIDS=()
stopping=0

# alive PID: PID is still our child and has not exited. A zombie child still answers kill -0,
# and a reaped child's pid may be reused by someone else's process: read /proc instead.
alive() {
    local line st
    read -r line 2>/dev/null <"/proc/$1/stat" || return 1
    st=${line##*) } # "STATE PPID ..." after the command name
    [ "${st%% *}" != Z ] || return 1
    st=${st#* }
    [ "${st%% *}" = "$$" ]
}

# stop_one INDEX: SIGTERM, then up to 12 s for a graceful stop (outpostd drains for up to
# 10 s), then SIGKILL; finally reap it.
stop_one() {
    local i=$1 pid=${PIDS[$1]} name=${NAMES[$1]} n
    [ -n "$pid" ] || return 0
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null
        for ((n = 0; n < 120; n++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            say "$name (pid $pid) did not stop in 12 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    wait "$pid" 2>/dev/null
    PIDS[i]=""
}

cleanup() {
    local i
    trap '' INT TERM HUP
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_one "$i"
    done
}
trap cleanup EXIT
trap 'stopping=1' INT TERM HUP

# start NAME CMD...: start CMD in the background and remember its pid.
start() {
    local name=$1
    shift
    "$@" &
    NAMES+=("$name")
    PIDS+=("$!")
    say "started $name (pid $!)"
}

# wait_until NAME INDEX CHECK...: poll CHECK until it succeeds; fail if the process dies.
wait_until() {
    local name=$1 idx=$2 deadline=$((SECONDS + TIMEOUT))
    shift 2
    until "$@"; do
        [ $stopping = 0 ] || exit 0
        if ! alive "${PIDS[$idx]}"; then
            wait "${PIDS[$idx]}"
            local rc=$?
            PIDS[idx]=""
            die "$name exited (status $rc) before it answered"
        fi
        [ $SECONDS -lt $deadline ] || die "$name did not answer within ${TIMEOUT}s"
        sleep 0.1
    done
}
# shellcheck disable=SC2317 # called through wait_until
http_ok() { curl -s -o /dev/null --max-time 2 -f "$1"; }

# ---- the origin --------------------------------------------------------------------------
start sample-origin "$PY" "$ROOT/scripts/sample-origin.py" --host "$HOST" --port "$ORIGIN_PORT" \
    --dir "$RUN_DIR/origin" --quiet
wait_until sample-origin 0 http_ok "http://$HOST:$ORIGIN_PORT/"

# ---- the shield: misses of both edges go through it to the origin ------------------------
# Each node gets a node_name: it names the node in Via, which the origin sees
# ("1.1 edge1 (outpost), 1.1 shield1 (outpost shield)") and which stops loops.
# shellcheck disable=SC2206 # SHIELD_ARGS is split into words on purpose
shield_extra=(${SHIELD_ARGS:-})
shield_idx=${#PIDS[@]}
start shield "$OUTPOSTD" --role shield --listen "$HOST:$SHIELD_PORT" \
    --origin "http://$HOST:$ORIGIN_PORT" --cache-dir "$RUN_DIR/shield-cache" \
    --admin "$HOST:$SHIELD_ADMIN_PORT" --set node_name=shield1 "${shield_extra[@]}"
wait_until shield "$shield_idx" http_ok "http://$HOST:$SHIELD_ADMIN_PORT/status"
wait_until shield "$shield_idx" port_busy "$SHIELD_PORT"

# ---- the edges: --shield for misses, --origin as the fallback when the shield is down -----
# shellcheck disable=SC2206 # OUTPOST_ARGS is split into words on purpose
extra=(${OUTPOST_ARGS:-})
tier=(--shield "http://$HOST:$SHIELD_PORT" --origin "http://$HOST:$ORIGIN_PORT")
edge2_idx=${#PIDS[@]}
start edge2 "$OUTPOSTD" --listen "$HOST:$EDGE2_PORT" "${tier[@]}" \
    --cache-dir "$RUN_DIR/edge2-cache" --admin "$HOST:$EDGE2_ADMIN_PORT" --set node_name=edge2 \
    "${extra[@]}"
wait_until edge2 "$edge2_idx" http_ok "http://$HOST:$EDGE2_ADMIN_PORT/status"
wait_until edge2 "$edge2_idx" port_busy "$EDGE2_PORT"

edge_idx=${#PIDS[@]}
start outpostd "$OUTPOSTD" --listen "$HOST:$OUTPOST_PORT" "${tier[@]}" \
    --tls-listen "$HOST:$TLS_PORT" --h3-listen "$HOST:$TLS_PORT" --cert "$CERT" --key "$KEY" \
    --cache-dir "$RUN_DIR/cache" --admin "$HOST:$ADMIN_PORT" --set node_name=edge1 "${extra[@]}"
wait_until outpostd "$edge_idx" http_ok "http://$HOST:$ADMIN_PORT/status"
wait_until outpostd "$edge_idx" port_busy "$OUTPOST_PORT"

E="http://$HOST:$OUTPOST_PORT"
A="http://$HOST:$ADMIN_PORT"
E2="http://$HOST:$EDGE2_PORT"
S="http://$HOST:$SHIELD_PORT"
SA="http://$HOST:$SHIELD_ADMIN_PORT"
cat <<EOF

Outpost is running on loopback (clients -> edge1 or edge2 -> shield1 -> origin). Ctrl-C stops it.
  edge1   $E/   outpostd pid ${PIDS[$edge_idx]}, cache in $RUN_DIR/cache, admin $A/
          https://$HOST:$TLS_PORT/   HTTPS (HTTP/1.1, HTTP/2) and HTTP/3 (UDP), certificate $CERT
  edge2   $E2/   outpostd pid ${PIDS[$edge2_idx]}, cache in $RUN_DIR/edge2-cache, admin http://$HOST:$EDGE2_ADMIN_PORT/
  shield1 $S/   outpostd --role shield pid ${PIDS[$shield_idx]}, cache in $RUN_DIR/shield-cache, admin $SA/
  origin  http://$HOST:$ORIGIN_PORT/   sample-origin pid ${PIDS[0]}, files in $RUN_DIR/origin
  admin   $A/

Try:
  curl -i $E/1k.txt                  # first time: X-Cache: MISS (edge1 asked shield1, shield1 the origin)
  curl -i $E/1k.txt                  # again: X-Cache: HIT, with Age
  curl -i -H 'Host: $HOST:$OUTPOST_PORT' $E2/1k.txt
                                     # edge2, same Host so same cache key: its MISS is a HIT at
                                     # shield1, the origin is not asked again
  curl -sI $E/1m.bin                 # HEAD of a 1 MiB object
  curl -i $E/api/time                # Cache-Control: no-store, never cached
  curl -i --compressed $E/vary       # Vary: Accept-Encoding (gzip variant)
  curl -i $E/vary                    # the identity variant, cached separately
  curl -ki --http2 https://$HOST:$TLS_PORT/1k.txt          # HTTPS, HTTP/2 (Alt-Svc: h3)
  gtlsclient -q --exit-on-all-streams-close --download=. $HOST $TLS_PORT https://$HOST:$TLS_PORT/1k.txt
                                     # HTTP/3 (Debian's ngtcp2-client), writes ./1k.txt
  curl -s $A/metrics | grep ^outpost_
  curl -s $A/status                  # "upstreams": the shield group (--shield) and its health
  curl -s $SA/metrics | grep ^outpost_upstream_   # the shield's requests to the origin
  curl -s $S/_outpost/health         # what the edges' health checks ask the shield

EOF

# ---- foreground until a signal, or until one of the processes exits ----------------------
# Polls rather than `wait -n`: bash's wait -n misses a child killed by a signal whose death it
# already reported, and then waits forever. `wait` on one pid (the ticker) is interrupted
# by the trapped signals, so Ctrl-C is handled at once.
tick_pid=""
while [ $stopping = 0 ]; do
    for i in "${!PIDS[@]}"; do
        pid=${PIDS[$i]}
        [ -n "$pid" ] || continue
        if ! alive "$pid"; then
            wait "$pid"
            rc=$?
            PIDS[i]=""
            say "${NAMES[$i]} (pid $pid) exited with status $rc: stopping the rest"
            exit 1
        fi
    done
    sleep 0.5 &
    tick_pid=$!
    wait "$tick_pid"
    if [ $stopping = 1 ] && alive "$tick_pid"; then
        kill "$tick_pid" 2>/dev/null
    fi
    wait "$tick_pid" 2>/dev/null
    tick_pid=""
done
say "stopping"
cleanup
say "stopped"
exit 0
