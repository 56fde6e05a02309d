"""Run the shell examples of a markdown file exactly as written, so documented commands cannot rot.

The fenced ``bash``/``sh``/``shell``/``console`` blocks of one file run, in order, as
one bash script (``set -euo pipefail``; in ``console`` blocks only the ``$ `` lines).
A non-zero exit or a "Traceback" in the output fails the run.

A command that cannot run here as written is named, with the reason, in an HTML
comment (invisible on the rendered page) among the lines just before its block::

    <!-- docs-runner: skip `mlops run --environment dev`: needs the dev tracking server -->
    <!-- docs-runner: serve `mlops ui`: serves until Ctrl+C -->
    ```bash
    mlops run --environment dev
    mlops ui --port 5000
    ```

The quoted text names one line of the block: the line it equals (its comment aside),
or else the only line it begins. Instead of the line, the script then checks it is a
real command where it stands (same folder, same variables):

- ``skip``: an installed Python command (``mlops``, ``mlflow``, ``pytest``…) or
  ``python -m MODULE`` runs with ``--help`` added and must exit 0; any other program
  must exist, and the script a shell or Python runs (``bash scripts/x.sh``) too.
- ``serve``: the command starts with ``--port`` set to a free port, must answer HTTP
  on 127.0.0.1, and is stopped.
- ``background``: the command starts on the ``--port`` it names, must answer HTTP on
  127.0.0.1, and keeps serving while the rest of its block runs (a ``curl`` to it); it
  is stopped when the block ends, or when the script stops.

A marker without a reason, or naming no line (or several), is an error.

This file is also the helper the script calls: ``python docs_runner.py skip|serve|background WHERE -- COMMAND…``
(and ``stop-background`` at a block's end).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
MARKER_KINDS = ("skip", "serve", "background")
BACKGROUND_PIDS = "DOCS_RUNNER_BACKGROUND"  # the file listing the process groups `background` left serving
HELP_TIMEOUT = 120.0
SERVE_TIMEOUT = 90.0

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)")
_MARKER = re.compile(r"<!--\s*docs-runner\b(.*?)-->")
_MARKER_BODY = re.compile(r"^:\s*(?P<kind>\w+)\s+`(?P<target>[^`]+)`\s*(?::\s*(?P<reason>.*?))?\s*$")
_HEREDOC = re.compile(r"(?<!<)<<-?(?!<)\s*(['\"]?)(\w+)\1")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")
_SHELLS = {"bash", "sh", "zsh", "dash"}


class DocsError(Exception):
    """The markdown itself is wrong: a marker without a reason, or naming no line."""


@dataclass(frozen=True)
class Marker:
    kind: str  # skip, serve or background
    target: str
    reason: str
    line: int


@dataclass
class Command:
    """One logical line of a shell block: a command, possibly continued over several lines."""

    file: str
    line: int
    text: str  # as written, continuation lines included
    marker: Marker | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def command(self) -> str:
        """The text on one line, without a trailing comment."""
        joined = re.sub(r"\\\n\s*", " ", self.text).strip()
        return _strip_comment(joined)

    @property
    def words(self) -> list[str]:
        try:
            return shlex.split(self.command, comments=True)
        except ValueError as exc:
            raise DocsError(f"{self.where}: cannot read `{self.command}` as shell words ({exc})") from exc


@dataclass
class Block:
    file: str
    line: int  # of the opening fence
    language: str
    lines: list[tuple[int, str]] = field(default_factory=list)  # (line number, text) of the body
    markers: list[Marker] = field(default_factory=list)

    def commands(self) -> list[Command]:
        """Logical lines of the block, markers attached; comment-only and blank lines left out."""
        found: list[Command] = []
        body = self.lines
        if self.language == "console":
            body = _console_commands(body)
        i = 0
        while i < len(body):
            number, text = body[i]
            i += 1
            if not text.strip() or text.strip().startswith("#"):
                continue
            parts = [text]
            while parts[-1].rstrip().endswith("\\") and i < len(body):
                parts.append(body[i][1])
                i += 1
            heredoc = _HEREDOC.search(_strip_comment(parts[0]))
            if heredoc:
                end, dash = heredoc.group(2), "<<-" in parts[0]
                while i < len(body):
                    parts.append(body[i][1])
                    i += 1
                    if (parts[-1].strip() if dash else parts[-1]) == end:
                        break
            found.append(Command(self.file, number, "\n".join(parts)))
        for marker in self.markers:
            _attach(marker, found, self)
        return found


def _console_commands(body: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """A transcript's commands: the `$ ` lines and their continuation lines; the rest is output."""
    kept: list[tuple[int, str]] = []
    continued = False
    for number, text in body:
        if continued:
            kept.append((number, text))
        elif text.strip().startswith("$ "):
            kept.append((number, text.strip()[2:]))
        else:
            continue
        continued = text.rstrip().endswith("\\")
    return kept


