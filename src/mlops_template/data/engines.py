"""Which engine a step's tables use, and the Dask cluster the Dask engine runs on.

pandas holds a whole table in this process's memory; Dask cuts it into
partitions that workers process a few at a time, so a table larger than
memory goes through the same step code. `[data] engine = "auto"` picks Dask
when the raw data on storage is larger than a tenth of the memory this process
may use (the cgroup limit in a pod).

The cluster is the environment's `dask_scheduler` (or `MLOPS_DASK_SCHEDULER`)
when one is named; otherwise a `distributed.LocalCluster` sized to the machine
(or the pod), started when a step first asks for Dask and closed when the
process ends. `MLOPS_DASK_MEMORY_LIMIT` (e.g. `4GiB`) caps the local cluster's
workers together. Workers run the project's own functions (its steps' code
on partitions), so a remote cluster's workers need the project installed:
run them from the project's image.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from mlops_template.errors import DataError

if TYPE_CHECKING:
    from distributed import Client

    from mlops_template.config.load import Environment

PANDAS, DASK, AUTO = "pandas", "dask", "auto"
AUTO_SHARE = 10  # auto: Dask when the raw data is larger than 1/AUTO_SHARE of the memory available
CONNECT_SECONDS = 10

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_clients: dict[str, Client] = {}


def is_dask(data: Any) -> bool:
    """Whether `data` is a Dask DataFrame (without importing Dask for a pandas one)."""
    return type(data).__module__.split(".", 1)[0] == "dask"


def resolve_engine(setting: str, raw_bytes: int) -> str:
    """`pandas` or `dask` for an engine setting; `auto` decides by the raw data's size against the memory."""
    if setting in (PANDAS, DASK):
        return setting
    if setting != AUTO:
        raise DataError(f"engine '{setting}' is unknown; use pandas, dask or auto")
    return DASK if raw_bytes * AUTO_SHARE > memory_available() else PANDAS


def memory_available() -> int:
    """Bytes this process may use: the cgroup's limit (a pod's) when it sets one below the machine's memory."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()  # noqa: SIM115, PTH123 - a one-line kernel file
        except OSError:
            continue
        if text.isdigit():
            return min(physical, int(text))
    return physical


def cpus_available() -> int:
    """Cores this process may use: the cgroup's CPU quota (a pod's limit) or the cores it is allowed to run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()  # noqa: SIM115, PTH123
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def configure_dask() -> None:
    """Dask settings every Dask read of ours needs, for the frames of both engines to agree.

    Dask would turn text columns into `string[pyarrow]`, whose missing value
    is `pd.NA`; pandas reads them as `str`, missing as NaN, which is what
    scikit-learn's encoders take. Text stays as pandas types it.
    """
    import dask

    dask.config.set({"dataframe.convert-string": False})


def dask_client(env: Environment) -> Client:
    """The process's Dask client for `env`: connected to its scheduler, or to a LocalCluster started now.

    It becomes Dask's default, so `.compute()` in a step's own code runs on it too.
    """
    configure_dask()
    address = env.dask_scheduler or "local"  # MLOPS_DASK_SCHEDULER is applied by Config.environment
    with _lock:
        client = _clients.get(address)
        if client is not None and client.status == "running":
            _make_default(client)
            return client
        client = _connect(env.name, address) if address != "local" else _local_cluster()
        _clients[address] = client
        return client


def _make_default(client: Client) -> None:
    """Make an open client Dask's default again (the newest client is, otherwise).

    `Client.as_current()` is a context manager, so it cannot outlast this call;
    distributed offers no public call that re-registers a client as the global default.
    """
    from distributed.client import _set_global_client

    _set_global_client(client)


def _connect(environment: str, address: str) -> Client:
    from distributed import Client

    try:
        return Client(address, timeout=CONNECT_SECONDS, set_as_default=True)
    except (OSError, TimeoutError) as exc:
        raise DataError(
            f"environment '{environment}': the Dask scheduler {address} did not answer within {CONNECT_SECONDS} s "
            f"({type(exc).__name__}); start it, or unset dask_scheduler (and MLOPS_DASK_SCHEDULER) to use a "
            "local cluster"
        ) from exc


def _local_cluster() -> Client:
    """A LocalCluster of one single-threaded worker process per core, sharing the memory this process may use."""
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    from mlops_template.progress import activity

    workers = cpus_available()
    limit = os.environ.get("MLOPS_DASK_MEMORY_LIMIT")
    total = parse_bytes(limit) if limit else memory_available()
    with activity(f"starting a local Dask cluster ({workers} workers)"):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=total // workers,
            dashboard_address=":0",  # a free port: a fixed one may be taken (and warns when it is)
            host="127.0.0.1",
            silence_logs=logging.ERROR,
        )
        client = Client(cluster, set_as_default=True)
    atexit.register(_close, client, cluster)
    return client


def _close(client: Client, cluster: Any) -> None:
    try:
        client.close()
        cluster.close()
    except Exception:  # noqa: BLE001 - the process is ending; a cluster that is already gone is fine
        logger.debug("closing the local Dask cluster failed", exc_info=True)


def close_clients() -> None:
    """Close every client (and local cluster) this process opened; the next use starts afresh.

    Dask's default scheduler goes back to its own (threads), which a client left pointing at
    `dask.distributed`: a `.compute()` after this would otherwise ask for a client that is gone.
    """
    import dask

    with _lock:
        for client in _clients.values():
            cluster = client.cluster
            _close(client, cluster)
        _clients.clear()
        dask.config.set(scheduler=None)
