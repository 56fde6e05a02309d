"""The docs runner itself: it fails on a broken example, a bad marker, or a skipped line that is no command."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import docs_runner
import pytest
from docs_runner import DocsError


def markdown(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "doc.md"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def run(tmp_path: Path, text: str) -> docs_runner.Result:
    return docs_runner.run(markdown(tmp_path, text), cwd=tmp_path, timeout=300)


def test_a_broken_documented_command_fails_the_run_and_names_its_line(tmp_path):
    result = run(
        tmp_path,
        """\
        # Use

        ```bash
        mlops --version
        mlops data ls --no-such-option   # a typo in the docs
        touch after
        ```
        """,
    )
    assert not result.ok and result.returncode == 2
    assert "mlops, version" in result.output  # the lines before it ran
    assert "No such option '--no-such-option'" in result.output
    assert "docs-runner: doc.md:5 failed (exit 2)" in result.output
    assert not (tmp_path / "after").exists()  # nothing after it ran


def test_a_traceback_fails_the_run_even_when_the_exit_code_is_zero(tmp_path):
    result = run(
        tmp_path,
        """\
        ```sh
        python -c "import traceback, sys; traceback.print_stack(file=sys.stdout); print('Traceback (most recent call last):')"
        ```
        """,
    )
    assert result.returncode == 0 and not result.ok
    assert "a Traceback in the output" in result.explain()


def test_blocks_run_in_order_as_one_script_and_other_blocks_are_left_alone(tmp_path):
    result = run(
        tmp_path,
        """\
        ```bash
        mkdir -p sub && cd sub
        NAME=first
        ```

        ```python
        raise SystemExit("python blocks are not run")
        ```

        ```console
        $ echo "$NAME" > seen.txt
        this line is output, not a command
        $ echo \\
            continued >> seen.txt
        ```

        ```
        false  # an unlabelled block is not a shell example
        ```
        """,
    )
    assert result.ok, result.explain()
    assert (tmp_path / "sub" / "seen.txt").read_text().split() == ["first", "continued"]


def test_documented_commands_use_the_test_venv_first_on_path(tmp_path):
    import sys

    result = run(tmp_path, "```bash\ncommand -v mlops python\n```\n")
    assert result.ok, result.explain()
    assert f"{Path(sys.executable).parent}/mlops" in result.output
    assert f"{Path(sys.executable).parent}/python" in result.output


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("<!-- docs-runner: skip `mlops ui` -->", "marker for `mlops ui` gives no reason"),
        ("<!-- docs-runner: skip `mlops ui`:   -->", "marker for `mlops ui` gives no reason"),
        ("<!-- docs-runner: skip: blocks -->", "cannot read marker"),
        ("<!-- docs-runner: ignore `mlops ui`: blocks -->", "unknown marker kind 'ignore'"),
    ],
)
def test_a_marker_without_a_reason_or_unreadable_fails(tmp_path, marker, message):
    path = markdown(tmp_path, f"{marker}\n```bash\nmlops ui --port 5000\n```\n")
    with pytest.raises(DocsError, match=message):
        docs_runner.script(path)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("mlops nope", "names 0: none"),
        ("mlops run", "names 2: `mlops run --step a`; `mlops run --step b`"),
    ],
)
def test_a_marker_must_name_exactly_one_line(tmp_path, target, message):
    path = markdown(
        tmp_path, f"<!-- docs-runner: skip `{target}`: why -->\n```bash\nmlops run --step a\nmlops run --step b\n```\n"
    )
    with pytest.raises(DocsError, match=message):
        docs_runner.script(path)


def test_a_marker_equal_to_a_line_names_it_among_longer_ones(tmp_path):
    path = markdown(
        tmp_path, "<!-- docs-runner: skip `mlops run`: why -->\n```bash\nmlops run  # all\nmlops run -s a\n```\n"
    )
    first, second = docs_runner.commands(path)
    assert first.marker and first.marker.reason == "why" and second.marker is None


@pytest.mark.parametrize(
    "text",
    [
        "<!-- docs-runner: skip `x`: why -->\nSome prose.\n```bash\nx\n```\n",
        "<!-- docs-runner: skip `x`: why -->\n```python\nx\n```\n",
        "```bash\nx\n```\n<!-- docs-runner: skip `x`: why -->\n",
    ],
)
def test_a_marker_must_stand_just_before_a_shell_block(tmp_path, text):
    with pytest.raises(DocsError, match="marker"):
        docs_runner.script(markdown(tmp_path, text))


def test_a_skipped_line_is_checked_not_run(tmp_path):
    result = run(
        tmp_path,
        """\
        <!-- docs-runner: skip `touch`: writes where it should not -->
        <!-- docs-runner: skip `mlops run --environment dev`: needs the dev tracking server -->
        <!-- docs-runner: skip `MLFLOW_TRACKING_URI=sqlite:///x.db python -m mlflow`: needs a server -->
        ```bash
        touch should-not-exist
        mlops run --environment dev
        MLFLOW_TRACKING_URI=sqlite:///x.db python -m mlflow server --port 5001
        ```
        """,
    )
    assert result.ok, result.explain()
    assert not (tmp_path / "should-not-exist").exists() and not (tmp_path / "x.db").exists()
    assert "doc.md:5: skipped, `touch` exists" in result.output
    assert "doc.md:6: skipped, `mlops run --environment dev --help` works" in result.output
    assert "doc.md:7: skipped, `python -m mlflow server --port 5001 --help` works" in result.output


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("mlops no-such-command --all", "`mlops no-such-command --all --help` exited 2"),
        ("mlops run --no-such-option", "`mlops run --no-such-option --help` exited 2"),
        ("python -m no_such_module --x", "`python -m no_such_module --x --help` exited 1"),
        ("no-such-program --flag", "program `no-such-program` is not found"),
        (
            "bash scripts/no-such-script.sh",
            "`bash scripts/no-such-script.sh`: no script `scripts/no-such-script.sh` in",
        ),
    ],
)
def test_a_skipped_line_whose_command_does_not_exist_fails(tmp_path, line, message):
    words = line.split()
    result = run(tmp_path, f"<!-- docs-runner: skip `{words[0]} {words[1]}`: why -->\n```bash\n{line}\n```\n")
    assert not result.ok
    assert f"docs-runner: doc.md:3: {message}" in result.output


def test_a_marked_line_must_be_one_simple_command(tmp_path):
    path = markdown(tmp_path, "<!-- docs-runner: skip `mlops ui`: blocks -->\n```bash\nmlops ui | tee log\n```\n")
    with pytest.raises(DocsError, match=r"not one simple command \(\|\)"):
        docs_runner.script(path)


SERVER = """\
import argparse, http.server
parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
port = parser.parse_args().port
http.server.HTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_served_line_is_started_on_a_free_port_answered_and_stopped(tmp_path):
    (tmp_path / "serve.py").write_text(SERVER)
    result = run(
        tmp_path,
        "<!-- docs-runner: serve `python serve.py`: serves until stopped -->\n```bash\npython serve.py --port 8000\n```\n",
    )
    assert result.ok, result.explain()
    served = [line for line in result.output.splitlines() if "doc.md:3: served" in line]
    assert len(served) == 1 and "answered 200 on http://127.0.0.1:" in served[0]
    port = int(served[0].rsplit(":", 1)[1].strip("/"))
    assert port != 8000 and not _listening(port)  # a free port instead of the documented one, and stopped


