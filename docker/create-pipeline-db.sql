-- The pipeline's own database (accounts, tokens, writes log), beside Dagster's.
CREATE DATABASE stock_pipeline OWNER dagster;
