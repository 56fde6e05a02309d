#!/usr/bin/env bash
# Ways to run the pipeline from a shell, from the project folder.
set -euo pipefail

mlops run                                        # every step, on the `local` environment
mlops run --step train_model -P max_depth=3      # one step, a param changed for this run only
mlops run --step predict --environment local     # score with the registry's champion

# The same, without the mlops command (as a container or a pod runs it):
PYTHONPATH=src python -m "$(python -c 'import tomllib;print(tomllib.load(open("mlops.toml","rb"))["project"]["package"])').main" --step make_data

# As MLflow Projects entry points:
mlflow run . -e train_model --env-manager local --experiment-name "$(python -c 'import tomllib;print(tomllib.load(open("mlops.toml","rb"))["project"]["name"])')"
