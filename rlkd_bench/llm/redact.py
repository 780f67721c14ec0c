"""The one owner of redaction: keep keys, passwords and URL secrets out of everything we print,
log or write (argv in manifests and cards, URLs, error texts, rows of rejects).

Three layers, all applied by ``redact``:
- values the process knows are secret: the live API key, and the password, Basic-auth header and
  query values of a ``--base-url`` (engines call ``register_url_secrets`` when they are built);
- shapes: ``Bearer``/``Basic`` credentials, ``user:password@`` in any URL, secret-named query
  parameters (``api_key=``, ``token=`` ...), provider key shapes (``sk-...``, ``hf_...``);
- for argv, options that carry a secret value (``--api-key``, ``--token``) and every URL in it.

The key is read from the environment at the moment a client is built and never stored on an
engine's public state.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
import traceback
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

MASK = "***"
_KEY_SHAPES = re.compile(r"\b(?:sk-[A-Za-z0-9_\-*.]{6,}|hf_[A-Za-z0-9]{10,})")
_AUTH_SCHEME = re.compile(r"(?i)\b((?:bearer|basic)\s+)[A-Za-z0-9+/=._~\-]+")
# scheme://user:password@ or scheme://token@ in any text
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@?#]+@")
_SECRET_PARAM = re.compile(
    r"(?i)([?&;]|\b)((?:api[_-]?key|apikey|key|token|access[_-]?token|auth|authorization|secret|"
    r"password|passwd|pwd|sig|signature|client[_-]?secret|x-api-key)=)[^&\s#'\"<>]+")
_SECRET_OPTIONS = ("--api-key", "--token", "--hf-token", "--password", "--secret")
_MIN_SECRET_LEN = 4  # shorter values would mask ordinary words; the shape rules still catch them

_known: set[str] = set()
_lock = threading.Lock()


def register_secret(*values: str | None) -> None:
    """Remember values that must never appear in any text ``redact`` sees (process-wide)."""
    with _lock:
        for v in values:
            if v and len(v) >= _MIN_SECRET_LEN:
                _known.add(v)
                _known.add(quote(v, safe=""))


def url_secrets(url: str | None) -> list[str]:
    """The secret parts of a URL: password, user, the Basic-auth token they make, query values."""
    if not url:
        return []
    parts = urlsplit(url)
    out: list[str] = []
    if parts.username is not None or parts.password is not None:
        user, pw = unquote(parts.username or ""), unquote(parts.password or "")
        out += [pw, base64.b64encode(f"{user}:{pw}".encode()).decode()]
        if pw:  # user + password: the user name alone is not a secret; a bare token@ is
            out.append(f"{user}:{pw}")
        else:
            out.append(user)
    out += [v for _, v in parse_qsl(parts.query, keep_blank_values=False)]
    return [s for s in out if s]


def register_url_secrets(url: str | None) -> None:
    register_secret(*url_secrets(url))


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with known and given secret values, credentials in URLs and headers, secret query
    parameters and key-shaped strings masked."""
    if not text:
        return text
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    given = [s for s in secrets if s and len(s) >= _MIN_SECRET_LEN]
    for s in sorted(given, key=len, reverse=True) + known:
        if s in text:
            text = text.replace(s, MASK)
    text = _URL_USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    text = _AUTH_SCHEME.sub(lambda m: m.group(1) + MASK, text)
    text = _SECRET_PARAM.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    return _KEY_SHAPES.sub(MASK, text)


def redact_env(text: str, env_names: tuple[str, ...]) -> str:
    """Mask the current values of the named environment variables (and key shapes) in ``text``."""
    return redact(text, tuple(os.environ.get(n) for n in env_names))


def safe_url(url: str | None) -> str | None:
    """A URL without user:password and without its query string: what manifests record."""
    if not url:
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, _hostport(parts), parts.path, "", ""))


def redact_url(url: str) -> str:
    """A URL that keeps its shape (which parameters, that there were credentials) but no secret:
    ``http://u:p@h/v1?api_key=x`` -> ``http://***@h/v1?api_key=***``."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return redact(url)
    host = _hostport(parts)
    if parts.username is not None or parts.password is not None:
        host = f"{MASK}@{host}"
    query = "&".join(f"{k}={MASK}" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return redact(urlunsplit((parts.scheme, host, parts.path, query, "")))


_URL_IN_TEXT = re.compile(r"(?i)\b[a-z][a-z0-9+.\-]*://[^\s'\"<>`]+")  # a backtick ends it (markdown code)


def redact_argv(argv: list[str]) -> list[str]:
    """The command line for manifests and cards: secret options masked, every URL in an argument
    (``--base-url URL``, ``gsrm:URL``) without credentials or query values, key shapes masked."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(MASK)
            hide_next = False
            continue
        low = arg.lower()
        name = low.split("=", 1)[0]
        if name in _SECRET_OPTIONS and "=" in arg:
            out.append(arg.split("=", 1)[0] + "=" + MASK)
            continue
        if low in _SECRET_OPTIONS:
            out.append(arg)
            hide_next = True
            continue
        out.append(redact(_URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), arg)))
    return out


def redact_text(text: str) -> str:
    """Free text for a screen, a progress bar or a log line: every URL in it as ``redact_url``
    writes it (credentials and query values masked), then ``redact``."""
    if not text:
        return text
    return redact(_URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text))


def scrub(obj: Any) -> Any:
    """Every string in a JSON-like object (dict keys kept) redacted as argv is, URLs included:
    for manifests, cards and row logs."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, Mapping):
        return {k: scrub(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v) for v in obj]
    return obj


def _hostport(parts: Any) -> str:
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return host


class RedactFilter(logging.Filter):
    """A log record's message (and traceback) redacted before any handler formats it: a library's
    log line may quote a URL with its query or an exception that carries request headers."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error handling
            return True
        record.msg, record.args = redact_text(message), None
        if record.exc_info and not record.exc_text:  # formatters reuse exc_text when it is set
            record.exc_text = redact_text("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return True


# Our loggers; filters apply to a logger's own records only, so each is named.
OUR_LOGGERS = ("rlkd_bench", "rlkd_bench.llm", "rlkd_bench.gsrm", "rlkd_bench.reward", "rlkd_bench.tasks")


def redact_logs(*names: str) -> None:
    """Put a ``RedactFilter`` on the named loggers (once each)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactFilter) for f in logger.filters):
            logger.addFilter(RedactFilter())


redact_logs(*OUR_LOGGERS)
