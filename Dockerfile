# jepa-service: CPU-only image that trains and serves JEPA encoders.
#   docker build -t jepa-service .
#   docker run --init -p 8000:8000 -v jepa-data:/data jepa-service
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    JEPA_DATA_DIR=/data \
    JEPA_WORKERS=2

WORKDIR /app

# /data belongs to the service user: Docker seeds a fresh named volume from
# the image, ownership included, so the service can write its db there.
RUN groupadd --system --gid 10001 jepa \
    && useradd --system --uid 10001 --gid jepa --create-home --shell /usr/sbin/nologin jepa \
    && mkdir -p /data \
    && chown jepa:jepa /data

# Torch gets its own layer, from the CPU index: the PyPI wheel drags in
# several GB of CUDA libraries. Keep this pin equal to pyproject.toml
# (tests/test_packaging.py checks it).
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# The remaining dependencies are read from pyproject.toml alone, so this layer
# is rebuilt only when the dependency list or the lock changes, not on every
# source edit. constraints.txt holds them (and what they pull in) to the
# versions CI tests; torch is already satisfied above, so pip leaves it alone.
# EXTRAS names optional groups to add, comma-separated: "ray" for JEPA_EXECUTOR=ray and the Ray
# nodes of docker-compose.yml's ray profile. Empty by default: the plain image has no Ray.
ARG EXTRAS=""
COPY pyproject.toml constraints.txt ./
RUN python -c "import sys, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(*p['dependencies'], *(d for e in sys.argv[1].split(',') if e for d in p['optional-dependencies'][e]), sep=chr(10))" "$EXTRAS" > /tmp/requirements.txt \
    && pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# A plain (non-editable) install: the packages, the dashboard page and the
# migrations (training/store/migrations) all land in site-packages, so nothing at
# run time reads the source tree. The source is mounted for this step only
# (rw: setuptools writes build/ into it), so the image does not keep a copy.
# .dockerignore keeps the context to what is needed here.
RUN --mount=type=bind,target=/tmp/src,rw pip install --no-cache-dir --no-deps /tmp/src

# Declared last so nothing in the build writes into it.
VOLUME ["/data"]

# Numeric, so runtimes that enforce non-root (runAsNonRoot) can verify it.
USER 10001:10001

EXPOSE 8000

# /health answers as soon as the process is up; /ready waits for the first
# model. urllib because slim has no curl; a non-2xx raises, exiting non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

# Exec form so SIGTERM goes straight to the process running uvicorn. JEPA_WORKERS
# API processes (above: 2, one per core of a small host; set it to the cores the
# container gets) share the port; one of them runs the embedded training worker.
CMD ["jepa", "serve", "--host", "0.0.0.0", "--port", "8000"]
