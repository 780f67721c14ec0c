"""What a run costs: a price table, token estimates before a run, and the budget's worst case.

Prices are USD per 1M tokens (input, output), OpenAI's public list prices for standard
(synchronous) calls; the Batch API bills half of them. They change: override any of them with
``EngineOptions.prices`` or ``--price MODEL=IN,OUT`` (``parse_price``). A model with no price costs
0 and says so once, so a run against a local server is never priced by accident as GPT-4o.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlkd_bench.errors import ConfigError
from rlkd_bench.llm.base import ChatRequest, Usage

log = logging.getLogger("rlkd_bench.llm")

# USD per 1M tokens (input, output); OpenAI list prices, standard tier (checked 2025).
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-2024-05-13": (5.00, 15.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "o1": (15.00, 60.00),
    "o1-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-3.5-turbo": (0.50, 1.50),
}
BATCH_DISCOUNT = 0.5
CHARS_PER_TOKEN = 4.0
# Chat framing per message (role, separators) and the reply's priming tokens, as OpenAI documents.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3
# When a request sets no max_tokens, the budget assumes this many output tokens at worst...
DEFAULT_WORST_OUTPUT_TOKENS = 4096
# ...and an estimate assumes output = this ratio x input tokens (stated in the estimate).
DEFAULT_OUTPUT_RATIO = 1.0
# A chars/4 count can undershoot; the budget guard pads it by this factor.
CHAR_ESTIMATE_SAFETY = 1.25

_warned: set[str] = set()


def parse_price(spec: str) -> tuple[str, tuple[float, float]]:
    """``"gpt-4o=2.5,10"`` -> ``("gpt-4o", (2.5, 10.0))`` (USD per 1M input, output tokens)."""
    model, sep, rest = spec.partition("=")
    parts = rest.split(",")
    if not sep or not model.strip() or len(parts) != 2:
        raise ConfigError(f"--price {spec!r}: expected MODEL=IN,OUT (USD per 1M input,output tokens)")
    try:
        pin, pout = float(parts[0]), float(parts[1])
    except ValueError:
        raise ConfigError(f"--price {spec!r}: IN and OUT must be numbers (USD per 1M tokens)") from None
    if pin < 0 or pout < 0 or not (math.isfinite(pin) and math.isfinite(pout)):
        raise ConfigError(f"--price {spec!r}: prices must be finite and >= 0")
    return model.strip(), (pin, pout)


def parse_prices(specs: Iterable[str]) -> dict[str, tuple[float, float]]:
    """Several ``--price`` flags into one override dict (later flags win)."""
    return dict(parse_price(s) for s in specs)


class PriceTable:
    """Looks up a model's price: overrides first, then the defaults; dated snapshots
    (``gpt-4o-mini-2024-07-18``) and provider prefixes (``openai/gpt-4o``) resolve to their family."""

    def __init__(self, overrides: Mapping[str, tuple[float, float]] | None = None):
        self.prices = dict(DEFAULT_PRICES)
        self.overrides = dict(overrides or {})
        self.prices.update(self.overrides)

    def lookup(self, model: str) -> tuple[float, float] | None:
        for name in (model, model.rsplit("/", 1)[-1]):
            if name in self.prices:
                return self.prices[name]
        base = model.rsplit("/", 1)[-1]
        best = max((k for k in self.prices if base.startswith(k + "-")), key=len, default=None)
        return self.prices[best] if best else None

    def price(self, model: str, *, batch: bool = False) -> tuple[float, float]:
        """(USD/1M in, USD/1M out); unknown models are free, with one warning per model."""
        p = self.lookup(model)
        if p is None:
            if model not in _warned:
                _warned.add(model)
                log.warning("no price for model %r: its cost counts as 0 USD (set one with --price %s=IN,OUT)",
                            model, model)
            return (0.0, 0.0)
        factor = BATCH_DISCOUNT if batch else 1.0
        return (p[0] * factor, p[1] * factor)

    def known(self, model: str) -> bool:
        return self.lookup(model) is not None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> float:
        pin, pout = self.price(model, batch=batch)
        return (prompt_tokens * pin + completion_tokens * pout) / 1e6

    def priced(self, model: str, usage: Usage, *, batch: bool = False) -> Usage:
        """The usage with its cost filled in."""
        return Usage(usage.prompt_tokens, usage.completion_tokens,
                     self.cost(model, usage.prompt_tokens, usage.completion_tokens, batch=batch))


class TokenCounter:
    """Counts prompt tokens: the model's own tokenizer when it is a local directory, else tiktoken
    when installed, else about 4 characters per token. ``method`` says which was used."""

    def __init__(self, model: str = ""):
        self._hf = None
        self._tt = None
        self.method = f"~{CHARS_PER_TOKEN:g} chars/token (no tokenizer available)"
        if model and Path(model).is_dir():
            try:
                from transformers import AutoTokenizer

                self._hf = AutoTokenizer.from_pretrained(model)
                self.method = f"tokenizer of {os.path.basename(model.rstrip('/'))} (chat template)"
                return
            except Exception:  # no tokenizer files: fall through to the next counter
                self._hf = None
        try:
            import tiktoken

            try:
                self._tt = tiktoken.encoding_for_model(model.rsplit("/", 1)[-1])
            except KeyError:
                self._tt = tiktoken.get_encoding("o200k_base")
            self.method = f"tiktoken {self._tt.name}"
        except Exception:  # tiktoken missing or its files not downloadable offline
            self._tt = None

    @property
    def exact(self) -> bool:
        return self._hf is not None or self._tt is not None

    def count_text(self, text: str) -> int:
        if self._tt is not None:
            return len(self._tt.encode(text, disallowed_special=()))
        if self._hf is not None:
            return len(self._hf(text, add_special_tokens=False)["input_ids"])
        return math.ceil(len(text) / CHARS_PER_TOKEN)

    def count_messages(self, messages: Sequence[Mapping[str, str]]) -> int:
        if self._hf is not None and getattr(self._hf, "chat_template", None):
            ids = self._hf.apply_chat_template([dict(m) for m in messages], add_generation_prompt=True,
                                               tokenize=True, return_dict=True)["input_ids"]
            return len(ids)
        n = TOKENS_PER_REPLY
        for m in messages:
            n += TOKENS_PER_MESSAGE + self.count_text(str(m.get("content", ""))) + self.count_text(m.get("role", ""))
        return n


def max_output_tokens(request: ChatRequest) -> int | None:
    for k in ("max_tokens", "max_completion_tokens", "max_new_tokens"):
        v = request.params.get(k)
        if v is not None:
            return int(v)
    return None


def worst_case_cost(request: ChatRequest, model: str, prices: PriceTable, counter: TokenCounter, *,
                    batch: bool = False) -> float:
    """An upper bound on what one request can cost: padded input count + max_tokens of output."""
    pin, pout = prices.price(model, batch=batch)
    if pin == 0 and pout == 0:
        return 0.0
    n_in = counter.count_messages(request.messages)
    if not counter.exact:
        n_in = math.ceil(n_in * CHAR_ESTIMATE_SAFETY)
    n_out = max_output_tokens(request) or DEFAULT_WORST_OUTPUT_TOKENS
    return (n_in * pin + n_out * pout) / 1e6


@dataclass
class CostEstimate:
    """What ``--estimate`` prints: nothing is called to make it."""

    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    price_in_per_1m: float
    price_out_per_1m: float
    batch_api: bool
    input_method: str
    output_method: str
    price_known: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cost_usd"] = round(self.cost_usd, 6)
        return d

    def describe(self) -> str:
        price = (f"${self.price_in_per_1m:g}/${self.price_out_per_1m:g} per 1M in/out"
                 + (" (Batch API, half price)" if self.batch_api else "")
                 if self.price_known else "no price known (set --price MODEL=IN,OUT)")
        return (f"{self.requests} requests to {self.model}: ~{self.input_tokens:,} input tokens "
                f"[{self.input_method}], ~{self.output_tokens:,} output tokens [{self.output_method}]; "
                f"{price}; estimated cost ${self.cost_usd:.4f}")


def estimate(requests: Sequence[ChatRequest], model: str, *,
             prices: PriceTable | Mapping[str, tuple[float, float]] | None = None, batch: bool = False,
             output_ratio: float = DEFAULT_OUTPUT_RATIO, counter: TokenCounter | None = None) -> CostEstimate:
    """Expected tokens and cost of sending ``requests`` to ``model``, without calling anything.

    Output tokens are each request's ``max_tokens`` when set (an upper bound), else
    ``output_ratio`` x its input tokens; the estimate states which.
    """
    table = prices if isinstance(prices, PriceTable) else PriceTable(prices)
    counter = counter or TokenCounter(model)
    n_in = n_out = 0
    capped = ratio = 0
    for r in requests:
        i = counter.count_messages(r.messages)
        n_in += i
        m = max_output_tokens(r)
        if m is not None:
            n_out += m
            capped += 1
        else:
            n_out += math.ceil(i * output_ratio)
            ratio += 1
    if ratio and capped:
        out_method = f"max_tokens for {capped}, {output_ratio:g} x input for {ratio}"
    elif ratio:
        out_method = f"{output_ratio:g} x input tokens (no max_tokens set)"
    else:
        out_method = "max_tokens (upper bound)"
    known = table.known(model)
    pin, pout = table.price(model, batch=batch) if known else (0.0, 0.0)
    return CostEstimate(model=model, requests=len(requests), input_tokens=n_in, output_tokens=n_out,
                        cost_usd=(n_in * pin + n_out * pout) / 1e6, price_in_per_1m=pin, price_out_per_1m=pout,
                        batch_api=batch, input_method=counter.method, output_method=out_method,
                        price_known=known)
