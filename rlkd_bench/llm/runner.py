"""What every engine shares: cache first, then the engine's own way of answering the rest.

``CachedEngine.generate`` answers cached requests at once, sends each distinct missing request
once (identical requests in one call share an answer), stores successes in the cache before
telling the caller (so a row on disk always has its answer cached), keeps counts in
``EngineStats`` and draws one progress bar. Engines implement ``_answer(pending, deliver)``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from rlkd_bench.llm.base import BUDGET_PREFIX, ChatRequest, Completion, EngineOptions, Usage
from rlkd_bench.llm.cache import ResponseCache
from rlkd_bench.llm.redact import redact_text, safe_url

log = logging.getLogger("rlkd_bench.llm")
T = TypeVar("T")

Deliver = Callable[[str, Completion], None]


@dataclass
class EngineStats:
    """Counts over the engine's lifetime (all ``generate`` calls). Costs are what was paid in
    this process; ``cached_cost_usd`` is what the cache hits had cost when first paid."""

    requests: int = 0
    cache_hits: int = 0
    sent: int = 0
    attempts: int = 0
    retries: int = 0
    failures: int = 0
    budget_skipped: int = 0
    usage_estimated: int = 0  # responses without a usage field, counted by our tokenizer
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cached_cost_usd: float = 0.0
    # timed-out attempts counted at their worst case against --max-cost (the server may bill them)
    timeout_worst_usd: float = 0.0
    wall_s: float = 0.0
    budget_stopped: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cost_usd"] = round(self.cost_usd, 6)
        d["cached_cost_usd"] = round(self.cached_cost_usd, 6)
        d["timeout_worst_usd"] = round(self.timeout_worst_usd, 6)
        d["wall_s"] = round(self.wall_s, 3)
        return d


class Budget:
    """``max_cost_usd`` as a reservation system: a request reserves its worst-case cost before it
    is sent and settles to its real cost when it returns, so concurrent requests can never
    together pass the budget. Once one request is refused, nothing more is sent."""

    def __init__(self, max_cost_usd: float | None):
        self.max = max_cost_usd
        self.spent = 0.0
        self.reserved = 0.0
        self.stopped = False
        self._lock = threading.Lock()

    def try_reserve(self, amount: float) -> bool:
        with self._lock:
            if self.stopped:
                return False
            if self.max is not None and self.spent + self.reserved + amount > self.max + 1e-12:
                self.stopped = True
                return False
            self.reserved += amount
            return True

    def settle(self, reserved: float, actual: float) -> None:
        with self._lock:
            self.reserved = max(0.0, self.reserved - reserved)
            self.spent += actual

    def reason(self) -> str:
        return (f"budget: sending it could pass --max-cost ${self.max:.4f} "
                f"(spent ${self.spent:.4f}, in flight up to ${self.reserved:.4f}); not sent")


class Progress:
    """A tqdm bar with cost, cache hits, retries and failures in the postfix."""

    def __init__(self, total: int, desc: str, stats: EngineStats, enabled: bool):
        from tqdm.auto import tqdm

        self.stats = stats
        self.start_cost = stats.cost_usd
        self.bar = tqdm(total=total, desc=redact_text(desc), unit="req", disable=not enabled, dynamic_ncols=True,
                        leave=True)
        self.hits0, self.retries0, self.fail0 = stats.cache_hits, stats.retries, stats.failures

    def refresh(self, advance: int = 0) -> None:
        s = self.stats
        if advance:
            self.bar.update(advance)
        self.bar.set_postfix_str(
            f"${s.cost_usd - self.start_cost:.4f} hits={s.cache_hits - self.hits0} "
            f"retries={s.retries - self.retries0} fail={s.failures - self.fail0}", refresh=False)

    def close(self) -> None:
        self.refresh()
        self.bar.close()


def run_sync(make_coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code: in this thread when it has no
    running loop (any thread works), else in a fresh thread (e.g. inside Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rlkd-llm") as ex:
        return ex.submit(lambda: asyncio.run(make_coro())).result()


def model_fingerprint(model: str) -> str:
    """The model name for cache keys. A local model directory also gets a short hash of its config
    and weight files (size + first and last 64 KiB), so retraining a checkpoint in place never
    serves the old checkpoint's cached answers."""
    p = Path(model)
    if not p.is_dir():
        return model
    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if not f.is_file() or f.name.startswith("."):
            continue
        if f.suffix in (".json", ".jinja", ".txt", ".model"):
            h.update(f.name.encode() + b"\0" + f.read_bytes())
        elif f.suffix in (".safetensors", ".bin", ".pt", ".gguf"):
            size = f.stat().st_size
            h.update(f"{f.name}\0{size}\0".encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 16))
                fh.seek(max(0, size - (1 << 16)))
                h.update(fh.read(1 << 16))
    return f"{model}#{h.hexdigest()[:12]}"


