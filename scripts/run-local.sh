#!/usr/bin/env bash
# scripts/run-local.sh: `make run` after the build. Starts a local origin serving sample files
# (scripts/sample-origin.py) and one edge (outpostd) in front of it on loopback (plaintext
# HTTP/1.1 and h2c, HTTPS with HTTP/1.1 and HTTP/2, and HTTP/3 on the HTTPS port number, with a
# self-signed certificate made here for localhost and 127.0.0.1), waits until
# both answer, prints what to try, and stays in the foreground until Ctrl-C (or SIGTERM).
# Then it stops exactly the processes it started, by their pids, newest first.
#
# Environment (all optional):
#   OUTPOST_PORT=8080 ORIGIN_PORT=9000 ADMIN_PORT=8081   loopback ports
#   TLS_PORT=8443               HTTPS (TCP) and HTTP/3 (UDP) port of the edge
#   OUTPOST_RUN_DIR=.run        where the cache (cache/), origin files (origin/) and logs go
#   OUTPOSTD=build/outpostd     the daemon (default: $BUILD/outpostd, build-san/ when SAN is set)
#   OUTPOST_ARGS="..."          extra arguments for the edge (e.g. "--workers 1 --set x=y")
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
RUN_DIR=${OUTPOST_RUN_DIR:-$ROOT/.run}
TIMEOUT=${RUN_LOCAL_TIMEOUT:-15}
PY=/usr/bin/python3
HOST=127.0.0.1

say() { printf 'run-local: %s\n' "$*"; }
die() {
    printf 'run-local: %s\n' "$*" >&2
    exit 1
}

for p in "$OUTPOST_PORT" "$ORIGIN_PORT" "$ADMIN_PORT" "$TLS_PORT"; do
    if ! [[ $p =~ ^[0-9]+$ ]] || [ "$p" -lt 1 ] || [ "$p" -gt 65535 ]; then
        die "bad port: $p"
    fi
done
if [ "$OUTPOST_PORT" = "$ORIGIN_PORT" ] || [ "$OUTPOST_PORT" = "$ADMIN_PORT" ] ||
    [ "$ORIGIN_PORT" = "$ADMIN_PORT" ]; then
    die "OUTPOST_PORT, ORIGIN_PORT and ADMIN_PORT must differ"
fi
case "$TLS_PORT" in "$OUTPOST_PORT" | "$ORIGIN_PORT" | "$ADMIN_PORT")
    die "TLS_PORT must differ from the other ports" ;;
esac
if [ "${DEPS:-1}" = 1 ]; then
    "$ROOT/scripts/deps.sh" run || die "scripts/deps.sh run failed"
fi
[ -x "$OUTPOSTD" ] || die "$OUTPOSTD not found: build it first (make run does)"
[ -x "$PY" ] || die "$PY not found: scripts/deps.sh run installs python3"
command -v curl >/dev/null 2>&1 || die "curl not found: scripts/deps.sh run installs it"
command -v openssl >/dev/null 2>&1 || die "openssl not found: scripts/deps.sh run installs it"

# A port that accepts a connection is taken: say so now rather than fail half-started.
port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
for p in "$ORIGIN_PORT" "$OUTPOST_PORT" "$ADMIN_PORT" "$TLS_PORT"; do
    if port_busy "$p"; then
        die "port $HOST:$p is already in use (set OUTPOST_PORT, ORIGIN_PORT, ADMIN_PORT or TLS_PORT)"
    fi
done

mkdir -p "$RUN_DIR/cache" "$RUN_DIR/origin" "$RUN_DIR/tls" || die "cannot create $RUN_DIR"
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

# ---- SHIELD: started here once shields exist (a later issue) ---------------------------------
# A shield is an outpostd between the origin and the edges. When the shield issue lands:
#   SHIELD_PORT=${SHIELD_PORT:-8090}; add it to the port checks above, then
#   start shield "$OUTPOSTD" --listen "$HOST:$SHIELD_PORT" --origin "http://$HOST:$ORIGIN_PORT" \
#       --cache-dir "$RUN_DIR/shield-cache" --admin off
#   wait_until shield 1 port_busy "$SHIELD_PORT"
# and point the edge at the shield (the shield's config syntax decides how), keeping the edge
# the last process started so that it is the first stopped.
# ----------------------------------------------------------------------------------------------

# ---- the edge ----------------------------------------------------------------------------
# shellcheck disable=SC2206 # OUTPOST_ARGS is split into words on purpose
extra=(${OUTPOST_ARGS:-})
edge_idx=${#PIDS[@]}
start outpostd "$OUTPOSTD" --listen "$HOST:$OUTPOST_PORT" --origin "http://$HOST:$ORIGIN_PORT" \
    --tls-listen "$HOST:$TLS_PORT" --h3-listen "$HOST:$TLS_PORT" --cert "$CERT" --key "$KEY" \
    --cache-dir "$RUN_DIR/cache" --admin "$HOST:$ADMIN_PORT" "${extra[@]}"
wait_until outpostd "$edge_idx" http_ok "http://$HOST:$ADMIN_PORT/status"
wait_until outpostd "$edge_idx" port_busy "$OUTPOST_PORT"

E="http://$HOST:$OUTPOST_PORT"
A="http://$HOST:$ADMIN_PORT"
cat <<EOF

Outpost is running on loopback. Ctrl-C stops it.
  edge    $E/   outpostd pid ${PIDS[$edge_idx]}, cache in $RUN_DIR/cache
          https://$HOST:$TLS_PORT/   HTTPS (HTTP/1.1, HTTP/2) and HTTP/3 (UDP), certificate $CERT
  origin  http://$HOST:$ORIGIN_PORT/   sample-origin pid ${PIDS[0]}, files in $RUN_DIR/origin
  admin   $A/

Try:
  curl -i $E/1k.txt                  # first time: X-Cache: MISS
  curl -i $E/1k.txt                  # again: X-Cache: HIT, with Age
  curl -sI $E/1m.bin                 # HEAD of a 1 MiB object
  curl -i $E/api/time                # Cache-Control: no-store, never cached
  curl -i --compressed $E/vary       # Vary: Accept-Encoding (gzip variant)
  curl -i $E/vary                    # the identity variant, cached separately
  curl -ki --http2 https://$HOST:$TLS_PORT/1k.txt          # HTTPS, HTTP/2 (Alt-Svc: h3)
  gtlsclient -q --exit-on-all-streams-close --download=. $HOST $TLS_PORT https://$HOST:$TLS_PORT/1k.txt
                                     # HTTP/3 (Debian's ngtcp2-client), writes ./1k.txt
  curl -s $A/metrics | grep ^outpost_
  curl -s $A/status

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
