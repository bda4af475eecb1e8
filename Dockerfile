# syntax=docker/dockerfile:1
# One image for every ragstream process (workers, gateway, beat, Celery worker, CLI); the command
# picks the role: `ragstream worker embedding`, `ragstream gateway`, `ragstream beat`, ...
#
#   docker build --target cpu -t ragstream:cpu .      # the default target (last stage)
#   docker build --target gpu -t ragstream:gpu .      # CUDA torch; run with --gpus / a GPU request
#
# Multi-stage: wheels are built in a throw-away stage, the runtime is slim and runs as a non-root
# user (uid 10001). The GPU image needs no CUDA base: the CUDA torch wheels carry the CUDA runtime
# libraries (nvidia-* wheels); the host provides only the driver (NVIDIA container toolkit).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG TORCH_VERSION=2.13.0

FROM ${PYTHON_IMAGE} AS source
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ragstream ragstream
COPY workers workers
COPY producers producers
COPY consumers consumers
COPY schemas schemas

FROM source AS wheels-cpu
ARG TORCH_VERSION
RUN pip wheel --no-cache-dir --wheel-dir /wheels \
        --extra-index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}" .

FROM source AS wheels-gpu
ARG TORCH_VERSION
ARG TORCH_CUDA=cu128
RUN pip wheel --no-cache-dir --wheel-dir /wheels \
        --extra-index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" "torch==${TORCH_VERSION}" .

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin ragstream
WORKDIR /home/ragstream
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    RAGSTREAM_DATA_DIR=/home/ragstream/data \
    RAGSTREAM_METRICS_HOST=0.0.0.0 \
    RAGSTREAM_METRICS_PORT=9400 \
    HF_HUB_OFFLINE=1
EXPOSE 9400 8080
ENTRYPOINT ["ragstream"]
CMD ["--help"]

FROM runtime AS gpu
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN --mount=type=bind,from=wheels-gpu,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels ragstream
USER 10001

# last, so that a plain `docker build .` gives the CPU image
FROM runtime AS cpu
RUN --mount=type=bind,from=wheels-cpu,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels ragstream
USER 10001
