"""MLflow: connecting, store failures, tag names, `mlflow run` glue, reading the store."""
