"""The one model-access interface: a batch of chat requests in, completions with usage out.

Every engine (OpenAI-compatible HTTP, OpenAI Batch API, transformers, vLLM) implements
``Engine.generate``; callers never know which one they talk to.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

BUDGET_PREFIX = "budget:"  # Completion.error of a request not sent because --max-cost would be passed


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion request.

    ``params`` are sampling parameters in OpenAI names (temperature, top_p, max_tokens, seed,
    stop). ``custom_id`` maps a result back to its row and is not part of the cache key;
    ``prompt_version`` is, so editing a prompt file invalidates its cached answers.
    """

    messages: tuple[dict[str, str], ...]
    params: dict[str, Any] = field(default_factory=dict)
    prompt_version: str = ""
    custom_id: str = ""

    def cache_key(self, model: str) -> str:
        """Content hash of (model, messages, sampling params, prompt version)."""
        payload = {
            "model": model,
            "messages": [dict(m) for m in self.messages],
            "params": {k: self.params[k] for k in sorted(self.params)},
            "prompt_version": self.prompt_version,
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class Usage:
    """Token usage as reported by the engine, and its cost in USD from the price table."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_usd + other.cost_usd,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost_usd, 6),
        }


@dataclass
class Completion:
    """The result for one request. ``text`` is None when the request failed (see ``error``)."""

    text: str | None
    usage: Usage = field(default_factory=Usage)
    cached: bool = False
    error: str | None = None
    custom_id: str = ""
    finish_reason: str | None = None
    # False for a permanent failure (HTTP 400/401/403/404/422..., a refusal to send): retrying or
    # rerunning the same request cannot help, so callers reject the row with ``error`` as reason.
    retryable: bool = True
    status: int | None = None  # the HTTP status of a failed request, when there was one

    @property
    def ok(self) -> bool:
        return self.text is not None and self.error is None


@runtime_checkable
class Engine(Protocol):
    """Anything that turns a batch of chat requests into completions, in the same order.

    ``on_result(i, completion)`` is called as each result arrives (cached ones first), so a
    caller can write finished rows at once and a killed run loses nothing it paid for.
    Requests not sent because ``max_cost_usd`` would be passed come back with
    ``error`` starting with "budget:" and are not cached.
    """

    model: str

    def generate(
        self,
        requests: list[ChatRequest],
        *,
        progress: bool = True,
        on_result: Callable[[int, Completion], None] | None = None,
    ) -> list[Completion]: ...


@dataclass
class EngineOptions:
    """Options shared by every engine; the CLI fills them from its flags.

    The API key itself is never stored here: only the name of the environment variable that
    holds it, so options can be logged and written to manifests safely.
    """

    base_url: str | None = None
    # None: the user named no variable, so OPENAI_API_KEY goes to OpenAI hosts only (llm/endpoint.py)
    api_key_env: str | None = None
    concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 6
    cache_dir: str | None = None  # None: the default cache dir (~/.cache/rlkd-bench or $RLKD_CACHE_DIR)
    use_cache: bool = True
    batch_api: bool = False
    batch_dir: str | None = None  # where the Batch API job ids are persisted (the output dir)
    max_cost_usd: float | None = None
    prices: dict[str, tuple[float, float]] | None = None  # model -> (USD/1M input, USD/1M output)
    progress: bool = True
    # backoff between retries: base * 2**attempt seconds with jitter, at most retry_max_wait_s
    # (a server's Retry-After is honoured even when longer, up to 10 minutes)
    retry_base_s: float = 0.5
    retry_max_wait_s: float = 30.0
    # local engines (transformers, vllm): device ("cpu", "cuda", "auto") and batch size
    device: str | None = None
    batch_size: int = 16