def _strip_comment(line: str) -> str:
    """`line` without a trailing `# comment` (a `#` inside quotes or a word stays)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _attach(marker: Marker, commands: list[Command], block: Block) -> None:
    exact = [c for c in commands if c.command == marker.target]
    matches = exact or [c for c in commands if c.command.startswith(marker.target)]
    where = f"{block.file}:{marker.line}"
    if len(matches) != 1:
        listed = "; ".join(f"`{c.command}`" for c in matches) or "none"
        raise DocsError(
            f"{where}: marker `{marker.target}` must name exactly one line of the block at line {block.line} "
            f"(the line it equals, or the only one it begins); it names {len(matches)}: {listed}"
        )
    if matches[0].marker is not None:
        raise DocsError(f"{where}: line {matches[0].where} already has a marker")
    matches[0].marker = marker


def parse(path: Path, *, name: str | None = None) -> list[Block]:
    """The shell blocks of a markdown file, each with the markers written just before it."""
    name = name or path.name
    blocks: list[Block] = []
    pending: list[Marker] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        number, text = i + 1, lines[i]
        i += 1
        fence = _FENCE.match(text)
        if fence:
            mark, language = fence.group(1), fence.group(2).lower()
            body: list[tuple[int, str]] = []
            while i < len(lines) and not lines[i].strip().startswith(mark):
                body.append((i + 1, lines[i]))
                i += 1
            i += 1  # the closing fence
            if language in SHELL_LANGUAGES:
                blocks.append(Block(name, number, language, body, pending))
            elif pending:
                raise DocsError(
                    f"{name}:{pending[0].line}: marker is followed by a `{language}` block, not a shell one"
                )
            pending = []
            continue
        for match in _MARKER.finditer(text):
            pending.append(_marker(match.group(1), f"{name}:{number}", number))
        if pending and text.strip() and not _MARKER.fullmatch(text.strip()):
            raise DocsError(
                f"{name}:{pending[0].line}: a docs-runner marker must stand just before a fenced shell block"
            )
    if pending:
        raise DocsError(f"{name}:{pending[0].line}: a docs-runner marker must stand just before a fenced shell block")
    return blocks


def _marker(body: str, where: str, line: int) -> Marker:
    syntax = "<!-- docs-runner: skip `COMMAND`: REASON -->  (or serve)"
    match = _MARKER_BODY.match(body.strip())
    if not match:
        raise DocsError(f"{where}: cannot read marker `{body.strip()}`; write {syntax}")
    kind, target, reason = match.group("kind"), match.group("target").strip(), (match.group("reason") or "").strip()
    if kind not in MARKER_KINDS:
        raise DocsError(f"{where}: unknown marker kind '{kind}'; use one of {', '.join(MARKER_KINDS)}")
    if not reason:
        raise DocsError(f"{where}: marker for `{target}` gives no reason; write {syntax}")
    return Marker(kind, target, reason, line)


def commands(path: Path, *, name: str | None = None) -> list[Command]:
    """Every command of the file's shell blocks, in order, markers attached."""
    return [c for block in parse(path, name=name) for c in block.commands()]


# -- the script -------------------------------------------------------------------------------


def script(path: Path, *, name: str | None = None) -> str:
    """The bash script that runs the file's commands as written, and checks the marked ones."""
    helper = f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve()))}"
    out = [
        "set -euo pipefail",
        "__docs_at=start",
        """trap 'printf "docs-runner: %s failed (exit %s)\\n" "$__docs_at" "$?" >&2' ERR""",
        f'export {BACKGROUND_PIDS}="$(mktemp)"',
        f'trap "{helper} stop-background" EXIT',  # the helper's path is single-quoted where it needs quoting
    ]
    clock = "${EPOCHREALTIME:-0}"
    for block in parse(path, name=name):
        for command in block.commands():
            out.append(f"__docs_at={shlex.quote(command.where)}; __docs_t={clock}")
            out.append(f"printf '\\n%s\\n' {shlex.quote(f'$ {command.command}')}")
            if command.marker is None:
                out.append(command.text)
            else:
                _check_simple(command)
                out.append(f"{helper} {command.marker.kind} {shlex.quote(command.where)} -- {command.command}")
            out.append(_ELAPSED)
        if any(c.marker is not None and c.marker.kind == "background" for c in block.commands()):
            out.append(f"{helper} stop-background")
    return "\n".join(out) + "\n"


