# flashfeed's Airflow image: every Airflow component of docker-compose.yaml, the Celery worker
# whose tasks run spark-submit (the Spark driver runs here), and the read API.
#   docker compose build        (the build context is the repository root: see .dockerignore)
#
# The official image of the Airflow that requirements.txt pins (tests/test_docker_compose.py
# checks they agree). Pinned by tag: its digest could not be looked up where this file was
# written (no registry reachable); pin `@sha256:...` from `docker buildx imagetools inspect`.
FROM apache/airflow:3.3.2-python3.11

# A JRE for spark-submit (Spark 4 runs on Java 17 or 21): Debian bookworm's, as the base image is.
# The man folder is missing from slim images and the JRE's installer links its man pages there.
USER root
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o airflow -g root /opt/flashfeed
USER airflow
WORKDIR /opt/flashfeed

# Exactly the pinned set that `make install` uses, and the same work-around: the Spark provider
# pulls pyspark-client, whose Python files overwrite pyspark's, so pyspark is reinstalled after.
COPY --chown=airflow:root requirements.txt /opt/flashfeed/requirements.txt
RUN pip install --no-cache-dir -r /opt/flashfeed/requirements.txt \
    && pip install --no-cache-dir --no-deps --force-reinstall "$(grep '^pyspark==' /opt/flashfeed/requirements.txt)"

# The project itself, without dependencies (they are the pinned set above): flashfeed, spark_jobs
# and the operators (flashfeed_airflow) as installed packages; Airflow reads the DAGs from here.
COPY --chown=airflow:root pyproject.toml README.md /opt/flashfeed/
COPY --chown=airflow:root flashfeed /opt/flashfeed/flashfeed
COPY --chown=airflow:root spark_jobs /opt/flashfeed/spark_jobs
COPY --chown=airflow:root dags /opt/flashfeed/dags
COPY --chown=airflow:root plugins /opt/flashfeed/plugins
COPY --chown=airflow:root include /opt/flashfeed/include
RUN pip install --no-cache-dir --no-deps /opt/flashfeed

# Hadoop's S3 connector of pyspark's own Hadoop version, with its AWS SDK v2 bundle, recorded next
# to pyspark's jars (flashfeed/local/s3a_jars.py), and the Spark settings that go with it.
RUN python -m flashfeed.local.s3a_jars --from-maven
COPY --chown=airflow:root include/spark-conf/log4j2.properties docker/spark-conf/spark-defaults.conf /opt/flashfeed/spark-conf/

ENV FLASHFEED_CONFIG=/opt/flashfeed/include/flashfeed.yaml \
    SPARK_CONF_DIR=/opt/flashfeed/spark-conf \
    PYSPARK_PYTHON=python3 \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/flashfeed/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/flashfeed/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
