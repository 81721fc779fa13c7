# syntax=docker/dockerfile:1
# homemonitor: the worker, clinician API and /metrics in one image.
#   docker build -t homemonitor .
#   docker run --env-file .env homemonitor            # = homemonitor run
# docker-compose.yml runs it with TimescaleDB, Mosquitto and Prometheus.

# Pin by digest in production (python:3.12-slim@sha256:...).
ARG PYTHON_IMAGE=python:3.12-slim

# -- build: a wheel of both packages (src/homemonitor, devices/homemonitor_devices) ----------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY devices ./devices
# `pip install .` through a wheel: hatchling builds it, the runtime stage installs it
# and its dependencies into a virtualenv it can copy. tzdata: zoneinfo needs the IANA
# database and slim images have none (it is about to become a declared dependency).
RUN python -m venv /opt/homemonitor \
    && /opt/homemonitor/bin/pip install . tzdata \
    && /opt/homemonitor/bin/python -c "import homemonitor, homemonitor_devices, zoneinfo; zoneinfo.ZoneInfo('Europe/Stockholm')"

# -- runtime -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="homemonitor" \
      org.opencontainers.image.description="Home-monitoring telemetry for primary care: MQTT readings to care-plan alerts" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 homemonitor \
    && useradd --system --uid 10001 --gid homemonitor --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin homemonitor

COPY --from=build /opt/homemonitor /opt/homemonitor
COPY deploy/entrypoint.sh /usr/local/bin/homemonitor-entrypoint
RUN chmod 0755 /usr/local/bin/homemonitor-entrypoint
# So that `homemonitor registry apply /deploy/registry-example.yaml` works in the container.
COPY deploy/registry-example.yaml /deploy/registry-example.yaml

ENV PATH=/opt/homemonitor/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOMEMONITOR_HTTP_HOST=0.0.0.0 \
    HOMEMONITOR_HTTP_PORT=8080 \
    HOMEMONITOR_LOG_FORMAT=json

# No .env in the image (see .dockerignore): configuration comes from the environment.
WORKDIR /app
USER homemonitor:homemonitor
EXPOSE 8080

# Liveness: /health answers once the service is up (after it has reached the database
# and migrated; start-period covers a slow first migration). Python, as slim has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HOMEMONITOR_HTTP_PORT', '8080') + '/health', timeout=4)"]

# SIGTERM makes `homemonitor run` drain, commit and exit within HOMEMONITOR_SHUTDOWN_GRACE_S;
# docker-compose.yml gives it stop_grace_period: 30s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["homemonitor-entrypoint"]
CMD ["homemonitor", "run"]
