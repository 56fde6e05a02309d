"""Run one DAG file's DAG with `dag.test()` and write its outcome to a JSON file (run with Airflow's own Python).

`dag.test()` runs every task in this process, in dependency order, with the DAG's
retries, against the Airflow database of `AIRFLOW_HOME` (migrated beforehand).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time


def main(dag_file: str, output: str) -> None:
    spec = importlib.util.spec_from_file_location("dag_under_test", dag_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    started = time.perf_counter()
    dag_run = module.dag.test()
    seconds = time.perf_counter() - started
    tasks = {ti.task_id: {"state": str(ti.state), "try_number": ti.try_number} for ti in dag_run.get_task_instances()}
    with open(output, "w") as f:  # not stdout: Airflow logs there
        json.dump({"run_id": dag_run.run_id, "state": str(dag_run.state), "seconds": seconds, "tasks": tasks}, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
