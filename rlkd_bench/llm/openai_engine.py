"""OpenAI-compatible HTTP engine: GPT-4o, ``vllm serve``, ``transformers serve``, any such endpoint.

``concurrency`` workers share one ``AsyncOpenAI`` client; each request is retried by us (the
client's own retries are off, so every retry is counted) on 408/409/429/5xx, connection errors and
timeouts, with exponential backoff and jitter that never waits less than the server's Retry-After.
A permanent failure (HTTP 400, 401, 403, 404, 422 ...) is not retried: its Completion has
``retryable=False``, the status and the server's reason (redacted).

A request reserves its worst-case cost before it is sent (see ``runner.Budget``), so
``max_cost_usd`` is never passed; once one request does not fit, nothing more is sent and the
unsent ones come back as ``error="budget: ..."``. Spent money is what responses report as usage
(a refused reply, or one without a usable choice, included);
an attempt answered with an error status is free (OpenAI bills completed requests only), but one
that timed out on our side is counted at its worst case, since the server may have finished and
billed it; its retry must fit the budget again. A budget needs a known price (``--price``).

Where requests go and which credential goes with them is decided in ``endpoint.py``.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

from rlkd_bench.errors import ConfigError
from rlkd_bench.llm.base import ChatRequest, Completion, EngineOptions, Usage
from rlkd_bench.llm.cost import PriceTable, TokenCounter, worst_case_cost
from rlkd_bench.llm.endpoint import (
    Endpoint,
    is_loopback,
    is_openai_host,
    resolve,
    server_identity,
    split_base_url,
)
from rlkd_bench.llm.redact import redact, register_url_secrets, safe_url
from rlkd_bench.llm.runner import Budget, CachedEngine, Deliver, Progress, run_sync

log = logging.getLogger("rlkd_bench.llm")

# Sampling params every OpenAI-compatible server we target accepts. Others are dropped with a
# warning: `transformers serve` ignores or rejects `n`, `response_format`, `presence_penalty`...
SENT_PARAMS = ("temperature", "top_p", "max_tokens", "seed", "stop", "frequency_penalty")
ALIASES = {"max_new_tokens": "max_tokens", "max_completion_tokens": "max_tokens"}
# OpenAI reasoning models take max_completion_tokens and only the default temperature/top_p.
REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
RETRY_STATUS = {408, 409, 429}
MAX_RETRY_AFTER_S = 600.0
# The client insists on a key; when none is to be sent it gets this one and every request
# overrides the Authorization header (removed, or the Basic auth of --base-url).
PLACEHOLDER_KEY = "no-key-sent"
__all__ = ["OpenAIEngine", "is_loopback", "is_reasoning_model", "request_params", "retry_after_s", "backoff_s"]


def cache_namespace_for(kind: str, options: EngineOptions, model: str, cache_on: bool) -> str:
    """Cache-key namespace of an OpenAI-compatible server. The OpenAI API keeps the old plain
    namespace (model ids there are snapshots); another server adds its identity (URL and what
    /models says about the model, see ``endpoint.server_identity``), so a model retrained and served
    again under the same name, at the same or another URL, never gets the old answers."""
    if is_openai_host(options.base_url):
        return kind
    ep = resolve(options.base_url, options.api_key_env)
    if not cache_on:
        return f"{kind}@{ep.display}"
    return f"{kind}@{server_identity(ep, model, timeout_s=min(options.timeout_s, 30.0))}"


def is_reasoning_model(model: str) -> bool:
    name = model.rsplit("/", 1)[-1]
    return any(name == p or name.startswith(p + "-") for p in REASONING_PREFIXES)


def request_params(params: Mapping[str, Any], model: str) -> tuple[dict[str, Any], list[str]]:
    """The params to send (OpenAI names) and the names dropped."""
    out: dict[str, Any] = {}
    dropped: list[str] = []
    for k, v in params.items():
        k = ALIASES.get(k, k)
        if v is None:
            continue
        if k in SENT_PARAMS:
            out[k] = v
        else:
            dropped.append(k)
    if is_reasoning_model(model):
        if "max_tokens" in out:
            out["max_completion_tokens"] = out.pop("max_tokens")
        for k in ("temperature", "top_p"):
            if k in out:
                dropped.append(k)
                del out[k]
    return out, dropped


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_s(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with equal jitter: half fixed, half random, so retries spread out."""
    b = min(cap, base * (2 ** attempt))
    return b / 2 + rng.uniform(0, b / 2)


