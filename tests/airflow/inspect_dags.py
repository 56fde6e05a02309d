"""Load a dags folder in Airflow and write what the tests check to a JSON file (run with Airflow's own Python).

For each DAG: its tasks in upstream-to-downstream order, and for each Kubernetes pod task
the pod Airflow would ask the cluster for (`build_pod_request_obj(dry_run=True)`, no
cluster needed), after rendering its templates for a DAG run with the id given.
"""

from __future__ import annotations

import json
import sys


def main(folder: str, run_id: str, output: str) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk.execution_time.context import VariableAccessor
    from kubernetes.client import ApiClient

    bag = DagBag(dag_folder=folder)
    out = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
    context = {
        "run_id": run_id,
        "var": {"value": VariableAccessor(deserialize_json=False), "json": VariableAccessor(deserialize_json=True)},
    }
    for dag_id, dag in bag.dags.items():
        tasks = {}
        for task in dag.topological_sort():
            entry = {
                "operator": type(task).__name__,
                "upstream": sorted(task.upstream_task_ids),
                "retries": task.retries,
                "retry_delay": task.retry_delay.total_seconds(),
                "execution_timeout": task.execution_timeout.total_seconds() if task.execution_timeout else None,
            }
            if isinstance(task, KubernetesPodOperator):
                try:
                    task.render_template_fields(context)
                except Exception as exc:  # noqa: BLE001 - what a task whose templates cannot render fails with
                    entry["render_error"] = f"{type(exc).__name__}: {exc}"
                    tasks[task.task_id] = entry
                    continue
                pod = task.build_pod_request_obj(dry_run=True)
                entry["pod"] = ApiClient().sanitize_for_serialization(pod)
            else:
                task.render_template_fields({**context, "ti": None})
                entry["bash_command"] = getattr(task, "bash_command", None)
                entry["cwd"] = getattr(task, "cwd", None)
            tasks[task.task_id] = entry
        out["dags"][dag_id] = {
            "order": [t.task_id for t in dag.topological_sort()],
            "schedule": None if dag.schedule is None else str(dag.schedule),
            "tags": sorted(dag.tags),
            "tasks": tasks,
        }
    with open(output, "w") as f:  # not stdout: Airflow logs there
        json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    main(*sys.argv[1:4])
