# syntax=docker/dockerfile:1
# CPU image for every ragstream process (workers, beat, CLI). Multi-stage: build wheels, then a
# slim non-root runtime.
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip
COPY pyproject.toml README.md ./
COPY ragstream ragstream
COPY workers workers
COPY producers producers
COPY schemas schemas
RUN pip wheel --no-cache-dir --wheel-dir /wheels \
        --extra-index-url https://download.pytorch.org/whl/cpu torch==2.13.0 . 

FROM python:3.11.11-slim-bookworm AS runtime
RUN useradd --create-home --uid 10001 ragstream
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels ragstream && rm -rf /wheels
USER ragstream
WORKDIR /home/ragstream
ENV RAGSTREAM_DATA_DIR=/home/ragstream/data \
    RAGSTREAM_METRICS_HOST=0.0.0.0 \
    RAGSTREAM_METRICS_PORT=9400 \
    HF_HUB_OFFLINE=1
EXPOSE 9400
ENTRYPOINT ["ragstream"]
CMD ["--help"]