class OpenAIEngine(CachedEngine):
    """Chat completions over HTTP with the ``openai`` client."""

    kind = "openai"

    def __init__(self, model: str, options: EngineOptions | None = None):
        super().__init__(model, options)
        o = self.options
        if o.concurrency < 1:
            raise ConfigError(f"--concurrency must be >= 1, got {o.concurrency}")
        if o.timeout_s <= 0:
            raise ConfigError(f"--timeout must be > 0 seconds, got {o.timeout_s}")
        if o.max_retries < 0:
            raise ConfigError(f"--max-retries must be >= 0, got {o.max_retries}")
        if o.max_cost_usd is not None and o.max_cost_usd < 0:
            raise ConfigError(f"--max-cost must be >= 0, got {o.max_cost_usd}")
        register_url_secrets(o.base_url)
        if o.base_url:
            split_base_url(o.base_url)  # a malformed URL fails here, before any work
        self.prices = PriceTable(o.prices, base_url=o.base_url)
        self.prices.require(model, o.max_cost_usd)
        self.budget = Budget(o.max_cost_usd)
        self._counter: TokenCounter | None = None
        self._rng = random.Random()
        self._warned_params: set[str] = set()

    def __repr__(self) -> str:
        return f"OpenAIEngine(model={self.model!r}, base_url={safe_url(self.options.base_url)!r})"

    @property
    def counter(self) -> TokenCounter:
        if self._counter is None:
            self._counter = TokenCounter(self.model)
        return self._counter

    def _redact(self, text: str) -> str:
        return redact(text)  # the key and the URL's secrets are registered by endpoint.resolve

    def cache_namespace(self) -> str:
        return cache_namespace_for("openai", self.options, self.model, self.cache is not None)

    def summary(self) -> dict[str, Any]:
        d = super().summary()
        d["price_source"] = self.prices.source(self.model)
        return d

    # -- engine -------------------------------------------------------------------------
    def _answer(self, pending: list[tuple[str, ChatRequest]], deliver: Deliver, bar: Progress) -> None:
        ep = resolve(self.options.base_url, self.options.api_key_env)  # fail before anything is sent
        run_sync(lambda: self._run(pending, deliver, bar, ep))

    async def _run(self, pending: list[tuple[str, ChatRequest]], deliver: Deliver, bar: Progress,
                   ep: Endpoint) -> None:
        from openai import AsyncOpenAI
        from openai._types import omit

        client = AsyncOpenAI(api_key=ep.api_key or PLACEHOLDER_KEY, base_url=ep.url,
                             default_query=ep.query or None, max_retries=0, timeout=self.options.timeout_s)
        # per request, so the client's own Bearer header never goes out unless it is the key we mean
        headers: dict[str, Any] = {"Authorization": ep.authorization or omit}
        queue: asyncio.Queue[tuple[str, ChatRequest]] = asyncio.Queue()
        for item in pending:
            queue.put_nowait(item)

        async def worker() -> None:
            while True:
                try:
                    key, req = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                worst = (worst_case_cost(req, self.model, self.prices, self.counter)
                         if self.budget.max is not None else 0.0)
                if not self.budget.try_reserve(worst):
                    self.stats.budget_stopped = True
                    deliver(key, Completion(text=None, error=self.budget.reason(), custom_id=req.custom_id))
                    continue
                c = await self._call(client, req, bar, worst, headers, ep)
                deliver(key, c)

        tasks = [asyncio.ensure_future(worker()) for _ in range(min(self.options.concurrency, len(pending)))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close()

    async def _call(self, client: Any, req: ChatRequest, bar: Progress, worst: float,
                    headers: dict[str, Any], ep: Endpoint) -> Completion:
        """One request with our retries; never raises for server or network trouble. ``worst`` is
        reserved in the budget on entry; this settles it (and any retry's reservation)."""
        import openai

        params, dropped = request_params(req.params, self.model)
        for k in dropped:
            if k not in self._warned_params:
                self._warned_params.add(k)
                log.warning("param %r is not sent to %s (not accepted by every OpenAI-compatible server)",
                            k, self.model)
        messages = [dict(m) for m in req.messages]
        o = self.options
        self.stats.sent += 1
        attempt = 0
        while True:
            self.stats.attempts += 1
            wait_hint: float | None = None
            status: int | None = None
            try:
                resp = await asyncio.wait_for(
                    client.chat.completions.create(model=self.model, messages=messages, extra_headers=headers,
                                                   **params),
                    timeout=o.timeout_s)
                c = self._completion(resp, req)
                # a reply is paid for by its usage, usable or not (a refusal, no choices)
                self.budget.settle(worst, c.usage.cost_usd)
                return c
            except openai.APIStatusError as e:
                status = e.status_code
                retryable = status in RETRY_STATUS or status >= 500
                wait_hint = retry_after_s(e.response.headers if e.response is not None else None)
                err = f"HTTP {e.status_code}: {_server_reason(e)}"
                if status in (401, 403):
                    err += ep.no_key_hint()
            except (openai.APITimeoutError, asyncio.TimeoutError, TimeoutError):
                retryable, err = True, f"timeout after {o.timeout_s:g} s"
                if worst:  # the server may have finished and billed it: count it as spent
                    self.budget.settle(worst, worst)
                    self.stats.timeout_worst_usd += worst
                    if attempt < o.max_retries and not self.budget.try_reserve(worst):
                        self.stats.budget_stopped = True
                        return Completion(text=None, custom_id=req.custom_id, error=self._redact(
                            f"{self.budget.reason()} (its timed-out attempt counted at worst case "
                            f"${worst:.4f}, as the server may bill it)"))
                    if attempt >= o.max_retries:
                        worst = 0.0  # settled already; nothing more is reserved
            except openai.APIConnectionError as e:
                retryable, err = True, f"connection error: {_message(e)}"
            except openai.APIError as e:
                retryable, err = False, f"{type(e).__name__}: {_message(e)}"
            if not retryable or attempt >= o.max_retries:
                tries = f" (after {attempt + 1} attempts)" if attempt else ""
                self.budget.settle(worst, 0.0)
                if not retryable:
                    tries += "; a permanent error: the same request would fail again"
                return Completion(text=None, error=self._redact(err + tries), custom_id=req.custom_id,
                                  retryable=retryable, status=status)
            delay = backoff_s(attempt, o.retry_base_s, o.retry_max_wait_s, self._rng)
            if wait_hint is not None:
                delay = max(delay, min(wait_hint, MAX_RETRY_AFTER_S))
            self.stats.retries += 1
            bar.refresh()
            log.debug("retrying %s in %.2f s: %s", req.custom_id or "request", delay, self._redact(err))
            await asyncio.sleep(delay)
            attempt += 1

    def _completion(self, resp: Any, req: ChatRequest) -> Completion:
        choice = resp.choices[0] if resp.choices else None
        msg = choice.message if choice is not None else None
        text = (msg.content if msg is not None else None) or ""
        # Servers with a reasoning parser (transformers serve, vllm --reasoning-parser, DeepSeek's
        # API) move the <think> part to a side field; put it back so the trace is not lost.
        reasoning = (getattr(msg, "reasoning_content", None) or getattr(msg, "reasoning", None)
                     if msg is not None else None)
        if reasoning and "</think>" not in text:
            text = f"<think>{reasoning}</think>{text}"
        refusal = getattr(msg, "refusal", None) if msg is not None else None
        u = getattr(resp, "usage", None)
        if u is not None and u.prompt_tokens is not None:
            usage = Usage(int(u.prompt_tokens or 0), int(u.completion_tokens or 0))
        else:  # a server that reports no usage: count it ourselves
            usage = Usage(self.counter.count_messages(req.messages), self.counter.count_text(text))
            self.stats.usage_estimated += 1
        usage = self.prices.priced(self.model, usage)
        if choice is None:
            return Completion(text=None, usage=usage, error="the server answered without choices",
                              custom_id=req.custom_id)
        if refusal and not text:
            return Completion(text=None, usage=usage, error=self._redact(f"refused: {refusal}"),
                              custom_id=req.custom_id, finish_reason=getattr(choice, "finish_reason", None))
        return Completion(text=text, usage=usage, custom_id=req.custom_id,
                          finish_reason=getattr(choice, "finish_reason", None))


def _server_reason(e: Any) -> str:
    """The server's own words for an error status (OpenAI, vLLM and FastAPI shapes), else the
    client's message."""
    body = getattr(e, "body", None)
    reason: Any = None
    if isinstance(body, dict):
        err = body.get("error", body)
        reason = (err.get("message") or err.get("detail")) if isinstance(err, dict) else err
        reason = reason or body.get("detail") or body.get("message")
    elif isinstance(body, str):
        reason = body
    if not reason:
        return _message(e)
    return " ".join(str(reason).split())[:500]


def _message(e: Exception) -> str:
    msg = getattr(e, "message", None) or str(e) or type(e).__name__
    return " ".join(str(msg).split())[:500]

