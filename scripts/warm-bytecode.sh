#!/usr/bin/env bash
# Byte-compile what the image runs, and nothing else: train a tiny model, evaluate it
# with a report (matplotlib), serve it and classify once, with bytecode writing on.
#
#   scripts/warm-bytecode.sh [INTENTLY]     (default: intently on PATH)
#
# The Dockerfile deletes every __pycache__ first, then runs this: modules that
# serving and training import keep their .pyc (a read-only root file system
# cannot write them later), and the many that they never import take no space.
set -euo pipefail

INTENTLY="${1:-intently}"
PYTHON="$(dirname "$(command -v "$INTENTLY")")/python"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
unset PYTHONDONTWRITEBYTECODE
export OMP_NUM_THREADS=1 INTENTLY_MODEL_STORE="$work/store"

{
    echo "text,intent"
    for w in one two three four five six seven eight; do
        echo "what time is it $w,ask_time"
        echo "set an alarm for $w,set_alarm"
        echo "play song number $w,play_music"
    done
} >"$work/data.csv"

"$INTENTLY" train "$work/data.csv" --epochs 1 --set min_steps=0 --no-vectors --out "$work/model" --quiet
"$INTENTLY" evaluate "$work/model" "$work/data.csv" --report "$work/report" >/dev/null

port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$INTENTLY" serve --model "$work/model" --host 127.0.0.1 --port "$port" >"$work/serve.log" 2>&1 &
server=$!
"$PYTHON" - "$port" <<'PY'
import json, sys, time, urllib.request as u

opener = u.build_opener(u.ProxyHandler({}))
base = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(300):
    try:
        opener.open(base + "/readyz", timeout=2)
        break
    except OSError:
        time.sleep(0.5)
body = json.dumps({"text": "what time is it"}).encode()
req = u.Request(base + "/v1/classify", body, {"Content-Type": "application/json"})
print("warm-bytecode: classify ->", json.load(opener.open(req, timeout=30))["intent"])
PY
kill -TERM "$server"
wait "$server" || true