# How long the command took (bash 5 clock, in microseconds), so a slow example shows in the output.
_ELAPSED = (
    "__docs_now=${EPOCHREALTIME:-0}; __docs_us=$(( ${__docs_now//[.,]/} - ${__docs_t//[.,]/} )); "
    'printf "[%s: %d.%d s]\\n" "$__docs_at" $((__docs_us / 1000000)) $((__docs_us / 100000 % 10))'
)


def _check_simple(command: Command) -> None:
    lexer = shlex.shlex(command.command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    operators = [t for t in lexer if t and set(t) <= set("();<>|&")]
    if operators:
        raise DocsError(
            f"{command.where}: `{command.command}` is marked {command.marker.kind} but is not one simple command "
            f"({' '.join(operators)}); put the marked command on a line of its own"
        )


@dataclass
class Result:
    file: str
    returncode: int
    output: str
    script: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and "Traceback" not in self.output

    def explain(self) -> str:
        why = f"exit {self.returncode}" if self.returncode else "a Traceback in the output"
        return f"the shell examples of {self.file} failed ({why}):\n{self.output[-6000:]}"


class Run:
    """A markdown file's script running in the background; `wait()` gives its Result."""

    def __init__(self, path: Path, *, cwd: Path, name: str | None = None, env: dict[str, str] | None = None):
        self.name = name or path.name
        self.script = script(path, name=self.name)
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in wait)
        self.process = subprocess.Popen(
            ["bash", "-c", self.script, "docs-runner"],
            cwd=cwd,
            env=env if env is not None else user_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait(self, timeout: float = 900.0) -> Result:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            code = -1
        self._log.seek(0)
        output = self._log.read().decode(errors="replace")
        self._log.close()
        if code == -1:
            output += f"\ndocs-runner: timed out after {timeout:.0f} s"
        return Result(self.name, code, output, self.script)

    def stop(self) -> None:
        """End the script and everything it started (its own process group)."""
        _stop_group(self.process)


def run(path: Path, *, cwd: Path, name: str | None = None, env: dict[str, str] | None = None, timeout=900.0):
    """Run a markdown file's shell examples in `cwd` and return the Result."""
    return Run(path, cwd=cwd, name=name, env=env).wait(timeout)


def copy_checkout(root: Path, dest: Path, *, bootstrap: tuple[str, ...] = (".tools",)) -> Path:
    """Copy a git work tree's files (tracked, and new ones not ignored, as they are now) to `dest`.

    The copy is what a fresh clone with these edits would hold, so documented commands can
    write there freely. Folders in `bootstrap` that the repository's own scripts install
    (ignored by git) are linked, not copied, so the copy does not download them again.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = root / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    for name in bootstrap:
        if (root / name).is_dir() and not (dest / name).exists():
            (dest / name).symlink_to((root / name).resolve(), target_is_directory=True)
    return dest


def user_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a user whose shell has this venv's commands first on PATH (as when it is activated).

    Variables of the test session that steer `mlops` or MLflow elsewhere are left out, and
    bytecode is cached as on a user's machine.
    """
    drop = ("MLFLOW_", "MLOPS_", "PYTEST_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and k != "PYTHONDONTWRITEBYTECODE"}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', os.defpath)}"
    env.update(extra or {})
    return env


# -- the helper the script calls for marked lines -------------------------------------------


def _split(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Leading NAME=VALUE words are variables for the command, as in a shell."""
    env = dict(os.environ)
    i = 0
    while i < len(argv) and _ASSIGNMENT.match(argv[i]):
        name, _, value = argv[i].partition("=")
        env[name] = value
        i += 1
    return env, argv[i:]


def _resolve(program: str, env: dict[str, str]) -> str | None:
    if os.sep in program:
        return program if os.access(program, os.X_OK) and Path(program).is_file() else None
    return shutil.which(program, path=env.get("PATH"))


def _is_python_command(path: str) -> bool:
    """An installed console script of a Python package (its `#!` names a Python)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" in first


def check_skipped(where: str, argv: list[str]) -> int:
    """A skipped line is still a real command: its --help works, or its program and script exist."""
    env, words = _split(argv)
    if not words:
        return _fail(where, "no command after the variables")
    program = _resolve(words[0], env)
    if program is None:
        return _fail(where, f"program `{words[0]}` is not found (PATH or the current folder)")
    name = Path(words[0]).name
    if (_PYTHON.match(name) and words[1:2] == ["-m"]) or (not _PYTHON.match(name) and _is_python_command(program)):
        command = [*words, "--help"]
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=HELP_TIMEOUT)
        except subprocess.TimeoutExpired:
            return _fail(where, f"`{shlex.join(command)}` did not finish within {HELP_TIMEOUT:.0f} s")
        if done.returncode != 0:
            return _fail(where, f"`{shlex.join(command)}` exited {done.returncode}:\n{done.stdout}{done.stderr}")
        print(f"docs-runner: {where}: skipped, `{shlex.join(command)}` works")
        return 0
    if name in _SHELLS or _PYTHON.match(name):
        script = next((w for w in words[1:] if not w.startswith("-")), None)
        if script is None or not Path(script).is_file():
            return _fail(where, f"`{shlex.join(words)}`: no script `{script}` in {os.getcwd()}")
    print(f"docs-runner: {where}: skipped, `{words[0]}` exists")
    return 0


def check_served(where: str, argv: list[str]) -> int:
    """Start a serving command on a free port, wait for an HTTP answer on 127.0.0.1, stop it."""
    env, words = _split(argv)
    port = _free_port()
    words = _with_port(words, port)
    with tempfile.TemporaryFile() as log:
        try:
            process = subprocess.Popen(words, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            return _fail(where, f"`{shlex.join(words)}` cannot start: {exc}")
        try:
            return _answered(where, process, words, port, log, "served")
        finally:
            _stop_group(process)


def check_background(where: str, argv: list[str]) -> int:
    """Start a serving command on the port it names, wait for an HTTP answer, and leave it serving."""
    env, words = _split(argv)
    ports = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--port"]
    if len(ports) != 1 or not ports[0].isdigit():
        return _fail(where, f"`{shlex.join(words)}`: a background command names its port once (--port N)")
    log = tempfile.NamedTemporaryFile(prefix="docs-runner-", suffix=".log", delete=False)  # noqa: SIM115
    try:
        process = subprocess.Popen(words, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        return _fail(where, f"`{shlex.join(words)}` cannot start: {exc}")
    with open(os.environ[BACKGROUND_PIDS], "a") as pids:  # stopped by stop_background, even if this check fails
        pids.write(f"{process.pid}\n")
    return _answered(where, process, words, int(ports[0]), log, "serving in the background")


def _answered(where: str, process: subprocess.Popen, words: list[str], port: int, log, done: str) -> int:
    """0 once `process` answers HTTP on 127.0.0.1:`port` (below 500); 1 if it exits, fails or stays silent."""
    url = f"http://127.0.0.1:{port}/"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
    deadline = time.monotonic() + SERVE_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return _fail(where, f"`{shlex.join(words)}` exited {process.returncode}:\n{_read(log)}")
        try:
            with opener.open(url, timeout=5) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            time.sleep(0.25)
            continue
        if status >= 500:
            return _fail(where, f"{url} answered {status}:\n{_read(log)}")
        print(f"docs-runner: {where}: {done}, `{shlex.join(words)}` answered {status} on {url}")
        return 0
    return _fail(where, f"`{shlex.join(words)}` did not answer on {url} within {SERVE_TIMEOUT:.0f} s")


def stop_background() -> int:
    """Stop every process group `background` started, and forget them."""
    listed = Path(os.environ.get(BACKGROUND_PIDS, "/nonexistent"))
    if not listed.is_file():
        return 0
    for pid in listed.read_text().split():
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(int(pid), sig)
            except ProcessLookupError:
                break
            for _ in range(150):
                try:
                    os.killpg(int(pid), 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                continue
            break
    listed.write_text("")
    return 0


def _with_port(words: list[str], port: int) -> list[str]:
    out, i, replaced = [], 0, False
    while i < len(words):
        if words[i] == "--port" and i + 1 < len(words):
            out += ["--port", str(port)]
            i += 2
            replaced = True
            continue
        if words[i].startswith("--port="):
            out.append(f"--port={port}")
            replaced = True
        else:
            out.append(words[i])
        i += 1
    return out if replaced else [*out, "--port", str(port)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _read(log) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-3000:]


def _stop_group(process: subprocess.Popen) -> None:
    """Stop a process started in its own session, and whatever it started (its process group).

    SIGTERM first; then SIGKILL for what is left of the group, such as workers outliving their parent.
    """
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    if process.poll() is None:
        process.kill()
        process.wait()


def _fail(where: str, message: str) -> int:
    print(f"docs-runner: {where}: {message}", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    if argv == ["stop-background"]:
        return stop_background()
    if len(argv) < 3 or argv[0] not in MARKER_KINDS or argv[2] != "--":
        print(f"usage: {Path(__file__).name} skip|serve|background WHERE -- COMMAND...", file=sys.stderr)
        return 2
    check = {"skip": check_skipped, "serve": check_served, "background": check_background}[argv[0]]
    return check(argv[1], argv[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
