# syntax=docker/dockerfile:1
# Majordomo Gateway: docker build -t majordomo-gateway . (docs/deploy.md)
#
# Two stages: "build" installs the gateway and its dependencies into a virtualenv (wheels only, no
# compiler needed); the final image is python slim plus that virtualenv, run as an unprivileged user.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ONLY_BINARY=:all:
RUN python -m venv /opt/majordomo
COPY gateway/ /src/gateway/
# Build the gateway's own wheel from source (pure Python), every dependency from binary wheels.
RUN /opt/majordomo/bin/pip install --no-binary majordomo-gateway /src/gateway \
    && /opt/majordomo/bin/majordomo --version

FROM python:${PYTHON_VERSION}-slim-bookworm
LABEL org.opencontainers.image.title="majordomo-gateway" \
      org.opencontainers.image.description="Self-hosted LLM gateway that logs token usage and cost per request" \
      org.opencontainers.image.licenses="MIT"
# A fixed numeric uid, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
RUN groupadd --system --gid 10001 majordomo \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/majordomo --create-home \
       --shell /usr/sbin/nologin majordomo
COPY --from=build /opt/majordomo /opt/majordomo
ENV PATH=/opt/majordomo/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MAJORDOMO_SERVER_HOST=0.0.0.0 \
    MAJORDOMO_SERVER_PORT=7680 \
    MAJORDOMO_WRITER_SPOOL_DIR=/var/lib/majordomo/spool
# The SQLite default (./majordomo.db) and the spool live here: mount a volume to keep them.
WORKDIR /var/lib/majordomo
USER 10001:10001
EXPOSE 7680
# /health answers 200 while the process serves; /readyz (is the database there?) is for load balancers.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('MAJORDOMO_SERVER_PORT', '7680'), timeout=2)"]
# Exec form: majordomo (uvicorn) is PID 1 and gets SIGTERM itself, stops accepting, lets in-flight
# requests finish (up to 30 s, cli/serve.py DRAIN_SECONDS), then writes every queued row.  Give
# `docker stop` more than that: docker stop -t 45 (compose.yaml sets stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["majordomo"]
CMD ["serve"]
