"""`mlops.toml`: its schema and loading, params, environments, AWS profiles, DAG and resource settings."""
