#!/usr/bin/env bash
# Build a local stand-in for the python:3.11-slim base image, for machines that
# can run a Docker engine but cannot pull from a registry (CI sandboxes).
#
# Debian bookworm ships Python 3.11, so a debootstrapped bookworm with python3,
# venv and pip is close enough for the Dockerfile, which only relies on
# `python3 -m venv`. pip inside it is set up like the host's pip: same CA
# bundle, same local wheel directories and constraints, so that torch comes
# from the host's local CPU wheel. Run as root; DOCKER names the docker client.
#
# usage: scripts/docker-base-standin.sh [TAG]     (default python:3.11-slim)
set -euo pipefail

TAG="${1:-python:3.11-slim}"
DOCKER="${DOCKER:-docker}"
SUITE=bookworm
# Local directories larger than this are not copied into the image (a full
# local package index can be gigabytes); pip then uses the network for them.
MAX_COPY_MB="${STANDIN_MAX_COPY_MB:-1024}"

log() { echo "docker-base-standin: $*" >&2; }

if "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
    log "$TAG already present, nothing to do"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    log "debootstrap needs root"
    exit 1
fi
command -v debootstrap >/dev/null || { log "debootstrap is not installed"; exit 1; }

# The host's Debian mirror (it is the one known to be reachable), else the default.
mirror="$(grep -hoE '^(URIs:|deb) +[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources \
    /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1 || true)"
mirror="${mirror:-http://deb.debian.org/debian}"

work="$(mktemp -d "${TMPDIR:-/tmp}/intently-standin.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"

log "debootstrap $SUITE from $mirror (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    "$SUITE" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 20 "$work/debootstrap.log" >&2
    exit 1
}

# pip may install into a venv made from this python; the marker would stop plain pip use.
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

# The host's CA bundle: traffic to package indexes may only verify with it.
host_ca=/etc/ssl/certs/ca-certificates.crt
if [[ -f $host_ca ]]; then
    install -D -m 0644 "$host_ca" "$root$host_ca"
fi

# Mirror the host's pip configuration (files and PIP_* variables) into
# /etc/pip.conf, copying the local paths it names into the same places.
python3 - "$root" "$MAX_COPY_MB" <<'PY'
import os
import shutil
import subprocess
import sys
from pathlib import Path

root, max_mb = Path(sys.argv[1]), int(sys.argv[2])
out = subprocess.run(
    [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
).stdout
settings: dict[str, str] = {}
for line in out.splitlines():
    key, _, value = line.partition("=")
    name = key.rsplit(".", 1)[-1]
    if name in {"cert", "find-links", "constraint", "extra-index-url", "index-url"}:
        settings[name] = value.strip().strip("'\"")


def size_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def copy_in(location: str) -> bool:
    """Copy a local file or directory to the same path inside the rootfs; False if skipped."""
    path = Path(location.removeprefix("file://"))
    if not path.is_absolute() or not path.exists():
        return not location.startswith(("/", "file:"))  # a URL: keep it as is
    if location.startswith("file:") and path.name == "simple":
        path = path.parent  # a local index links to files beside its simple/ pages
    if size_mb(path) > max_mb:
        print(f"docker-base-standin: not copying {path} (over {max_mb} MB)", file=sys.stderr)
        return False
    target = root / path.relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        shutil.copytree(path, target, dirs_exist_ok=True)
    else:
        shutil.copy2(path, target)
    return True


lines = ["[global]"]
for name, value in settings.items():
    kept = [v for v in value.split() if copy_in(v)]
    if kept:
        lines.append(f"{name} = {' '.join(kept)}")
(root / "etc" / "pip.conf").write_text("\n".join(lines) + "\n")
print("docker-base-standin: pip.conf: " + "; ".join(lines[1:]), file=sys.stderr)
PY

log "importing as $TAG"
tar -C "$root" -c . | "$DOCKER" import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'LABEL org.intently.standin=true' \
    --change 'CMD ["python3"]' \
    - "$TAG" >/dev/null
log "done: $TAG ($("$DOCKER" image inspect -f '{{.Size}}' "$TAG") bytes)"
