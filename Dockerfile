# The image of every Switchyard service. Build from the repository root (the uv workspace):
#   docker build --build-arg SERVICE=auth -t switchyard/auth .
# SERVICE names a directory under services/ (gateway, auth, chat, payments, notification, file).
# The image runs `python -m <SERVICE>_svc` on the service's port from switchyard/ports.py
# (override with <SERVICE>_PORT); HOST is 0.0.0.0.
#
# auth: signing keys live in AUTH_KEYS_DIR (a volume or secret mounted there). Outside
#   production the service creates a first key when it is empty; in production create keys
#   with `docker run ... python -m auth_svc.keys_cli rotate` (or set AUTH_GENERATE_KEY=true once).
# gateway: point it at the services with GATEWAY_<SERVICE>_UPSTREAMS (e.g.
#   GATEWAY_AUTH_UPSTREAMS=http://auth:8081) and JWKS_URL=http://auth:8081/.well-known/jwks.json;
#   GATEWAY_WORKERS sets the worker processes (one per core is a good start).
FROM python:3.11-slim AS build
ARG SERVICE
RUN test -n "$SERVICE" \
 || { echo "build with --build-arg SERVICE=<gateway|auth|chat|payments|notification|file>" >&2; exit 1; }
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY shared shared
COPY services/${SERVICE} services/${SERVICE}
RUN uv sync --frozen --package switchyard-${SERVICE} --no-dev --no-editable

FROM python:3.11-slim
ARG SERVICE
# auth's key directory exists, owned by the service user, before a named volume is first
# mounted on it (Docker then gives the volume that ownership); other services keep no state.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app \
 && if [ "$SERVICE" = auth ]; then install -d -m 0700 -o app -g app /var/lib/switchyard/auth-keys; fi
COPY --from=build /app/.venv /app/.venv
# SERVICE tells the start command and the health check which service this is;
# AUTH_KEYS_DIR is read by auth only (every other service ignores it).
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    SERVICE=${SERVICE} \
    AUTH_KEYS_DIR=/var/lib/switchyard/auth-keys
USER app
WORKDIR /app
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-m", "switchyard.devtools.healthcheck"]
CMD ["sh", "-c", "exec python -m \"${SERVICE}_svc\""]
