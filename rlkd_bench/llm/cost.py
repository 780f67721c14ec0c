"""What a run costs: prices, token estimates before a run, and the budget's worst case.

Prices come from ``genai-prices`` (a maintained database of provider prices, shipped with the
package: it is read from the installed package, nothing is fetched at run time), looked up for the
provider the engine talks to (OpenAI by default; another ``--base-url`` by its URL, and a local
server has no provider, so no price). ``--price MODEL=IN,OUT`` (``parse_price``) overrides any of
them. Prices are USD per 1M tokens (input, output); the Batch API price is the database's batch
price, else half the standard one. A model with no price costs 0 and says so once, so a run
against a local server is never priced by accident as GPT-4o; a budget (``--max-cost``) needs a
price that matches the model name exactly (``require``), never a near namesake.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rlkd_bench.errors import ConfigError
from rlkd_bench.llm.base import ChatRequest, Usage
from rlkd_bench.llm.endpoint import is_openai_host

log = logging.getLogger("rlkd_bench.llm")

BATCH_DISCOUNT = 0.5  # when the database has no batch price for a model
OVERRIDE_SOURCE = "override (--price)"
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


def genai_prices_version() -> str:
    import genai_prices

    return f"genai-prices {genai_prices.__version__}"


@dataclass(frozen=True)
class Price:
    """One model's price: USD per 1M tokens, standard and Batch API, and where it came from."""

    input: float
    output: float
    batch_input: float
    batch_output: float
    source: str
    model_price: Any = None  # genai_prices ModelPrice (exact tiered costs); None for overrides

    def per_mtok(self, batch: bool) -> tuple[float, float]:
        return (self.batch_input, self.batch_output) if batch else (self.input, self.output)


def _exact_names(match: Any) -> set[str]:
    """The names a genai-prices match rule accepts by equality (prefix and regex rules left out)."""
    from genai_prices import types as gt

    if isinstance(match, gt.ClauseEquals):
        return {match.equals.lower()}
    if isinstance(match, gt.ClauseOr):
        return set().union(*(_exact_names(c) for c in match.or_))
    return set()


def _top(v: Any) -> float:
    """USD per 1M tokens; a tiered price counts at its highest tier (an upper bound)."""
    if v is None:
        return 0.0
    if isinstance(v, Decimal | int | float):
        return float(v)
    tiers = getattr(v, "tiers", None) or []
    return float(max([v.base, *(t.price for t in tiers)]))


class PriceTable:
    """Looks up a model's price: ``--price`` overrides first (the name as given, or without a
    provider prefix such as ``openai/``), then genai-prices for the engine's provider.

    ``base_url`` picks the provider: None or an OpenAI host -> OpenAI; another URL -> the provider
    genai-prices knows by that URL (none for a local server). ``exact=True`` (used when a budget is
    enforced) accepts only a database entry that names the model exactly.
    """

    def __init__(self, overrides: Mapping[str, tuple[float, float]] | None = None, *,
                 base_url: str | None = None):
        self.overrides = dict(overrides or {})
        self.base_url = base_url
        self._found: dict[tuple[str, bool], Price | None] = {}

    def _override(self, model: str) -> tuple[float, float] | None:
        for name in (model, model.rsplit("/", 1)[-1]):
            if name in self.overrides:
                return self.overrides[name]
        return None

    def _database(self, model: str, exact: bool) -> Price | None:
        from genai_prices import data_snapshot

        snap = data_snapshot.get_snapshot()  # the bundled data; we never start UpdatePrices
        if is_openai_host(self.base_url):
            where: dict[str, Any] = {"provider_id": "openai"}
            if model.lower().startswith("openai/"):
                model = model.split("/", 1)[1]
        else:
            where = {"provider_api_url": self.base_url}
        try:
            _, info = snap.find_provider_model(model, None, where.get("provider_id"),
                                               where.get("provider_api_url"))
        except LookupError:
            return None
        if exact and model.lower() not in _exact_names(info.match) and model.lower() != info.id.lower():
            return None
        now = datetime.now(tz=UTC)
        std = info.get_prices(now)
        batch = info.get_prices(now, {"processing": "batch"})
        pin, pout = _top(getattr(std, "input_mtok", None)), _top(getattr(std, "output_mtok", None))
        has_batch = any(v.when == {"processing": "batch"} and (v.constraint is None or v.constraint.active(now))
                        for v in info.price_variants or ())
        if has_batch:
            bin_, bout = _top(getattr(batch, "input_mtok", None)), _top(getattr(batch, "output_mtok", None))
        else:
            bin_, bout = pin * BATCH_DISCOUNT, pout * BATCH_DISCOUNT
        return Price(pin, pout, bin_, bout, f"{genai_prices_version()} ({info.id})", std)

    def find(self, model: str, *, exact: bool = False) -> Price | None:
        """The model's price, or None when neither an override nor the database knows it."""
        key = (model, exact)
        if key not in self._found:
            o = self._override(model)
            if o is not None:
                self._found[key] = Price(o[0], o[1], o[0] * BATCH_DISCOUNT, o[1] * BATCH_DISCOUNT, OVERRIDE_SOURCE)
            else:
                self._found[key] = self._database(model, exact)
        return self._found[key]

    def lookup(self, model: str, *, exact: bool = False) -> tuple[float, float] | None:
        p = self.find(model, exact=exact)
        return (p.input, p.output) if p else None

    def source(self, model: str) -> str:
        """Where the price of ``model`` comes from, for manifests: an override, genai-prices and its
        version, or "unknown"."""
        p = self.find(model)
        return p.source if p else "unknown (counted as 0 USD)"

    def require(self, model: str, max_cost_usd: float | None) -> None:
        """A budget needs a price that names the model exactly; refuse to enforce it on a guess."""
        if max_cost_usd is None or self.find(model, exact=True) is not None:
            return
        near = self.find(model)
        hint = f" (the price database's nearest entry, {near.source}, is not an exact match)" if near else ""
        raise ConfigError(f"--max-cost needs the price of {model!r}, and none is known{hint}: give it with "
                          f"--price {model}=IN,OUT (USD per 1M input,output tokens; 0,0 for a free server)")

    def price(self, model: str, *, batch: bool = False) -> tuple[float, float]:
        """(USD/1M in, USD/1M out); unknown models are free, with one warning per model."""
        p = self.find(model)
        if p is None:
            if model not in _warned:
                _warned.add(model)
                log.warning("no price for model %r: its cost counts as 0 USD (set one with --price %s=IN,OUT)",
                            model, model)
            return (0.0, 0.0)
        return p.per_mtok(batch)

    def known(self, model: str) -> bool:
        return self.find(model) is not None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> float:
        p = self.find(model)
        if p is not None and p.model_price is not None and not batch:
            from genai_prices import Usage as GUsage

            try:  # the database's own rule (tiers by prompt length)
                calc = p.model_price.calc_price(GUsage(input_tokens=prompt_tokens, output_tokens=completion_tokens))
                return float(calc["total_price"])
            except Exception:  # noqa: BLE001 - a rule this version cannot apply: fall back to list prices
                pass
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
