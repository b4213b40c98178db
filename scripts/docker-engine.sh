#!/usr/bin/env bash
# Start or stop a private Docker engine for CI and the smoke test.
#
# The engine gets its own data root, socket and pid file, and creates no
# network of its own (no bridge, no iptables): builds and containers use the
# host network, and the test talks to them on loopback. Needs root.
#
#   scripts/docker-engine.sh start    # prints the DOCKER_HOST to use; exit 3 if it cannot start
#   scripts/docker-engine.sh stop
#
# INTENTLY_DOCKER_ROOT (default /var/lib/intently-ci-docker) holds the data
# root; it is also the build cache, so later runs are faster.
set -euo pipefail

STATE="${INTENTLY_DOCKER_ROOT:-/var/lib/intently-ci-docker}"
SOCK="$STATE/run/docker.sock"
PIDFILE="$STATE/run/dockerd.pid"

log() { echo "docker-engine: $*" >&2; }

running() {
    [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

start() {
    if [[ $(id -u) -ne 0 ]]; then
        log "cannot start an engine: not root"
        exit 3
    fi
    if ! command -v dockerd >/dev/null; then
        log "cannot start an engine: dockerd is not installed (apt-get install docker.io)"
        exit 3
    fi
    mkdir -p "$STATE/run" "$STATE/data" "$STATE/exec"
    if ! running; then
        dockerd --data-root "$STATE/data" --exec-root "$STATE/exec" \
            -H "unix://$SOCK" --pidfile "$PIDFILE" \
            --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
            >"$STATE/dockerd.log" 2>&1 &
        local pid=$! client
        client="$(client)"
        for _ in $(seq 60); do
            DOCKER_HOST="unix://$SOCK" "$client" info >/dev/null 2>&1 && break
            kill -0 "$pid" 2>/dev/null || break  # it gave up: no point waiting
            sleep 1
        done
    fi
    if ! DOCKER_HOST="unix://$SOCK" "$(client)" info >/dev/null 2>&1; then
        log "the engine did not come up; last lines of $STATE/dockerd.log:"
        tail -n 15 "$STATE/dockerd.log" >&2 || true
        stop
        exit 3
    fi
    echo "unix://$SOCK"
}

stop() {
    if running; then
        local pid
        pid="$(cat "$PIDFILE")"
        kill -TERM "$pid"
        for _ in $(seq 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
    fi
    rm -f "$PIDFILE"
}

# The client shipped with the engine (Debian's docker.io puts it in /usr/bin):
# its API version matches, and it builds with the classic builder by default.
client() {
    local c
    for c in "$(dirname "$(command -v dockerd)")/docker" /usr/bin/docker; do
        if [[ -x $c ]]; then
            echo "$c"
            return
        fi
    done
    echo docker
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    client) client ;;
    *)
        echo "usage: $0 start|stop|client" >&2
        exit 2
        ;;
esac
