FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY logserver ./logserver
# docker-compose.jetstream.yml builds with speed,jetstream (the NATS client for --engine jetstream)
ARG LOGSERVER_EXTRAS=speed
RUN pip install ".[${LOGSERVER_EXTRAS}]"

# A fixed non-root uid so a bind-mounted data directory can be chown'ed to match.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin logserver \
    && mkdir /data && chown logserver:logserver /data
USER logserver
VOLUME /data
EXPOSE 8080

HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('LOGSERVER_PORT', '8080'), timeout=2)"

# SIGTERM (docker stop) finishes in-flight requests and closes the store.
CMD ["logserver", "serve", "--host", "0.0.0.0", "--data-dir", "/data"]
