"""Where a request goes and which credential goes with it: one place for both decisions.

``--base-url`` may carry ``user:password@`` (sent as HTTP Basic auth) and a query string (sent
on every request as query parameters); both are taken out of the URL the client sees, so the
request path stays right and no secret reaches a log line through the URL.

The API key (from ``OPENAI_API_KEY``, or the variable named by ``--api-key-env``) is sent only
where the user meant it to go:
- no ``--base-url``, or an OpenAI host over https: the key from ``OPENAI_API_KEY`` (or the named
  variable); a missing key is an error;
- any other host: a key only when ``--api-key-env NAME`` names its variable, and then only over
  https, or over plain http to a loopback address (127.0.0.1, ::1, localhost); plain http to
  another host with a key is refused (use https or a loopback tunnel);
- otherwise no key and no ``Authorization`` header at all (a loopback ``vllm serve`` or
  ``transformers serve`` needs none).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from rlkd_bench.errors import ConfigError
from rlkd_bench.llm.redact import register_secret, register_url_secrets, safe_url

OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"


def is_loopback(base_url: str | None) -> bool:
    if not base_url:
        return False
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _openai_hostname(base_url: str) -> bool:
    host = (urlsplit(base_url).hostname or "").lower()
    return host == "openai.com" or host.endswith(".openai.com")


def is_openai_host(base_url: str | None) -> bool:
    """The OpenAI API itself: no base URL, or https to openai.com or one of its subdomains.

    The one answer to that question: which key goes (here), which prices apply (``cost.py``) and
    which cache namespace is used all ask this. Plain http to an OpenAI host is not the OpenAI
    API (``resolve`` refuses it)."""
    if not base_url:
        return True
    return urlsplit(base_url).scheme == "https" and _openai_hostname(base_url)


@dataclass(frozen=True)
class Endpoint:
    """A resolved endpoint. ``url`` has no credentials and no query; ``query`` goes with every
    request; ``authorization`` is the header value to send (None: no Authorization header)."""

    url: str
    query: dict[str, str] = field(default_factory=dict)
    authorization: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    key_env: str | None = None  # the variable the key came from (for messages), None if no key

    @property
    def display(self) -> str:
        return safe_url(self.url) or self.url

    def headers(self) -> dict[str, str]:
        return {"Authorization": self.authorization} if self.authorization else {}

    def no_key_hint(self) -> str:
        """Said after a 401/403 when we sent no key."""
        if self.api_key is not None or self.authorization:
            return ""
        return (f" (no API key was sent to {self.display}: {DEFAULT_KEY_ENV} goes only to api.openai.com; "
                "name the variable that holds this server's key with --api-key-env NAME)")


def split_base_url(base_url: str) -> tuple[str, dict[str, str], tuple[str, str] | None]:
    """``http://u:p@h/v1?k=v`` -> (``http://h/v1``, {"k": "v"}, ("u", "p"))."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--base-url {safe_url(base_url)!r}: expected an http(s) URL such as "
                          "http://localhost:8000/v1")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"--base-url {safe_url(base_url)!r}: the port is not a number") from None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    userinfo = None
    if parts.username is not None or parts.password is not None:
        userinfo = (unquote(parts.username or ""), unquote(parts.password or ""))
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, host, parts.path, "", "")), query, userinfo


def resolve(base_url: str | None, api_key_env: str | None) -> Endpoint:
    """The endpoint and the credential to send there (see the module docstring for the rule).

    ``api_key_env`` None means the user named no variable (``--api-key-env`` not given).
    Raises ConfigError when a key is needed and missing, or would go over plain http to a host
    that is not loopback.
    """
    register_url_secrets(base_url)
    if base_url:
        url, query, userinfo = split_base_url(base_url)
        if not is_openai_host(base_url) and _openai_hostname(base_url):
            raise ConfigError(f"--base-url {safe_url(base_url)!r}: the OpenAI API takes https only; use "
                              f"https://{urlsplit(base_url).hostname}{urlsplit(url).path}")
    else:
        url, query, userinfo = OPENAI_BASE_URL, {}, None
    explicit = api_key_env is not None
    name = api_key_env or DEFAULT_KEY_ENV
    send_key = explicit or is_openai_host(base_url)
    key = os.environ.get(name, "") if send_key else ""
    where = safe_url(url) if base_url else "the OpenAI API"
    if send_key and not key:
        raise ConfigError(f"no API key for {where}: set the environment variable {name}"
                          + ("" if explicit else " (or name another one with --api-key-env NAME)"))
    if send_key and urlsplit(url).scheme != "https" and not is_loopback(url):
        raise ConfigError(f"refusing to send the API key in {name} over plain http to {where}: use an https "
                          "URL, or reach the server through a loopback address (e.g. an SSH tunnel to "
                          "127.0.0.1)")
    authorization = None
    if send_key:
        register_secret(key)
        authorization = f"Bearer {key}"
    if userinfo is not None:
        if send_key:
            raise ConfigError(f"--base-url for {where} carries user:password and {name} holds an API key: "
                              "one Authorization header can carry only one of them; drop one")
        token = base64.b64encode(f"{userinfo[0]}:{userinfo[1]}".encode()).decode()
        register_secret(token)
        authorization = f"Basic {token}"
    return Endpoint(url=url, query=query, authorization=authorization, api_key=key if send_key else None,
                    key_env=name if send_key else None)


