# syntax=docker/dockerfile:1
#
# SecureChat server image.
#
# Runtime requirements:
#   * The master key MUST be supplied at run time, via SECURECHAT_MASTER_KEY or
#     (preferred) SECURECHAT_MASTER_KEY_FILE pointing at a mounted secret. It is
#     never baked into the image.
#   * Database migrations are not run by `serve`. Run `securechat migrate`
#     before starting/upgrading the server, e.g. as a one-off container:
#         docker run --rm -e SECURECHAT_DATABASE_URL=... -e SECURECHAT_MASTER_KEY_FILE=... \
#             securechat securechat migrate
#   * The default database is SQLite under /app/data (owned by the non-root
#     user); mount a volume there, or set SECURECHAT_DATABASE_URL to PostgreSQL.
#   * SIGTERM drains the node and exits 0; give it 40 s (`docker stop -t 40`,
#     docker-compose.yml's stop_grace_period) rather than Docker's default 10 s.
#   * Behind a proxy, set FORWARDED_ALLOW_IPS to the proxy's address so the node sees
#     client addresses (docs/operations.md, "Behind a proxy").
#
# The Alembic migrations (server/store/migrations/**) ship inside the package:
# pyproject.toml's [tool.setuptools.package-data] includes them, so
# `pip install .` below puts them into /opt/venv.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- builder ---
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# All native dependencies (asyncpg, cryptography, argon2-cffi, msgspec, uvloop,
# httptools, ...) ship manylinux wheels for CPython 3.11, so no compiler is
# needed. If a platform ever lacks a wheel, uncomment:
# RUN apt-get update \
#     && apt-get install -y --no-install-recommends build-essential libffi-dev \
#     && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml ./
COPY server ./server
RUN pip install --upgrade pip \
    && pip install . \
    && python -c "import importlib.resources as r; m = r.files('server') / 'store' / 'migrations'; assert (m / 'env.py').is_file() and any(m.joinpath('versions').iterdir()), 'migrations missing from the installed package'" \
    && python -c "import server.cli"

# ---------------------------------------------------------------- runtime ---
FROM ${PYTHON_IMAGE} AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --system --gid 10001 securechat \
    && useradd --system --uid 10001 --gid securechat \
        --home-dir /app --no-create-home --shell /usr/sbin/nologin securechat

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# The browser clients are plain ES modules served as they are (no build step).
COPY client_web /app/client_web
RUN mkdir -p /app/data && chown securechat:securechat /app/data

USER securechat

EXPOSE 8000

# No curl in the slim image: probe with the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

CMD ["securechat", "serve", "--host", "0.0.0.0", "--port", "8000"]
