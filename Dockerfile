FROM python:3.11-slim
# The services run as this unprivileged user, which owns only what Dagster writes:
# DAGSTER_HOME and /opt/dagster/storage (the shared volume of asset values and compute logs;
# a new named volume takes this directory's owner).
RUN groupadd --system --gid 10001 dagster \
 && useradd --system --uid 10001 --gid dagster --create-home --home-dir /home/dagster dagster
WORKDIR /opt/stock_pipeline
COPY pyproject.toml constraints.txt README.md ./
COPY stock_pipeline ./stock_pipeline
RUN pip install --no-cache-dir -c constraints.txt . \
 && mkdir -p /opt/dagster/dagster_home /opt/dagster/storage \
 && chown -R dagster:dagster /opt/dagster/dagster_home /opt/dagster/storage
COPY docker/dagster.yaml /opt/dagster/dagster_home/dagster.yaml
COPY docker/workspace.yaml /opt/dagster/workspace.yaml
ENV DAGSTER_HOME=/opt/dagster/dagster_home
USER dagster
