"""URIs fit to print: the secrets a store URI may carry replaced by `***`.

A tracking or registry URI can hold a password (`postgresql://ml:secret@db/mlflow`),
a token (`https://user:token@mlflow.example`) or a credential in its query
(`?password=…`, a presigned URL's `X-Amz-Signature=…`). Everything the library
prints, logs, raises or shows in a repr goes through here first.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import TypeVar

HIDDEN = "***"

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
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_text(text: str) -> str:
    """`text` (an error message, a repr) with every URI's password and credential query values hidden."""
    text = _USERINFO.sub(lambda m: f"{m['head']}:{HIDDEN}@", text)
    return _QUERY_PAIR.sub(_hide_value, text)


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
