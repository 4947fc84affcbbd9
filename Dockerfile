# carlightd: a small image, built in two stages, running as a non-root user.
# Build: docker build -t carlightd .   Run: see compose.yaml and the README ("Docker").

FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY carlightd ./carlightd
RUN python -m venv /opt/carlightd \
    && /opt/carlightd/bin/pip install --no-cache-dir .

FROM python:3.11.14-slim-bookworm
COPY --from=build /opt/carlightd /opt/carlightd
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/carlightd --create-home carlightd
ENV PATH=/opt/carlightd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CARLIGHTD_DIAGNOSTICS__STATE_DIR=/var/lib/carlightd
USER 10001:10001
WORKDIR /var/lib/carlightd
VOLUME ["/var/lib/carlightd"]
# The scan-tool face: UDS over DoIP (TCP, and UDP for vehicle identification), OBD-II (ELM327).
EXPOSE 13400/tcp 13400/udp 35000/tcp
# Healthy while the diagnostic loop completes cycles (a heartbeat it writes every cycle).
HEALTHCHECK --interval=15s --timeout=5s --start-period=15s --retries=3 CMD ["carlightd", "health"]
ENTRYPOINT ["carlightd"]
CMD ["run"]
