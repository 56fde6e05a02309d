"""Where Dask runs and how it fails, against real processes.

A LocalCluster started by `dask_client`; a separately started `dask scheduler`
and `dask worker` on loopback (logs to files), writing partitioned snapshots
to a local folder and to S3 (moto's server) with the worker's own
credentials; a scheduler nobody runs; a worker killed in the middle of a
write; and the errors a user can cause, through `mlops run`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import FAKE_AWS, _free_port

from mlops_template.cli.main import main
from mlops_template.config.load import load_config
from mlops_template.data import engines
from mlops_template.data.snapshots import SnapshotStore
from mlops_template.errors import DataError
from mlops_template.storage import LocalStorage, S3Storage

# One external cluster for the module: its tests stay on one xdist worker (`--dist loadgroup`).
pytestmark = pytest.mark.xdist_group("dask")

DASK = Path(sys.executable).with_name("dask")
START_SECONDS = 60


def frame(rows: int = 400, *, seed: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": range(rows),
            "x": [(i * 7 + seed) % 13 / 3 for i in range(rows)],
            "label": [f"c{(i + seed) % 5}" for i in range(rows)],
        }
    )


def ddf_of(df: pd.DataFrame, partitions: int = 4):
    import dask.dataframe as dd

    return dd.from_pandas(df, npartitions=partitions, sort=False)


def same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    key = list(a.columns)
    pd.testing.assert_frame_equal(
        a.sort_values(key).reset_index(drop=True), b[key].sort_values(key).reset_index(drop=True), check_dtype=False
    )


def environment(root: Path, storage: str, **settings: str):
    """The `local` environment of a project whose mlops.toml names `storage` and `settings` (e.g. dask_scheduler)."""
    lines = ["[project]", 'name = "dasktest"', 'package = "dasktest"', "", "[model]", "gate = { min = false }"]
    lines += ["", "[environments.local]"]
    lines += [f'storage = "{storage}"', f'tracking_uri = "sqlite:///{root / "mlruns.db"}"']
    lines += [f'{key} = "{value}"' for key, value in settings.items()]
    root.mkdir(parents=True, exist_ok=True)
    (root / "mlops.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_config(root).environment("local")


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLOPS_ENGINE", "MLOPS_DASK_SCHEDULER", "MLOPS_ENVIRONMENT", "MLOPS_STORAGE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module", autouse=True)
def _close_clients() -> Iterator[None]:
    """No client or local cluster of these tests outlives the module."""
    yield
    engines.close_clients()


# -- an external scheduler and worker ------------------------------------------------------------


class Cluster:
    """A `dask scheduler` and one `dask worker` (under its nanny) started as processes on loopback."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []

    def start(self) -> None:
        # A task whose worker dies fails at once (KilledWorker), never retried on another worker.
        scheduler_env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
        self._spawn(
            "scheduler",
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"],
            scheduler_env,
        )
        # That is how a team's cluster gets its credentials: the worker's own environment.
        worker_env = {**os.environ, **FAKE_AWS}
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            worker_env.pop(name, None)
        self._spawn(
            "worker",
            [DASK, "worker", self.address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"],
            worker_env,
        )
        self.wait_for_worker()

    def _spawn(self, name: str, argv: list, env: dict[str, str]) -> None:
        with open(self.folder / f"{name}.log", "ab") as log:
            self.processes.append(
                subprocess.Popen([str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.folder)
            )

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.folder.glob("*.log")))

    def wait_for_worker(self) -> dict:
        """The scheduler's info once a worker has registered with it (a killed worker's nanny starts another)."""
        from distributed import Client

        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a dask process exited with {process.returncode}:\n{self.logs()}")
            try:
                with Client(self.address, timeout=2, set_as_default=False) as client:
                    info = client.scheduler_info()
                    if info["workers"]:
                        return info
            except (OSError, TimeoutError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"no dask worker registered with {self.address} within {START_SECONDS}s:\n{self.logs()}")

    def stop(self) -> None:
        for process in reversed(self.processes):  # the worker (and its nanny) first, then the scheduler
            process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("dask-cluster"))
    try:
        running.start()
        yield running
    finally:
        engines.close_clients()
        running.stop()


