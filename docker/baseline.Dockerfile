# syntax=docker/dockerfile:1
# The reference system's baseline: every catalog service with a baseline `command`, run by
# docker/baseline_entrypoint.py as `sandboxd serve --start-baseline` runs them on a laptop.
# Build from the repository root: docker build -f docker/baseline.Dockerfile -t sandboxd-baseline .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

COPY docker/examples-requirements.txt docker/
RUN pip install -r docker/examples-requirements.txt

COPY examples/ examples/
COPY docker/baseline_entrypoint.py docker/

RUN useradd --system --uid 10001 --user-group --create-home baseline
USER baseline

# Any example's catalog works (the quickstart's: /app/examples/quickstart/sandboxd.yaml).
ENV SANDBOXD_CATALOG=/app/examples/troubleshooter/sandboxd.yaml

HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/app/docker/baseline_entrypoint.py", "--check"]

ENTRYPOINT ["python", "/app/docker/baseline_entrypoint.py"]
