"""Text fit to print or store: every secret it may carry replaced by `***`.

A tracking or registry URI can hold a password (`postgresql://ml:secret@db/mlflow`),
a token (`https://user:token@mlflow.example`) or a credential in its query
(`?password=…`, a presigned URL's `X-Amz-Signature=…`); and any text (an
exception's message, a traceback, a warning) can quote the value of a
variable such as `MLFLOW_TRACKING_PASSWORD` or `AWS_SECRET_ACCESS_KEY`.
Everything the library prints, logs, raises, stores or shows in a repr goes
through here first; the `mlops` command also writes all its terminal output
through :class:`RedactingStream`.
"""

from __future__ import annotations

import os
import re
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO, TypeVar

HIDDEN = "***"
# Variables whose values are secrets: the name holds PASSWORD, SECRET or TOKEN, or ends in _KEY.
_SECRET_VARIABLE = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$")
SHORTEST_SECRET = 6  # shorter values ("true", a port) would hide ordinary words

# Query parameters whose value is a credential (matched anywhere in the name, any case).
_SECRET_PARAMETER = re.compile(
    r"pass|pwd|secret|token|signature|credential|api[_-]?key|^key$|^sig$|^auth(orization)?$", re.IGNORECASE
)
# `scheme://user:password@` anywhere in a text; the password ends at the last `@` before the host.
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/?#@'\"]*):(?P<secret>[^\s/?#'\"]*)@")
_QUERY_PAIR = re.compile(r"(?P<head>[?&;](?P<name>[^=&;#\s'\"]+)=)(?P<value>[^&;#\s'\"]*)")


def redact(uri: str) -> str:
    """`uri` with the password of its user part and credential-looking query values replaced by `***`."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:  # not a URI at all (an unbalanced bracket): scrub it as text
        return redact_text(uri)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{HIDDEN}@{host}" if colon else netloc
    query = _QUERY_PAIR.sub(_hide_value, "?" + parts.query)[1:] if parts.query else parts.query
    if (netloc, query) == (parts.netloc, parts.query):
        return _hide_variables(uri)
    return _hide_variables(urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query)))


def redact_text(text: str) -> str:
    """`text` (an error message, a traceback, a repr) with every secret variable's value and URI credential hidden."""
    text = _hide_variables(text)
    text = _USERINFO.sub(lambda m: f"{m['head']}:{HIDDEN}@", text)
    return _QUERY_PAIR.sub(_hide_value, text)


def secret_values() -> list[str]:
    """The values of this process's secret variables (see `_SECRET_VARIABLE`), longest first."""
    found = {
        value
        for name, value in os.environ.items()
        if len(value) >= SHORTEST_SECRET and _SECRET_VARIABLE.search(name.upper())
    }
    return sorted(found, key=len, reverse=True)


def _hide_variables(text: str) -> str:
    for value in secret_values():
        if value in text:
            text = text.replace(value, HIDDEN)
    return text


def _hide_value(match: re.Match[str]) -> str:
    if _SECRET_PARAMETER.search(match["name"]) and match["value"]:
        return match["head"] + HIDDEN
    return match[0]


T = TypeVar("T", bound=type)


def redacted_repr(cls: T) -> T:
    """Class decorator: the class's repr (a dataclass's, say) with every secret in a URI field hidden."""
    shown = cls.__repr__

    def __repr__(self) -> str:
        return redact_text(shown(self))

    __repr__.__qualname__ = f"{cls.__qualname__}.__repr__"
    cls.__repr__ = __repr__
    return cls


class RedactingStream:
    """A text stream that redacts what is written to it before passing it on; anything else is the stream's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact_text(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def redacted_output() -> Iterator[None]:
    """While it lasts, everything written to `sys.stdout` and `sys.stderr` (prints, logs, warnings) is redacted."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (s if isinstance(s, RedactingStream) else RedactingStream(s) for s in saved)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