@pytest.fixture
def external(cluster: Cluster) -> Cluster:
    """The module's cluster with a worker registered (a test before may have killed one)."""
    cluster.wait_for_worker()
    return cluster


def worker_pids(client) -> set[int]:
    return set(client.run(os.getpid).values())


# -- 1. a LocalCluster ---------------------------------------------------------------------------


def test_without_a_scheduler_a_local_cluster_writes_a_partitioned_snapshot(tmp_path: Path):
    env = environment(tmp_path / "project", str(tmp_path / "storage"))
    client = engines.dask_client(env)
    try:
        assert client.cluster is not None and type(client.cluster).__name__ == "LocalCluster"
        workers = client.scheduler_info()["workers"]
        assert len(workers) == engines.cpus_available()
        assert all(w["nthreads"] == 1 for w in workers.values())
        assert os.getpid() not in worker_pids(client)  # separate worker processes, not threads here

        store = SnapshotStore(LocalStorage(tmp_path / "storage"))
        df = frame(400)
        first = store.write_dask("events", ddf_of(df, 5))
        assert first.written
        snapshot = first.snapshot
        assert snapshot.partitioned and len(snapshot.partitions) == 5
        assert [p["file"] for p in snapshot.partitions] == [f"part-{i:05d}.parquet" for i in range(5)]
        assert snapshot.rows == 400
        same_rows(df, store.read("events")[1])
        assert store.current("events").id == snapshot.id

        again = store.write_dask("events", ddf_of(df, 5))
        assert again.snapshot.id == snapshot.id and not again.written
        assert [s.id for s in store.list("events")] == [snapshot.id]
        assert not [k for k in LocalStorage(tmp_path / "storage").list("snapshots") if "/.parts-" in k]
    finally:
        engines.close_clients()
    assert client.status == "closed"


# -- 2. an external scheduler and worker ---------------------------------------------------------


def test_an_external_cluster_writes_and_reads_a_partitioned_snapshot_on_a_local_folder(
    external: Cluster, tmp_path: Path
):
    env = environment(tmp_path / "project", str(tmp_path / "storage"), dask_scheduler=external.address)
    client = engines.dask_client(env)
    assert client.scheduler.address == external.address and client.cluster is None
    store = SnapshotStore(LocalStorage(tmp_path / "storage"))
    df = frame(300, seed=1)
    stored = store.write_dask("features", ddf_of(df, 4))
    assert stored.written and len(stored.snapshot.partitions) == 4
    same_rows(df, store.read("features")[1])
    _, lazy = store.read_dask("features")
    assert lazy.npartitions == 4
    same_rows(df, lazy.compute())
    assert store.current("features").id == stored.snapshot.id


def test_an_external_worker_writes_the_parts_to_s3_with_its_own_credentials(
    external: Cluster, tmp_path: Path, s3_bucket: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
):
    import s3fs

    env = environment(
        tmp_path / "project", f"s3://{s3_bucket}/team", dask_scheduler=external.address, s3_endpoint_url=s3_endpoint
    )
    client = engines.dask_client(env)
    storage = S3Storage(f"s3://{s3_bucket}/team", endpoint_url=s3_endpoint, region="us-east-1")
    store = SnapshotStore(storage)

    # Record every file this process uploads: the parts must come from the worker, not from here.
    uploaded: list[str] = []
    put_file = S3Storage.put_file

    def recording_put_file(self, local_path, key):
        uploaded.append(key)
        return put_file(self, local_path, key)

    monkeypatch.setattr(S3Storage, "put_file", recording_put_file)

    df = frame(500, seed=2)
    stored = store.write_dask("scored", ddf_of(df, 4))
    snapshot = stored.snapshot
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint, "region_name": "us-east-1"})
    in_bucket = sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{s3_bucket}/team/snapshots/scored/{snapshot.id}"))
    assert in_bucket == [f"part-{i:05d}.parquet" for i in range(4)]
    assert not [k for k in uploaded if k.endswith(".parquet")], uploaded
    assert not [p for p in fs.find(f"{s3_bucket}/team/snapshots") if "/.parts-" in p]

    same_rows(df, store.read("scored")[1])
    _, lazy = store.read_dask(snapshot)
    same_rows(df, lazy.compute())
    assert client.scheduler.address == external.address