class CachedEngine:
    """Base class: the cache-first ``generate`` of the ``Engine`` protocol."""

    kind = "engine"

    def __init__(self, model: str, options: EngineOptions | None = None):
        self.model = model
        self.options = options or EngineOptions()
        self.stats = EngineStats()
        self.cache = ResponseCache(self.options.cache_dir) if self.options.use_cache else None
        self._cache_model: str | None = None

    # -- the protocol ------------------------------------------------------------------
    def generate(self, requests: list[ChatRequest], *, progress: bool = True,
                 on_result: Callable[[int, Completion], None] | None = None) -> list[Completion]:
        t0 = time.perf_counter()
        bar = Progress(len(requests), f"{self.kind}:{_short(self.model)}", self.stats,
                       progress and self.options.progress)
        results: list[Completion | None] = [None] * len(requests)
        self.stats.requests += len(requests)
        cache_model = self.cache_model()
        groups: dict[str, list[int]] = {}
        pending: list[tuple[str, ChatRequest]] = []
        emitted: list[tuple[int, Completion]] = []
        for i, req in enumerate(requests):
            key = req.cache_key(cache_model)
            hit = self.cache.get(key) if self.cache is not None else None
            if hit is not None:
                hit.custom_id = req.custom_id
                results[i] = hit
                self.stats.cache_hits += 1
                self.stats.cached_cost_usd += hit.usage.cost_usd
                emitted.append((i, hit))
                continue
            if key not in groups:
                groups[key] = []
                pending.append((key, req))
            groups[key].append(i)

        try:
            bar.refresh(len(emitted))
            if on_result is not None:
                for i, c in emitted:
                    on_result(i, c)

            def deliver(key: str, completion: Completion) -> None:
                idx = groups.get(key)
                if not idx or results[idx[0]] is not None:
                    return  # unknown or already answered
                # what the server answered is paid for, a refused reply (usage, no usable choice) too
                self.stats.prompt_tokens += completion.usage.prompt_tokens
                self.stats.completion_tokens += completion.usage.completion_tokens
                self.stats.cost_usd += completion.usage.cost_usd
                if completion.ok:
                    if self.cache is not None:
                        self.cache.put(key, completion, model=cache_model)
                elif (completion.error or "").startswith(BUDGET_PREFIX):
                    self.stats.budget_skipped += len(idx)
                else:
                    self.stats.failures += len(idx)
                for n, i in enumerate(idx):
                    c = completion if n == 0 else _copy(completion, cached=completion.ok)
                    c.custom_id = requests[i].custom_id
                    results[i] = c
                bar.refresh(len(idx))
                if on_result is not None:
                    for i in idx:
                        on_result(i, results[i])  # type: ignore[arg-type]

            if pending:
                self._answer(pending, deliver, bar)
        finally:
            bar.close()
            self.stats.wall_s += time.perf_counter() - t0
        out: list[Completion] = []
        for i, r in enumerate(results):
            if r is None:  # an engine bug, never silent
                r = Completion(text=None, error="internal: no result was produced", custom_id=requests[i].custom_id)
                self.stats.failures += 1
            out.append(r)
        log.info("%s:%s: %s", self.kind, _short(self.model), self.summary_line())
        return out

    # -- for subclasses ----------------------------------------------------------------
    def _answer(self, pending: list[tuple[str, ChatRequest]], deliver: Deliver, bar: Progress) -> None:
        raise NotImplementedError

    def cache_model(self) -> str:
        """The model name that goes into cache keys (engine family + model + checkpoint hash)."""
        if self._cache_model is None:
            self._cache_model = f"{self.cache_namespace()}:{model_fingerprint(self.model)}"
        return self._cache_model

    def cache_namespace(self) -> str:
        return self.kind

    # -- reporting ---------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts, tokens, cost and wall time, safe to write to a manifest (no key, no secrets)."""
        d: dict[str, Any] = {"engine": self.kind, "model": self.model}
        base_url = getattr(self.options, "base_url", None)
        if base_url:
            d["base_url"] = safe_url(base_url)
        d.update(self.stats.to_dict())
        d["max_cost_usd"] = self.options.max_cost_usd
        return d

    def summary_line(self) -> str:
        s = self.stats
        return (f"{s.requests} requests, {s.cache_hits} cached, {s.sent} sent, {s.retries} retries, "
                f"{s.failures} failed, {s.budget_skipped} over budget; "
                f"{s.prompt_tokens:,}+{s.completion_tokens:,} tokens, ${s.cost_usd:.4f}; {s.wall_s:.1f} s")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"


def _short(model: str) -> str:
    return model.rstrip("/").rsplit("/", 1)[-1] or model


def _copy(c: Completion, *, cached: bool) -> Completion:
    return Completion(text=c.text, usage=Usage(c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.cost_usd),
                      cached=cached, error=c.error, finish_reason=c.finish_reason, retryable=c.retryable,
                      status=c.status)
