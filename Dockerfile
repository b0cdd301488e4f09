# syntax=docker/dockerfile:1.7
#
# Two images from one file (compose.yaml builds both; docs/deploy.md):
#
#   backend  python slim, no torch (~0.5 GB): `assistant serve` (the ML backend), `assistant beat`,
#            `assistant status`. The backend never imports the model (import-linter checks it).
#   worker   NVIDIA CUDA runtime + the CUDA build of torch (~8 GB): `assistant worker`, on a GPU or,
#            with ASSISTANT_DEVICE=cpu, on CPUs (the CUDA build is the only torch/torchvision pair
#            that imports on our machines, docs/developing.md).
#
#   docker build --target backend -t labeling-assistant-backend .
#   docker build --target worker  -t labeling-assistant-worker  .
#
# No secret enters an image: every credential (Label Studio token, database and Redis passwords)
# comes from the environment at run time, and .dockerignore keeps .env files out of the context.
# The repository is copied whole to /app and installed editable, so the bundled assets/ and
# prompts/ sit where state/settings.py (PROJECT_ROOT) looks for them.

ARG PYTHON_VERSION=3.11
ARG SLIM_IMAGE=python:3.11-slim-bookworm
# torch 2.14.1 from PyPI is built for CUDA 13.0 (torch.version.cuda) and brings its own CUDA
# libraries; the base image supplies the driver integration (NVIDIA_* variables) for the NVIDIA
# container toolkit.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.9

FROM ${UV_IMAGE} AS uv

# ---------------------------------------------------------------------------------------------
# backend: build the virtual environment without the model's dependencies
# ---------------------------------------------------------------------------------------------
FROM ${SLIM_IMAGE} AS backend-build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_NO_CACHE=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
# Dependencies first: this layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
COPY docker/requirements.py docker/requirements.py
RUN python docker/requirements.py --without-model > /tmp/requirements.txt \
 && uv venv /opt/venv --python /usr/local/bin/python3 \
 && uv pip install --python /opt/venv/bin/python -r /tmp/requirements.txt
# The rest of the repository (.dockerignore leaves out venvs, run-time state, caches and .env).
COPY . .
RUN uv pip install --python /opt/venv/bin/python --no-deps -e .

# ---------------------------------------------------------------------------------------------
# backend: the runtime image
# ---------------------------------------------------------------------------------------------
FROM ${SLIM_IMAGE} AS backend
RUN groupadd --system --gid 10001 assistant \
 && useradd --system --uid 10001 --gid assistant --home-dir /var/lib/assistant --shell /usr/sbin/nologin assistant \
 && mkdir -p /var/lib/assistant/models /var/lib/assistant/feature-cache \
 && chown -R assistant:assistant /var/lib/assistant
COPY --from=backend-build /opt/venv /opt/venv
COPY --from=backend-build /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ASSISTANT_HOME=/var/lib/assistant
WORKDIR /app
USER assistant
EXPOSE 9090
CMD ["assistant", "serve", "--host", "0.0.0.0", "--port", "9090"]

# ---------------------------------------------------------------------------------------------
# worker: build Python and the full virtual environment on the CUDA base
# ---------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS worker-build
ARG PYTHON_VERSION
COPY --from=uv /uv /usr/local/bin/uv
# Ubuntu 24.04 ships Python 3.12 only: uv installs a standalone CPython 3.11 under /opt/python,
# which the runtime stage copies at the same path (the venv's interpreter links there).
ENV UV_NO_CACHE=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_INSTALL_DIR=/opt/python
WORKDIR /app
RUN uv python install ${PYTHON_VERSION} \
 && uv venv /opt/venv --python ${PYTHON_VERSION}
COPY pyproject.toml README.md ./
COPY docker/requirements.py docker/requirements.py
RUN /opt/venv/bin/python docker/requirements.py > /tmp/requirements.txt \
 && uv pip install --python /opt/venv/bin/python -r /tmp/requirements.txt
# The rest of the repository (.dockerignore leaves out venvs, run-time state, caches and .env).
COPY . .
RUN uv pip install --python /opt/venv/bin/python --no-deps -e .

# ---------------------------------------------------------------------------------------------
# worker: the runtime image
# ---------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS worker
RUN groupadd --system --gid 10001 assistant \
 && useradd --system --uid 10001 --gid assistant --home-dir /var/lib/assistant --shell /usr/sbin/nologin assistant \
 && mkdir -p /var/lib/assistant/models /var/lib/assistant/feature-cache /var/cache/huggingface \
 && chown -R assistant:assistant /var/lib/assistant /var/cache/huggingface
COPY --from=worker-build /opt/python /opt/python
COPY --from=worker-build /opt/venv /opt/venv
COPY --from=worker-build /app /app
# HF_HOME: pretrained weights (ASSISTANT_BASE_MODEL=ViT-B-16:laion2b_s34b_b88k) are downloaded
# once into this directory, a named volume in compose.yaml.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ASSISTANT_HOME=/var/lib/assistant \
    HF_HOME=/var/cache/huggingface
WORKDIR /app
USER assistant
EXPOSE 9808
CMD ["assistant", "worker", "--pool", "prefork", "--concurrency", "1", "--metrics-port", "9808"]