def test_the_environment_asked_for_last_is_where_the_work_runs(external: Cluster, tmp_path: Path):
    """A process that used a local cluster and then its environment's scheduler again runs on that scheduler."""
    from distributed import get_client

    remote = environment(tmp_path / "remote", str(tmp_path / "storage"), dask_scheduler=external.address)
    local = environment(tmp_path / "local", str(tmp_path / "storage"))
    try:
        first = engines.dask_client(remote)
        engines.dask_client(local)
        assert get_client().cluster is not None
        assert engines.dask_client(remote) is first
        assert get_client() is first
        store = SnapshotStore(LocalStorage(tmp_path / "storage"))
        store.write_dask("events", ddf_of(frame(100), 2))
        assert first.cluster is None and get_client().scheduler.address == external.address
    finally:
        engines.close_clients()


# -- 3. a scheduler nobody runs ------------------------------------------------------------------


def test_an_unreachable_scheduler_is_one_line_naming_it(tmp_path: Path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    env = environment(tmp_path / "project", str(tmp_path / "storage"), dask_scheduler=address)
    with pytest.raises(DataError) as info:
        engines.dask_client(env)
    message = str(info.value)
    assert "\n" not in message
    # The wait is bounded by the client's own timeout, which the message names; no clock is read here.
    assert f"the Dask scheduler {address} did not answer within {engines.CONNECT_SECONDS} s" in message
    assert message.startswith("environment 'local': ")


# -- 4. what a user can get wrong, through `mlops run` ------------------------------------------

STEPS = """\
from mlops_template import Pipeline


def read_nothing(ctx):
    ctx.write("out", ctx.read_raw("nothing-*.csv", engine="dask"))


def read_mixed(ctx):
    ctx.write("out", ctx.read_raw("mixed-*.csv", engine="dask"))


def plain(ctx):
    pass


pipeline = Pipeline([read_nothing, read_mixed, plain])
"""


@pytest.fixture
def project(tmp_path: Path, shared_db: str, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose steps read raw files with Dask, on the module's cluster; raw/ holds two CSVs that disagree."""
    for var in ("MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    package = f"dasksteps_{uuid.uuid4().hex[:8]}"  # imported in this process: one name per test
    root = tmp_path / "project"
    (root / "src" / package).mkdir(parents=True)
    (root / "src" / package / "__init__.py").write_text("")
    (root / "src" / package / "main.py").write_text(STEPS)
    (root / "mlops.toml").write_text(
        f'[project]\nname = "{package}"\npackage = "{package}"\n\n'
        "[model]\ngate = { min = false }\n\n"
        f'[environments.local]\nstorage = "data"\ntracking_uri = "{shared_db}"\n'
        f'dask_scheduler = "{cluster.address}"\n',
        encoding="utf-8",
    )
    raw = root / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "mixed-1.csv").write_text("id,x\n1,0.5\n2,1.5\n")
    (raw / "mixed-2.csv").write_text("id,y\n3,2.5\n")
    return root


def mlops_run(root: Path, *args: str) -> str:
    """`mlops run` failed with exit code 1, one error line and no traceback; that line."""
    result = CliRunner().invoke(main, ["run", "--project", str(root), *args])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert line.startswith("Error: "), result.output
    return line


def stored(root: Path) -> list[str]:
    """The data a failed run left under the storage root: snapshots (staging folders too) and current copies."""
    data = root / "data"
    return sorted(str(p.relative_to(data)) for folder in ("snapshots", "datasets") for p in data.glob(f"{folder}/**/*"))


def test_an_empty_glob_for_a_dask_read_is_one_line_and_stores_nothing(project: Path):
    line = mlops_run(project, "--step", "read_nothing")
    assert f"no .csv, .parquet or .jsonl files match {project / 'data' / 'raw'}/nothing-*.csv" in line
    assert stored(project) == []


def test_raw_files_whose_columns_differ_are_one_line_and_store_nothing(project: Path):
    line = mlops_run(project, "--step", "read_mixed")
    assert "mixed-2.csv: its columns differ from" in line and "mixed-1.csv's (missing ['x']; extra ['y'])" in line
    assert stored(project) == []


def test_an_unknown_engine_in_mlops_toml_is_one_line(project: Path):
    config = project / "mlops.toml"
    config.write_text(config.read_text() + '\n[data]\nengine = "spark"\n', encoding="utf-8")
    line = mlops_run(project, "--step", "plain")
    assert f"{config}: [data] engine 'spark' is unknown" in line
    assert stored(project) == []


def test_an_unknown_engine_in_mlops_engine_is_one_line(project: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLOPS_ENGINE", "daks")
    line = mlops_run(project, "--step", "plain")
    assert "MLOPS_ENGINE 'daks' is unknown; did you mean 'dask'? Valid: auto, dask, pandas" in line
    assert stored(project) == []


# -- 5. a worker killed in the middle of a write -------------------------------------------------


def test_a_worker_killed_mid_write_stores_nothing_and_keeps_the_current_version(external: Cluster, tmp_path: Path):
    env = environment(tmp_path / "project", str(tmp_path / "storage"), dask_scheduler=external.address)
    client = engines.dask_client(env)
    storage = LocalStorage(tmp_path / "storage")
    store = SnapshotStore(storage)
    old = store.write_dask("events", ddf_of(frame(200), 4)).snapshot
    before = worker_pids(client)
    here = os.getpid()

    def die_on_the_third(part: pd.DataFrame, partition_info=None) -> pd.DataFrame:
        if partition_info is not None and partition_info["number"] == 2 and os.getpid() != here:
            os._exit(1)  # the worker process dies, as under the OOM killer
        return part

    new = ddf_of(frame(200, seed=9), 4)
    new = new.map_partitions(die_on_the_third, meta=new._meta)
    with pytest.raises(DataError) as info:
        store.write_dask("events", new)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith("writing dataset 'events' on the Dask workers failed (KilledWorker")
    assert message.endswith("nothing was stored under 'events'")

    assert [s.id for s in store.list("events")] == [old.id]
    assert store.current("events").id == old.id
    same_rows(frame(200), store.read("events")[1])
    assert not [k for k in storage.list("snapshots") if "/.parts-" in k]
    assert not [p for p in (tmp_path / "storage" / "snapshots" / "events").iterdir() if p.name.startswith(".")]

    external.wait_for_worker()  # the nanny started a new worker process
    assert worker_pids(client).isdisjoint(before)


def test_a_part_still_being_written_when_another_worker_dies_leaves_no_staging_folder(s3_bucket: str, s3_endpoint: str):
    """Two workers: one dies while the other is still uploading a part; that part must not stay behind in the bucket."""
    import dask
    from distributed import Client, LocalCluster

    here = os.getpid()

    class SlowStorage(S3Storage):  # defined here so that it travels to the workers by value
        @contextlib.contextmanager
        def stage(self, folder, target=None):
            with super().stage(folder, target) as stage:
                if os.getpid() != here:
                    time.sleep(0.6)  # a large part, still uploading
                yield stage

    def die_on_the_third(part: pd.DataFrame, partition_info=None) -> pd.DataFrame:
        if partition_info is not None and partition_info["number"] == 2 and os.getpid() != here:
            time.sleep(0.3)
            os._exit(1)
        return part

    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=None, host="127.0.0.1", silence_logs=logging.CRITICAL
        ) as local,
        Client(local) as client,
    ):
        storage = SlowStorage(f"s3://{s3_bucket}/team", endpoint_url=s3_endpoint, region="us-east-1")
        store = SnapshotStore(storage)
        ddf = ddf_of(frame(400), 4)
        with pytest.raises(DataError, match="nothing was stored under 'events'"):
            store.write_dask("events", ddf.map_partitions(die_on_the_third, meta=ddf._meta))
        time.sleep(1.5)  # the surviving worker finishes the part it was uploading
        assert S3Storage(f"s3://{s3_bucket}/team", endpoint_url=s3_endpoint).list("snapshots") == []
        assert store.list("events") == []
        assert client.status == "running"
