# Ownerlink in a container: a slim Python base, no build tools left behind, a non-root user.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
# Build a wheel here so the runtime image never carries pip caches or sources.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
LABEL org.opencontainers.image.title="ownerlink" \
      org.opencontainers.image.description="Owner-authorised access to your connected car over MQTT"
# OWNERLINK_STATE_DIR is the /data volume. Unlike a systemd unit's Environment=, every process in
# the container sees it (the daemon, `docker compose run`, `docker exec`), so they share one state;
# it wins over state_dir in /config/config.yaml (the add-on drops it when that file sets one).
# MALLOC_MMAP_THRESHOLD_: glibc hands big freed buffers back (bridge/malloc.py says why).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OWNERLINK_CONFIG=/config/config.yaml \
    OWNERLINK_STATE_DIR=/data \
    OWNERLINK_WEB__HOST=0.0.0.0 \
    MALLOC_MMAP_THRESHOLD_=131072
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && groupadd --system --gid 10001 ownerlink \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin ownerlink \
    && mkdir -p /config /data && chown ownerlink:ownerlink /data && chmod 0700 /data
USER 10001:10001
VOLUME ["/config", "/data"]
EXPOSE 8088
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8088/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["ownerlink"]
CMD ["run"]
