# flashfeed's Spark image: the standalone master and workers of docker-compose.yaml. Executors
# run the jobs' Python, so they get the same pinned Python dependencies as the Airflow image
# (where the driver runs), the project, and the same S3 connector.
#   docker compose build        (the build context is the repository root: see .dockerignore)
#
# Python 3.11 as in the Airflow image (PySpark needs the same minor version on the driver and
# the executors), on Debian bookworm as it is. Pinned by tag: pin `@sha256:...` where a registry
# is reachable (`docker buildx imagetools inspect`).
FROM python:3.11.14-slim-bookworm

# A JRE for Spark (17, as the Airflow image); Spark runs as an unprivileged user (uid 185 as in
# Apache's own Spark images), its workers' scratch space in that user's home.
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 185 --gid 0 spark
WORKDIR /opt/flashfeed

# Exactly the pinned set that `make install` uses (pyspark brings spark-class, Spark's jars and
# scripts), with the same pyspark reinstall after the Spark provider's pyspark-client.
COPY requirements.txt /opt/flashfeed/requirements.txt
RUN pip install --no-cache-dir -r /opt/flashfeed/requirements.txt \
    && pip install --no-cache-dir --no-deps --force-reinstall "$(grep '^pyspark==' /opt/flashfeed/requirements.txt)"

# The project without dependencies, so executors can import flashfeed and spark_jobs even when a
# job ships no copy of its own (the whole project is copied, as pyproject.toml may package any of it).
COPY pyproject.toml README.md /opt/flashfeed/
COPY flashfeed /opt/flashfeed/flashfeed
COPY spark_jobs /opt/flashfeed/spark_jobs
COPY dags /opt/flashfeed/dags
COPY plugins /opt/flashfeed/plugins
COPY include /opt/flashfeed/include
RUN pip install --no-cache-dir --no-deps /opt/flashfeed

# The S3 connector of pyspark's own Hadoop, as in the Airflow image, and the same Spark settings.
RUN python -m flashfeed.local.s3a_jars --from-maven
COPY include/spark-conf/log4j2.properties docker/spark-conf/spark-defaults.conf /opt/flashfeed/spark-conf/

ENV FLASHFEED_CONFIG=/opt/flashfeed/include/flashfeed.yaml \
    SPARK_CONF_DIR=/opt/flashfeed/spark-conf \
    SPARK_WORKER_DIR=/home/spark/work \
    PYSPARK_PYTHON=python3
USER spark
