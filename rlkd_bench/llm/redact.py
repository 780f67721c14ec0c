"""Keep API keys out of everything we print, log or write.

The key is read from the environment at the moment a client is built and never stored on an
engine's public state; any text that leaves the engine (error messages, summaries) goes through
``redact`` first, which masks the live key and anything shaped like a provider key.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

_KEY_SHAPES = re.compile(r"\b(?:sk-[A-Za-z0-9_\-*.]{6,}|hf_[A-Za-z0-9]{10,})")
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")
MASK = "***"


def redact(text: str, secrets: tuple[str | None, ...] = ()) -> str:
    """``text`` with the given secret values, bearer tokens and key-shaped strings masked."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, MASK)
    text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    return _KEY_SHAPES.sub(MASK, text)


def redact_env(text: str, env_names: tuple[str, ...]) -> str:
    """Mask the current values of the named environment variables (and key shapes) in ``text``."""
    return redact(text, tuple(os.environ.get(n) for n in env_names))


def safe_url(url: str | None) -> str | None:
    """A URL without user:password and without its query string (tokens sometimes ride there)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
