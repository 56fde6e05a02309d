"""A store URI's password or token is never printed, raised, or shown in a repr."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest
from click.testing import CliRunner

from mlops_template import Environment, Pipeline, load_config
from mlops_template.cli.main import main
from mlops_template.errors import TrackingError
from mlops_template.pipeline.runner import PipelineResult, run_pipeline
from mlops_template.redact import redact, redact_text


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgresql://ml:secret@db/mlflow", "postgresql://ml:***@db/mlflow"),
        ("https://user:token@mlflow.example", "https://user:***@mlflow.example"),
        ("mysql+pymysql://ml:p@ss:w0rd@db:3306/mlflow", "mysql+pymysql://ml:***@db:3306/mlflow"),
        ("postgresql://db/mlflow?user=ml&password=secret", "postgresql://db/mlflow?user=ml&password=***"),
        ("https://mlflow.example/?token=abc&x=1", "https://mlflow.example/?token=***&x=1"),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=f00d&X-Amz-Expires=60",
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60",
        ),
        ("postgresql://ml@db/mlflow?sslmode=require", "postgresql://ml@db/mlflow?sslmode=require"),
        ("sqlite:////tmp/mlruns.db", "sqlite:////tmp/mlruns.db"),
        ("http://mlflow.internal:5000", "http://mlflow.internal:5000"),
        ("s3://bucket/project", "s3://bucket/project"),
    ],
)
def test_redact_hides_the_secrets_of_a_uri_and_keeps_the_rest(uri, shown):
    assert redact(uri) == shown
    assert redact_text(f"store {uri!r} failed; store {uri} failed") == f"store {shown!r} failed; store {shown} failed"


def test_redact_text_finds_uris_inside_third_party_messages():
    message = (
        "API request to https://ml:t0ken@127.0.0.1:5000/api/2.0/mlflow/runs/search failed with exception "
        "HTTPSConnectionPool(host='127.0.0.1', port=5000); sqlalchemy: (psycopg2.OperationalError) "
        "postgresql://ml:pw@db:5432/mlflow"
    )
    shown = redact_text(message)
    assert "t0ken" not in shown and ":pw@" not in shown
    assert "https://ml:***@127.0.0.1:5000/api/2.0/mlflow/runs/search" in shown
    assert "postgresql://ml:***@db:5432/mlflow" in shown
    assert "port=5000" in shown


def test_the_repr_of_an_environment_hides_its_store_secrets():
    env = Environment(
        name="prod",
        storage="s3://bucket/project",
        tracking_uri="postgresql://ml:secret@db/mlflow",
        registry_uri="https://user:token@mlflow.example",
    )
    shown = repr(env)
    assert "secret" not in shown and "token" not in shown
    assert "tracking_uri='postgresql://ml:***@db/mlflow'" in shown
    assert "registry_uri='https://user:***@mlflow.example'" in shown
    assert "storage='s3://bucket/project'" in shown
    assert env.tracking_uri == "postgresql://ml:secret@db/mlflow"  # the value itself is whole, for MLflow


def test_the_repr_of_a_pipeline_result_hides_its_store_secrets():
    result = PipelineResult("0123abcd", "1", "prod", "postgresql://ml:secret@db/mlflow", ["make"])
    assert "secret" not in repr(result)
    assert "tracking_uri='postgresql://ml:***@db/mlflow'" in repr(result)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _noop(ctx):
    pass


def test_an_unreachable_server_with_a_token_in_its_uri_never_shows_the_token(tiny_project, monkeypatch):
    uri = f"https://user:t0ken-s3cret@127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(TrackingError) as raised:
        run_pipeline(Pipeline([_noop]), load_config(tiny_project))
    assert "t0ken-s3cret" not in str(raised.value)
    assert "tracking server https://user:***@127.0.0.1:" in str(raised.value)

    for args in (["runs"], ["--verbose", "runs"], ["--verbose", "models"]):
        result = CliRunner().invoke(main, [*args, "--project", str(tiny_project)])
        assert result.exit_code == 1
        assert "t0ken-s3cret" not in result.output, args
        assert "https://user:***@127.0.0.1:" in result.output


def test_a_server_environment_points_the_browser_at_its_url_without_the_token(tiny_project):
    from mlops_template.tracking.ui import serve

    config = load_config(tiny_project)
    env = replace(config.environment(), name="dev", tracking_uri="https://user:t0ken@mlflow.example")
    lines: list[str] = []
    assert serve(config, env, port=5999, echo=lines.append) == 0
    assert lines == ["Environment 'dev' tracks to a server: open https://user:***@mlflow.example in a browser."]
