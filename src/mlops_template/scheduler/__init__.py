"""Schedulers that run a project's steps: the Airflow DAG."""
