"""One on-disk store for every engine's answers, keyed by the request's content hash.

Layout: ``<cache_dir>/completions/<key[:2]>/<key>.json``, one small JSON file per request. A file
is written to a temp name in the same folder and renamed over its final name, so readers never
see half a file and any number of threads or processes can write at once (two writers of the same
key write the same answer; the last rename wins). SIGKILL loses at most the answers still in
flight. A file that does not parse (a crash of the OS mid-write) reads as a miss.

Only successful answers are stored: no failures, no "budget:" skips, and nothing about how the
server was reached (no URL, no key).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from rlkd_bench.llm.base import Completion, Usage

CACHE_ENV = "RLKD_CACHE_DIR"
SCHEMA = 1


def default_cache_dir() -> Path:
    """``$RLKD_CACHE_DIR`` if set, else ``~/.cache/rlkd-bench``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rlkd-bench"


class ResponseCache:
    """Content-addressed completions. ``get``/``put`` by the key from ``ChatRequest.cache_key``."""

    def __init__(self, cache_dir: str | os.PathLike | None = None):
        self.root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.dir = self.root / "completions"

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.root)!r})"

    def path_for(self, key: str) -> Path:
        if len(key) < 8 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"cache key must be a hex digest, got {key!r}")
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> Completion | None:
        """The stored completion (``cached=True``), or None on a miss or an unreadable entry."""
        path = self.path_for(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("text"), str):
            return None
        u = entry.get("usage") or {}
        usage = Usage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0)),
                      float(u.get("cost_usd", 0.0)))
        return Completion(text=entry["text"], usage=usage, cached=True,
                          finish_reason=entry.get("finish_reason"))

    def put(self, key: str, completion: Completion, *, model: str = "", meta: dict[str, Any] | None = None) -> bool:
        """Store a successful completion; failures and budget skips are refused (returns False)."""
        if not completion.ok:
            return False
        entry = {
            "schema": SCHEMA,
            "key": key,
            "model": model,
            "text": completion.text,
            "usage": completion.usage.to_dict(),
            "finish_reason": completion.finish_reason,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if meta:
            entry["meta"] = meta
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entry, f, ensure_ascii=False)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return True

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        if not self.dir.is_dir():
            return 0
        return sum(1 for _ in self.dir.glob("*/*.json"))
