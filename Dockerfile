FROM python:3.11-slim
WORKDIR /opt/stock_pipeline
COPY pyproject.toml constraints.txt README.md ./
COPY stock_pipeline ./stock_pipeline
RUN pip install --no-cache-dir -c constraints.txt . \
 && mkdir -p /opt/dagster/dagster_home
COPY dagster.yaml /opt/dagster/dagster_home/dagster.yaml
COPY docker/workspace.yaml /opt/dagster/workspace.yaml
ENV DAGSTER_HOME=/opt/dagster/dagster_home