def list_models(ep: Endpoint, *, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The ``data`` entries of ``GET /models`` at the endpoint (with its query and credential).

    Raises ConfigError with a redacted reason when the server cannot be asked.
    """
    from rlkd_bench.llm.redact import redact

    url = ep.url.rstrip("/") + "/models"
    if ep.query:
        url += "?" + urlencode(ep.query)
    req = urllib.request.Request(url, headers=ep.headers())
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            body = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        raise ConfigError(redact(f"cannot list the models of {ep.display}: HTTP {e.code} {e.reason}"
                                 + (ep.no_key_hint() if e.code in (401, 403) else ""))) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ConfigError(redact(f"cannot list the models of {ep.display} "
                                 f"({type(e).__name__}: {getattr(e, 'reason', e)}); is the server up?")) from None
    data = body.get("data", []) if isinstance(body, dict) else []
    return [m for m in data if isinstance(m, dict) and m.get("id")]


def only_served_model(base_url: str, api_key_env: str | None, *, timeout_s: float, what: str, pick_hint: str,
                      lookup_hint: str = "") -> str:
    """The one model an OpenAI-compatible server lists at ``/models`` (for a GSRM or judge URL given
    without a model name). ConfigError when the server cannot be asked (``lookup_hint`` appended) or
    lists more or fewer than one model (``pick_hint`` says how to name it)."""
    try:
        names = [str(m["id"]) for m in list_models(resolve(base_url, api_key_env), timeout_s=timeout_s)]
    except ConfigError as e:
        if not lookup_hint:
            raise
        raise ConfigError(f"{e}; {lookup_hint}") from None
    if len(names) != 1:
        raise ConfigError(f"the {what} lists {len(names)} models ({', '.join(names[:5])}); {pick_hint}")
    return names[0]


# A /models `created` this close to now is the time of our request (vllm serve), not a
# checkpoint date, so it says nothing about which weights are served.
_VOLATILE_CREATED_S = 3600


def server_identity(ep: Endpoint, model: str, *, timeout_s: float = 10.0) -> str:
    """What identifies the answers of ``model`` at this server, for cache keys: the URL without
    credentials or query, and what the server says about the model (``id``, ``created`` when it is
    a checkpoint date, ``root``/``parent``), plus a hash of the checkpoint's files when the served
    path is a directory on this machine. A server that cannot be asked is identified by its URL."""
    import time

    from rlkd_bench.llm.runner import model_fingerprint

    parts: dict[str, Any] = {"url": ep.display}
    try:
        entries = list_models(ep, timeout_s=timeout_s)
    except ConfigError:
        entries = []
    entry = next((m for m in entries if str(m.get("id")) == model), None)
    if entry is not None:
        created = entry.get("created")
        if isinstance(created, int | float) and created and abs(time.time() - created) > _VOLATILE_CREATED_S:
            parts["created"] = int(created)
        for k in ("id", "root", "parent", "owned_by"):
            if entry.get(k) is not None:
                parts[k] = str(entry[k])
    for path in {model, str(parts.get("root") or "")}:
        if path and os.path.isdir(path):
            parts[f"checkpoint:{path}"] = model_fingerprint(path)
    blob = json.dumps(parts, sort_keys=True)
    return f"{ep.display}#{hashlib.sha256(blob.encode()).hexdigest()[:12]}"
