"""A rendered project's team stack: `compose.yaml` (S3-compatible store, PostgreSQL, MLflow server) and the
`stack` environment that points at it.

No container engine can pull images here, so the stack is checked for what makes it work: its
services, ports, volumes and order of start; secrets only from the `.env` it names; an MLflow
server command that MLflow's own CLI accepts; and an environment whose URIs reach the ports.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest
import yaml

from mlops_template import load_config
from mlops_template.scaffold.new import new_project

INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+):\?(?P<message>[^}]*)\}")
SECRET_NAMES = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|ROOT_USER")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return new_project("stacked", directory=tmp_path_factory.mktemp("stack") / "stacked", lock=False)


@pytest.fixture(scope="module")
def compose(project) -> dict:
    return yaml.safe_load((project / "compose.yaml").read_text())


def published(service: dict) -> dict[int, str]:
    """Container port → host address, of each published port (`HOST:PORT:CONTAINER`)."""
    ports = {}
    for spec in service.get("ports", []):
        host, port, container = str(spec).rsplit(":", 2)
        assert port == container
        ports[int(container)] = host
    return ports


def test_services_and_what_each_publishes_on_loopback_only(compose):
    services = compose["services"]
    assert set(services) == {"s3", "s3-buckets", "postgres", "mlflow"}
    assert published(services["s3"]) == {9000: "127.0.0.1", 9001: "127.0.0.1"}
    assert published(services["postgres"]) == {5432: "127.0.0.1"}
    assert published(services["mlflow"]) == {5000: "127.0.0.1"}
    assert "ports" not in services["s3-buckets"]


def test_data_lives_in_named_volumes(compose):
    services = compose["services"]
    assert set(compose["volumes"]) == {"s3-data", "postgres-data"}
    assert services["s3"]["volumes"] == ["s3-data:/data"] and "/data" in services["s3"]["command"]
    assert services["postgres"]["volumes"] == ["postgres-data:/var/lib/postgresql/data"]


def test_images_are_pinned_and_the_server_runs_the_librarys_mlflow(compose):
    images = {name: s["image"] for name, s in compose["services"].items() if "image" in s}
    assert all(":" in image and not image.endswith(":latest") for image in images.values()), images
    inline = compose["services"]["mlflow"]["build"]["dockerfile_inline"]
    assert inline.startswith(f"FROM ghcr.io/mlflow/mlflow:v{metadata.version('mlflow')}\n")
    assert "psycopg2-binary" in inline and "boto3" in inline  # PostgreSQL and S3, which that image lacks


def test_services_start_in_order(compose):
    services = compose["services"]
    assert services["s3-buckets"]["depends_on"] == {"s3": {"condition": "service_healthy"}}
    assert services["mlflow"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "s3-buckets": {"condition": "service_completed_successfully"},
    }
    assert "healthcheck" in services["s3"] and "healthcheck" in services["postgres"]


def test_no_literal_secret_every_one_comes_from_the_env_file_it_names(project, compose):
    text = (project / "compose.yaml").read_text()
    example = dict(
        line.split("=", 1) for line in (project / ".env.example").read_text().splitlines() if line and line[0] != "#"
    )
    used = set()
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            value = str(value)
            found = list(INTERPOLATION.finditer(value))
            used |= {m["name"] for m in found}
            assert all(".env" in m["message"] for m in found), (name, key)
            bare = INTERPOLATION.sub("", value)
            if SECRET_NAMES.search(key):
                assert bare == "" and found, f"{name}: {key} is not read from .env"
            assert not re.search(r"://[^/:@]*:[^/@]+@", bare), f"{name}: {key} carries a password"
    assert used == {"S3_ACCESS_KEY", "S3_SECRET_KEY", "POSTGRES_PASSWORD"}
    assert {k: example[k] for k in used} == dict.fromkeys(used, "")  # the example names them, with no value
    assert "cp .env.example .env" in text and not re.search(
        r"(?i)(password|secret)[ \t]*[:=][ \t]*[\"']?\w", INTERPOLATION.sub("", text)
    )
    assert (
        ".env" in (project / ".gitignore").read_text().split()
        and ".env" in (project / ".dockerignore").read_text().split()
    )


def test_the_mlflow_server_command_is_one_mlflow_accepts(compose):
    from mlflow.cli import server

    mlflow_service = compose["services"]["mlflow"]
    command = mlflow_service["command"]
    assert command[:2] == ["mlflow", "server"]
    options = {opt: param for param in server.params for opt in param.opts}
    given = [word for word in command[2:] if word.startswith("--")]
    assert given and all(option in options for option in given), given
    assert command[command.index("--host") + 1] == "0.0.0.0"  # reachable from the host through the published port
    # Settings given as the server's own variables.
    variables = {param.envvar for param in server.params if isinstance(param, click.Option)}
    environment = mlflow_service["environment"]
    assert {"MLFLOW_BACKEND_STORE_URI", "MLFLOW_SERVER_ALLOWED_HOSTS"} <= variables & set(environment)
    backend = urlsplit(INTERPOLATION.sub("password", environment["MLFLOW_BACKEND_STORE_URI"]))
    assert (backend.scheme, backend.hostname, backend.port, backend.path) == ("postgresql", "postgres", 5432, "/mlflow")
    assert environment["MLFLOW_S3_ENDPOINT_URL"] == "http://s3:9000"
    bucket = urlsplit(command[command.index("--artifacts-destination") + 1]).netloc
    assert f"stack/{bucket}" in compose["services"]["s3-buckets"]["entrypoint"]


def test_the_stack_environment_points_at_the_stack(project, compose):
    env = load_config(project).environment("stack")
    services = compose["services"]
    tracking, endpoint = urlsplit(env.tracking_uri), urlsplit(env.s3_endpoint_url)
    assert (tracking.hostname, tracking.port) == ("127.0.0.1", 5000) and 5000 in published(services["mlflow"])
    assert (endpoint.hostname, endpoint.port) == ("127.0.0.1", 9000) and 9000 in published(services["s3"])
    assert f"stack/{urlsplit(env.storage).netloc}" in services["s3-buckets"]["entrypoint"]  # a bucket it creates
    assert env.aws_profile == "stack"  # keys from ~/.aws or AWS_* variables, never from mlops.toml
