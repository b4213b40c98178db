#!/usr/bin/env bash
# Smoke test of the real Dockerfile: build both images, the full one (default
# target) and the slim one (--target slim, no torch), and run them the way a
# hardened deployment would (read-only root file system, tmpfs on /tmp, the
# model store on a volume, non-root, no capabilities).
#
# Slim: serves the built-in model from the image's seed (no training), refuses
# `intently train`, queues a job whose status says no trainer is alive; a full
# container started as `intently worker` on the same volume runs that job.
# Full: classify, retrain through the admin API into the volume, stop it with
# SIGTERM while a request is in flight, start a new container on the same
# volume and find the retrained model active.
#
#   scripts/docker-smoke.sh [--install]
#
# --install   as root, apt-get the engine (docker.io) and debootstrap when missing (CI)
#
# Uses the engine DOCKER_HOST (or the default socket) points at when it answers;
# otherwise starts a private one (scripts/docker-engine.sh) and stops it at the
# end. When python:3.11-slim can be neither found nor pulled, a local stand-in is
# built (scripts/docker-base-standin.sh) and torch comes from pip's own
# configuration instead of PyTorch's index; TORCH_INDEX_URL overrides either way.
#
# Exit status: 0 passed, 1 failed, 77 skipped: no Docker engine here and none could
# be installed. An engine that is installed (or named by DOCKER_HOST) and does not
# start or answer is a failure, not a skip.
# Everything it starts (containers, volume, engine) is removed at exit; the image
# and the build cache are kept so that the next run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."

SKIP=77
BASE=python:3.11-slim
IMAGE="${INTENTLY_SMOKE_IMAGE:-intently:smoke}"
SLIM_IMAGE="${INTENTLY_SMOKE_SLIM_IMAGE:-intently-slim:smoke}"
SLIM_LIMIT_MB=400  # issue 30: the slim image at most 400 MB on python:3.11-slim
OFFICIAL_BASE_MB=130  # python:3.11-slim's published size, uncompressed (roughly), for a stand-in base
NAME="intently-smoke-$$"
install=""
[[ ${1:-} == --install ]] && install=1

DOCKER=docker
engine_started=""
containers=()
volumes=()
work="$(mktemp -d "${TMPDIR:-/tmp}/intently-smoke.XXXXXX")"

log() { echo "docker-smoke: $*" >&2; }
pass() { echo "docker-smoke: ok: $*"; }
fail() {
    log "FAILED: $*"
    exit 1
}
skip() {
    echo "docker-smoke: skipped: $*"
    exit "$SKIP"
}