def test_a_background_line_serves_the_rest_of_its_block_on_its_port_and_is_stopped_after(tmp_path):
    (tmp_path / "serve.py").write_text(SERVER)
    (tmp_path / "hello.txt").write_text("hello from the served folder\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run(
        tmp_path,
        "<!-- docs-runner: background `python serve.py`: serves until stopped -->\n```bash\n"
        f"python serve.py --port {port}\ncurl -sf http://127.0.0.1:{port}/hello.txt\n```\n\n"
        f"```bash\necho next block\n```\n",
    )
    assert result.ok, result.explain()
    assert "hello from the served folder" in result.output  # the curl reached it, on the port as written
    assert "next block" in result.output
    assert not _listening(port)  # stopped when its block ended


def test_a_background_line_without_its_port_fails(tmp_path):
    (tmp_path / "serve.py").write_text(SERVER)
    result = run(
        tmp_path, "<!-- docs-runner: background `python serve.py`: serves -->\n```bash\npython serve.py\n```\n"
    )
    assert not result.ok
    assert "a background command names its port once (--port N)" in result.output


def test_a_served_line_that_exits_fails(tmp_path):
    result = run(
        tmp_path, "<!-- docs-runner: serve `python -c`: serves -->\n```bash\npython -c 'raise SystemExit(3)'\n```\n"
    )
    assert not result.ok
    assert "docs-runner: doc.md:3: `python -c 'raise SystemExit(3)' --port" in result.output
    assert "exited 3" in result.output
