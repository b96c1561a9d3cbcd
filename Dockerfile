# syntax=docker/dockerfile:1
# One image for every enishi service. The service is picked by the command:
#   docker run enishi:0.1.0 services.ingest
# (ENTRYPOINT is `python -m`, so the command is the module to run.)
#
# Production images carry the base dependencies only: no `local` extra (embedded Tansu,
# Temporal and Valkey binaries) and no `dev` extra (test and lint tools).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------
# build: resolve from uv.lock into a self-contained virtualenv at /opt/enishi
# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

# Same uv as the Makefile (UV_VERSION there), so the lock file is read the same way.
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"

ENV UV_PROJECT_ENVIRONMENT=/opt/enishi \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

WORKDIR /src

# Dependencies first: this layer is reused until pyproject.toml or uv.lock change.
# No --extra / --all-extras: the `local` and `dev` extras stay out of the image.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project --python /usr/local/bin/python3

# Then the project itself, installed as a wheel (not editable) so /src is not needed later.
COPY enishi ./enishi
COPY services ./services
COPY workflows ./workflows
RUN uv sync --locked --no-dev --no-editable --python /usr/local/bin/python3

# ---------------------------------------------------------------------------------------
# runtime: the virtualenv and a non-root user, nothing else
# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# Numeric uid/gid so Kubernetes `runAsNonRoot` can verify the user without a name lookup.
RUN groupadd --system --gid 10001 enishi \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin enishi

COPY --from=build /opt/enishi /opt/enishi

ENV PATH=/opt/enishi/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENISHI_LOG_FORMAT=json

WORKDIR /tmp
USER 10001:10001

# gRPC services listen on ENISHI_GRPC_PORT; every service serves /metrics, /healthz and
# /readyz on ENISHI_METRICS_PORT. Compose and Kubernetes define the health checks per
# service (the ports differ), so the image declares none.
EXPOSE 50051 9101

ENTRYPOINT ["python", "-m"]
CMD ["services.ingest"]
