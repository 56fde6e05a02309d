#!/usr/bin/env bash
# Install Apache Airflow 3 with its cncf-kubernetes provider into .venv-airflow/, apart from mlops-template:
# Airflow pins packages MLflow needs other versions of, and a scheduler's environment has no mlops in it.
# The versions are tests/airflow/requirements.txt (uv pip compile of tests/airflow/requirements.in).
source "$(dirname "$0")/_uv.sh"
if [ ! -x .venv-airflow/bin/python ]; then
  "$UV" venv --quiet --python 3.11 .venv-airflow
fi
"$UV" pip sync --quiet --python .venv-airflow/bin/python --compile-bytecode tests/airflow/requirements.txt
