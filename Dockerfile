# fraudflow's one image: every fraudflow service in docker-compose.yml runs it (Airflow api-server,
# scheduler, dag-processor, triggerer and Celery worker via `fraudflow airflow ...`, `mlflow server`,
# and the scoring service via `fraudflow serve`). Build: docker compose build (or docker build -t fraudflow .).
FROM python:3.11-slim

# torch is pinned as the CPU wheel (torch==2.13.0+cpu in constraints.txt), which lives on
# PyTorch's CPU index, not on PyPI. Every other package comes from PyPI at its constraints.txt pin.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/fraudflow

# A Java runtime for FRAUDFLOW_ENGINE=spark: the Spark driver runs inside the Airflow task.
# Debian's default (17 or 21 by release); Spark 4 runs on both.
RUN apt-get update \
    && apt-get install -y --no-install-recommends default-jre-headless \
    && rm -rf /var/lib/apt/lists/*

# 1. The pinned environment alone (constraints.txt is a full freeze), so editing the sources
#    does not reinstall ~3.5 GB of packages. All are binary wheels or pure Python (pyspark's
#    sdist carries its jars): no compiler needed.
COPY constraints.txt ./
RUN python -m pip install --upgrade "pip==26.3" \
    && python -m pip install --extra-index-url "$TORCH_INDEX_URL" -r constraints.txt

# 2. fraudflow itself (editable: dags/, feature_repo/, expectations/ and services/ are read from
#    this checkout) with the production extra (PostgreSQL driver, Celery provider, Redis clients).
COPY . .
RUN python -m pip install --extra-index-url "$TORCH_INDEX_URL" -c constraints.txt -e '.[production]' \
    && python -m pip check

# Non-root. The code stays root-owned and read-only; everything fraudflow writes goes under
# FRAUDFLOW_HOME=/data/fraudflow, the shared named volume. Creating the mount point here owned by
# the user makes Docker initialise an empty named volume with that ownership.
RUN groupadd --gid 1000 fraudflow \
    && useradd --uid 1000 --gid fraudflow --create-home --shell /bin/bash fraudflow \
    && mkdir -p /data/fraudflow \
    && chown fraudflow:fraudflow /data/fraudflow
USER fraudflow

ENV FRAUDFLOW_HOME=/data/fraudflow

CMD ["fraudflow", "--help"]