cleanup() {
    local rc=$?
    set +e
    for c in "${containers[@]}"; do
        if [[ $rc -ne 0 && $rc -ne $SKIP ]]; then
            log "last log lines of $c:"
            "$DOCKER" logs --tail 30 "$c" 2>&1 | sed 's/^/    /' >&2
        fi
        "$DOCKER" rm -f "$c" >/dev/null 2>&1
    done
    for v in "${volumes[@]}"; do
        "$DOCKER" volume rm -f "$v" >/dev/null 2>&1
    done
    [[ -n $engine_started ]] && scripts/docker-engine.sh stop
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # interrupted: still clean up

apt_install() {
    [[ -n $install && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null || return 1
    log "apt-get install $*"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# One run at a time: two would share (and stop) one private engine.
exec 9>"${TMPDIR:-/tmp}/intently-docker-smoke.lock"
flock 9

# --- the engine ------------------------------------------------------------
if docker info >/dev/null 2>&1; then
    log "using the running engine (${DOCKER_HOST:-default socket})"
else
    [[ -z ${DOCKER_HOST:-} ]] || fail "DOCKER_HOST=$DOCKER_HOST does not answer (docker info)"
    if ! command -v dockerd >/dev/null; then
        apt_install docker.io || skip "no Docker engine: dockerd is not installed and could not be (--install as root with apt-get installs it)"
    fi
    DOCKER_HOST="$(scripts/docker-engine.sh start)" || fail "dockerd is installed but the engine did not start"
    export DOCKER_HOST
    engine_started=1
    DOCKER="$(scripts/docker-engine.sh client)"
    log "started a private engine at $DOCKER_HOST"
fi
# The classic builder: it runs on every engine version and honours --network host.
export DOCKER_BUILDKIT=0

# --- the base image --------------------------------------------------------
if ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
    if timeout 300 "$DOCKER" pull "$BASE" >"$work/pull.log" 2>&1; then
        log "pulled $BASE"
    else
        log "cannot pull $BASE ($(tail -n1 "$work/pull.log")); building a local stand-in"
        command -v debootstrap >/dev/null || apt_install debootstrap || fail "debootstrap is needed for the stand-in"
        DOCKER="$DOCKER" scripts/docker-base-standin.sh "$BASE"
    fi
fi
standin=""
if [[ $("$DOCKER" image inspect -f '{{json .Config.Labels}}' "$BASE") == *'"org.intently.standin":"true"'* ]]; then
    standin=1
fi
build_args=()
if [[ -n ${TORCH_INDEX_URL+set} ]]; then
    build_args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
elif [[ -n $standin ]]; then
    build_args+=(--build-arg "TORCH_INDEX_URL=")  # the stand-in's pip knows where torch is
fi
for var in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
    [[ -n ${!var:-} ]] && build_args+=(--build-arg "$var")
done

# --- build -----------------------------------------------------------------
log "building $IMAGE from Dockerfile ${build_args[*]}"
start=$SECONDS
"$DOCKER" build --force-rm --network host -t "$IMAGE" "${build_args[@]}" . >"$work/build.log" 2>&1 || {
    tail -n 40 "$work/build.log" >&2
    fail "docker build"
}
size=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")
base_size=$("$DOCKER" image inspect -f '{{.Size}}' "$BASE")
base_name="$BASE${standin:+ (the local stand-in)}"
pass "built $IMAGE in $((SECONDS - start)) s, $((size / 1000000)) MB ($(((size - base_size) / 1000000)) MB above $base_name, $((base_size / 1000000)) MB)"
# The classic builder built every stage above, the slim one too: this is the cache.
start=$SECONDS
"$DOCKER" build --force-rm --network host --target slim -t "$SLIM_IMAGE" "${build_args[@]}" . \
    >"$work/build-slim.log" 2>&1 || {
    tail -n 40 "$work/build-slim.log" >&2
    fail "docker build --target slim"
}
slim_size=$("$DOCKER" image inspect -f '{{.Size}}' "$SLIM_IMAGE")
pass "built $SLIM_IMAGE in $((SECONDS - start)) s, $((slim_size / 1000000)) MB ($(((slim_size - base_size) / 1000000)) MB above $base_name)"
# On the official base the limit is the image's size; on the stand-in (larger than the official
# image), it is the size above the base plus the official image's published size.
official_base_mb=$((base_size / 1000000))
note=""
if [[ -n $standin ]]; then
    official_base_mb=$OFFICIAL_BASE_MB
    note=" (the stand-in base counted as the official image's published $OFFICIAL_BASE_MB MB)"
fi
slim_on_official=$(((slim_size - base_size) / 1000000 + official_base_mb))
((slim_on_official <= SLIM_LIMIT_MB)) ||
    fail "$SLIM_IMAGE would be $slim_on_official MB on $BASE$note, over $SLIM_LIMIT_MB MB"
pass "$SLIM_IMAGE on $BASE: $slim_on_official MB$note, at most $SLIM_LIMIT_MB MB"
for image in "$IMAGE" "$SLIM_IMAGE"; do
    [[ $("$DOCKER" image inspect -f '{{.Config.User}}' "$image") == 10001:10001 ]] || fail "$image does not run as uid 10001"
done

# --- helpers ---------------------------------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
INTENTLY_ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
export INTENTLY_ADMIN_TOKEN
printf 'Authorization: Bearer %s\n' "$INTENTLY_ADMIN_TOKEN" >"$work/auth"
volume="$NAME-store"
slim_volume="$NAME-slim-store"
for v in "$volume" "$slim_volume"; do
    "$DOCKER" volume create "$v" >/dev/null
    volumes+=("$v")
done

hardened=(--network host --read-only --tmpfs "/tmp:rw,nosuid,nodev,size=256m"
    --cap-drop ALL --security-opt no-new-privileges -e INTENTLY_PORT="$port" -e INTENTLY_ADMIN_TOKEN)

run() {  # run NAME [IMAGE [VOLUME]]: a server on the host network, hardened as the docs advise
    "$DOCKER" run -d --name "$1" "${hardened[@]}" -v "${3:-$volume}:/data" \
        --health-interval 2s "${2:-$IMAGE}" >/dev/null
    containers+=("$1")
}

wait_healthy() {  # wait_healthy NAME: until Docker's HEALTHCHECK says healthy
    local start=$SECONDS state
    while ((SECONDS - start < 180)); do
        state=$("$DOCKER" inspect -f '{{.State.Status}} {{.State.Health.Status}}' "$1")
        [[ $state == "running healthy" ]] && return 0
        [[ $state == running* ]] || fail "$1 is $state"
        sleep 1
    done
    fail "$1 not healthy after 180 s"
}

api() {  # api METHOD PATH [JSON]: the response body; fails on an HTTP error
    curl -fsS --max-time 30 -X "$1" -H @"$work/auth" -H 'Content-Type: application/json' \
        ${3:+--data "$3"} "$url$2"
}

field() {  # field KEY...: a value from the JSON on stdin
    python3 -c 'import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1:]:
    v = v[int(k)] if isinstance(v, list) else v[k]
print(json.dumps(v) if isinstance(v, (dict, list)) else v)' "$@"
}

stop_cleanly() {  # stop_cleanly NAME: SIGTERM, then the exit status must be 0
    "$DOCKER" kill --signal TERM "$1" >/dev/null
    local code
    code=$(timeout 60 "$DOCKER" wait "$1") || fail "$1 did not exit within 60 s of SIGTERM"
    [[ $code == 0 ]] || fail "$1 exited with status $code after SIGTERM"
}

wait_job() {  # wait_job ID: until the job has succeeded; its record on stdout
    local start=$SECONDS job state
    while :; do
        job=$(api GET "/v1/training-jobs/$1")
        state=$(field state <<<"$job")
        [[ $state == succeeded ]] && break
        [[ $state == failed ]] && fail "training job failed: $(field error <<<"$job")"
        ((SECONDS - start < 900)) || fail "training job still $state after 900 s"
        sleep 3
    done
    echo "$job"
}

examples='{"text": "order me a pizza", "intent": "order_food"},
    {"text": "I want some sushi delivered", "intent": "order_food"},
    {"text": "get me a burger from the nearest place", "intent": "order_food"},
    {"text": "can you order takeout for dinner", "intent": "order_food"},
    {"text": "have a pizza delivered to my house", "intent": "order_food"},
    {"text": "order food for tonight", "intent": "order_food"}'

# --- slim: serves the built-in model without torch; a trainer runs its job -----
"$DOCKER" run --rm --network none --entrypoint python "$SLIM_IMAGE" \
    -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" ||
    fail "$SLIM_IMAGE has torch"
code=0
"$DOCKER" run --rm --network none --read-only "$SLIM_IMAGE" train /opt/intently/data/assistant/train.csv --out /tmp/m \
    >"$work/slim-train.out" 2>&1 || code=$?
if [[ $code != 2 ]] || ! grep -q "pip install 'intently\[train\]'" "$work/slim-train.out"; then
    fail "intently train in $SLIM_IMAGE: status $code, $(cat "$work/slim-train.out")"
fi
pass "$SLIM_IMAGE has no torch; 'intently train' there: $(cat "$work/slim-train.out")"
start=$SECONDS
run "$NAME-slim" "$SLIM_IMAGE" "$slim_volume"
wait_healthy "$NAME-slim"
if "$DOCKER" logs "$NAME-slim" 2>&1 | grep -q "training the built-in default model"; then
    fail "the slim container trained at start instead of using the model built into the image"
fi
answer=$(api POST /v1/classify '{"text": "What time is it?"}')
[[ $(field intent <<<"$answer") == ask_time ]] || fail "slim: 'What time is it?' gave $answer"
pass "slim container healthy $((SECONDS - start)) s after start: 'What time is it?' -> ask_time (model $(field model_version <<<"$answer"))"
job=$(api POST /v1/training-jobs "{\"examples\": [$examples], \"mode\": \"append\", \"activate\": \"never\"}")
job_id=$(field id <<<"$job")
sleep 3  # a trainer in the slim container would have claimed it by now
job=$(api GET "/v1/training-jobs/$job_id")
[[ $(field state <<<"$job") == queued && $(field message <<<"$job") == "waiting for a trainer: "* ]] ||
    fail "a job on a slim replica with no trainer: $job"
pass "slim: job $job_id queued: $(field message <<<"$job")"
"$DOCKER" run -d --name "$NAME-worker" "${hardened[@]}" -v "$slim_volume:/data" --no-healthcheck \
    "$IMAGE" worker >/dev/null
containers+=("$NAME-worker")
start=$SECONDS
job=$(wait_job "$job_id")
version=$(field version <<<"$job")
pass "trainer ($IMAGE worker) ran the slim replica's job $job_id in $((SECONDS - start)) s: version $version"
[[ $(api POST "/v1/models/$version/activate" | field active) == "$version" ]] || fail "activation on slim"
answer=$(api POST /v1/classify '{"text": "please order me a pizza"}')
[[ $(field model_version <<<"$answer") == "$version" && $(field intent <<<"$answer") == order_food ]] ||
    fail "slim: not serving $version's order_food after activation: $answer"
pass "slim serves the trainer's $version: 'please order me a pizza' -> order_food"
stop_cleanly "$NAME-worker"
stop_cleanly "$NAME-slim"
pass "slim server and trainer: SIGTERM, exit status 0"

# --- first container: answers at once, retrains into the volume ------------
start=$SECONDS
run "$NAME-1"
wait_healthy "$NAME-1"
pass "container healthy $((SECONDS - start)) s after start (read-only root, uid $("$DOCKER" exec "$NAME-1" id -u))"
if "$DOCKER" logs "$NAME-1" 2>&1 | grep -q "training the built-in default model"; then
    fail "the container trained at start instead of using the model built into the image"
fi

first=$(api POST /v1/classify '{"text": "What time is it?"}')
[[ $(field intent <<<"$first") == ask_time ]] || fail "'What time is it?' gave $first"
built_in=$(field model_version <<<"$first")
pass "'What time is it?' -> ask_time (model $built_in)"

job=$(api POST /v1/training-jobs "{\"examples\": [$examples], \"mode\": \"append\", \"activate\": \"never\"}")
job_id=$(field id <<<"$job")
start=$SECONDS
job=$(wait_job "$job_id")
version=$(field version <<<"$job")
pass "training job $job_id succeeded in $((SECONDS - start)) s: version $version"
[[ $(api POST "/v1/models/$version/activate" | field active) == "$version" ]] || fail "activation"
answer=$(api POST /v1/classify '{"text": "please order me a pizza"}')
[[ $(field model_version <<<"$answer") == "$version" ]] || fail "not serving $version after activation: $answer"
[[ $(field intent <<<"$answer") == order_food ]] || fail "'please order me a pizza' gave $answer"
pass "activated $version: 'please order me a pizza' -> order_food"

# SIGTERM with a request in flight: headers and part of the body are sent, the
# signal goes in, then the rest of the body; the answer must still come.
cat >"$work/inflight.py" <<'PY'
import json
import os
import socket
import sys
import time

port, sent, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
body = json.dumps({"text": "What time is it?"}).encode()
head = (
    "POST /v1/classify HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
).encode()
with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
    conn.sendall(head + body[:5])
    open(sent, "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            sys.exit("never told to send the rest")
        time.sleep(0.05)
    conn.sendall(body[5:])
    reply = b""
    while chunk := conn.recv(65536):
        reply += chunk
status = reply.split(b"\r\n", 1)[0].decode()
answer = json.loads(reply.split(b"\r\n\r\n", 1)[1] or b"{}")
print(status, answer.get("intent"))
sys.exit(0 if " 200 " in status + " " and answer.get("intent") == "ask_time" else 1)
PY
python3 "$work/inflight.py" "$port" "$work/sent" "$work/go" >"$work/inflight.out" 2>&1 &
client=$!
for _ in $(seq 100); do
    [[ -f $work/sent ]] && break
    sleep 0.1
done
[[ -f $work/sent ]] || fail "the in-flight request could not be started: $(cat "$work/inflight.out")"
"$DOCKER" kill --signal TERM "$NAME-1" >/dev/null
sleep 2
[[ $("$DOCKER" inspect -f '{{.State.Running}}' "$NAME-1") == true ]] || fail "exited with a request in flight"
touch "$work/go"
wait "$client" || fail "the in-flight request did not complete: $(cat "$work/inflight.out")"
code=$(timeout 60 "$DOCKER" wait "$NAME-1") || fail "no exit within 60 s of SIGTERM"
[[ $code == 0 ]] || fail "exit status $code after SIGTERM"
pass "SIGTERM: the request in flight completed ($(cat "$work/inflight.out")), exit status 0"

# --- second container on the same volume: the retrained model is still active
start=$SECONDS
run "$NAME-2"
wait_healthy "$NAME-2"
active=$(api GET /v1/model | field version)
[[ $active == "$version" ]] || fail "after restart the active version is $active, not $version"
[[ $(api POST /v1/classify '{"text": "What time is it?"}' | field intent) == ask_time ]] || fail "classify after restart"
pass "new container healthy in $((SECONDS - start)) s, still serving the retrained $version"
stop_cleanly "$NAME-2"
pass "SIGTERM: exit status 0"
echo "docker-smoke: PASSED (image $IMAGE, $((size / 1000000)) MB; $SLIM_IMAGE, $((slim_size / 1000000)) MB; $base_name $((base_size / 1000000)) MB)"
