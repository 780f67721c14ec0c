"""The LLM annotator: a chat model rewrites a teacher trace as steps, with one prompt per domain.

This is the paper's GPT-4o step (one request per GSRM training example), done so a budget can
trust it: all requests of a round go to the engine at once (bounded concurrency, cache, cost,
``--max-cost`` live there), every reply is checked by ``structure.validate``, an invalid reply
is retried a bounded number of times with a request that quotes what was wrong (so the retry is
never a cache hit of the bad reply), and a reply still invalid after that is returned as a
failure with the reply and the reasons, never as an empty decomposition.

Prompt files (``prompts/annotate_<domain>.txt``) are plain text in sections::

    @@ system
    <instructions>
    @@ problem
    <few-shot problem>
    @@ trace
    <few-shot reasoning trace>
    @@ steps
    <the steps the annotator should write for it>
    (problem / trace / steps repeat for each example)

They become chat messages: the system turn, a user/assistant pair per example, then the user
turn with the problem and trace to annotate (the same user text the GSRM is trained on).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from rlkd_bench.decompose import BUDGET_PREFIX, INVALID_PREFIX, REQUEST_ERROR_PREFIX, DecomposeResult
from rlkd_bench.errors import ConfigError
from rlkd_bench.llm.base import ChatRequest, Completion, Engine, EngineOptions, Usage
from rlkd_bench.llm.redact import safe_url
from rlkd_bench.prompting import gsrm_user_text, load_prompt
from rlkd_bench.sources import DOMAINS
from rlkd_bench.structure import parse_steps, split_think, validate

FALLBACK_DOMAIN = "math"
RETRY_KEY = "_retry"  # on an item: the how-manieth --retry-rejects retry of this trace
# Expected reply length for --estimate: a base plus a share of the trace's tokens (steps are terse,
# but even a short trace gets a few ~40-token steps). A stated assumption, not a measurement.
OUTPUT_BASE, OUTPUT_RATIO = 200, 0.2
_SECTION_RE = re.compile(r"^@@[ \t]+(\w+)[ \t]*$", re.MULTILINE)
_EXAMPLE_PARTS = ("problem", "trace", "steps")
_DOMAIN_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


# ---- prompt files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FewShot:
    """One worked example: a problem, its trace, and the steps the annotator should write."""

    problem: str
    trace: str
    steps: str


@dataclass(frozen=True)
class AnnotationPrompt:
    """A domain's annotation prompt, parsed; ``version`` is the file's name@content-hash."""

    name: str
    version: str
    system: str
    examples: tuple[FewShot, ...]

    def messages(self, problem: str, reasoning: str, *, feedback: str = "") -> list[dict[str, str]]:
        """System turn, one user/assistant pair per example, then the trace to annotate."""
        msgs = [{"role": "system", "content": self.system}]
        for ex in self.examples:
            msgs.append({"role": "user", "content": gsrm_user_text(ex.problem, ex.trace)})
            msgs.append({"role": "assistant", "content": ex.steps})
        user = gsrm_user_text(problem, reasoning)
        msgs.append({"role": "user", "content": f"{user}\n\n{feedback}" if feedback else user})
        return msgs


def parse_prompt_text(text: str, *, name: str) -> tuple[str, tuple[FewShot, ...]]:
    """Split a prompt file into its system text and examples; a malformed file is a ConfigError."""
    marks = list(_SECTION_RE.finditer(text))
    where = f"prompts/{name}.txt"
    if not marks or marks[0].group(1) != "system" or text[: marks[0].start()].strip():
        raise ConfigError(f"{where}: must start with an '@@ system' section")
    sections = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        line = text.count("\n", 0, m.start()) + 1
        body = text[m.end() : end].strip()
        if not body:
            raise ConfigError(f"{where}:{line}: section '@@ {m.group(1)}' is empty")
        sections.append((m.group(1), body, line))
    examples = []
    rest = sections[1:]
    for k in range(0, len(rest), 3):
        group = rest[k : k + 3]
        kinds = tuple(s[0] for s in group)
        if kinds != _EXAMPLE_PARTS:
            raise ConfigError(f"{where}:{group[0][2]}: expected sections problem, trace, steps in that "
                              f"order for each example, got {', '.join(kinds)}")
        examples.append(FewShot(*(s[1] for s in group)))
    return sections[0][1], tuple(examples)


@cache
def load_annotation_prompt(domain: str) -> AnnotationPrompt:
    """The parsed ``prompts/annotate_<domain>.txt`` (ConfigError if missing or malformed)."""
    p = load_prompt(f"annotate_{domain}")
    system, examples = parse_prompt_text(p.text, name=p.name)
    return AnnotationPrompt(name=p.name, version=p.version, system=system, examples=examples)


def prompt_domain(domain: Any) -> tuple[str, bool]:
    """The prompt domain for a row's domain, and whether it fell back to math (unknown domain)."""
    d = str(domain or "").strip().lower()
    if _DOMAIN_RE.match(d):
        try:
            load_annotation_prompt(d)
            return d, False
        except ConfigError:
            pass
    return FALLBACK_DOMAIN, True


# ---- results ------------------------------------------------------------------------------------


@dataclass
class AnnotationResult(DecomposeResult):
    """A DecomposeResult that also says which prompt produced it (for the annotation row)."""

    prompt_version: str = ""
    prompt_domain: str = ""
    domain_fallback: bool = False
    finish_reason: str | None = None

    @property
    def budget_stopped(self) -> bool:
        """Not sent because ``--max-cost`` would be passed: neither done nor a reject."""
        return bool(self.error and self.error.startswith(BUDGET_PREFIX))

    def annotator_meta(self) -> dict[str, Any]:
        """Per-row prompt facts; add them to the row's ``annotator`` field."""
        return {"prompt_version": self.prompt_version, "prompt_domain": self.prompt_domain,
                "domain_fallback": self.domain_fallback}


@dataclass
class _Item:
    """One trace in flight: its prompt, what it has cost so far and the last reply's problems."""

    item: dict[str, Any]
    prompt: AnnotationPrompt
    domain: str
    fallback: bool
    usage: Usage = field(default_factory=Usage)
    all_cached: bool = True
    raw: str = ""
    problems: list[str] = field(default_factory=list)
    finish_reason: str | None = None


def retry_feedback(attempt: int, problems: list[str], finish_reason: str | None, max_tokens: int) -> str:
    """The note added to the user turn of a retry: what was wrong with the previous reply."""
    lines = [f"Note (attempt {attempt}): your previous reply could not be used:"]
    lines += [f"- {p}" for p in problems]
    if finish_reason == "length":
        lines.append(f"- it was cut off at the {max_tokens}-token limit; use shorter fields")
    lines.append("Write the whole decomposition again in the required format: numbered "
                 "[Meta-reasoning i], [Sub-problem i] and [Answer i] lines for every step, then the "
                 "line 'So the final answer is: <answer>'.")
    return "\n".join(lines)


# ---- the annotator ------------------------------------------------------------------------------


class Annotator:
    """Decomposer ``openai:<model>``: any OpenAI-compatible chat model with the domain prompts.

    ``engine`` may be given (any ``Engine``); by default one is built with
    ``rlkd_bench.llm.make_engine("openai:<model>", options)``, so ``options`` choose the server,
    concurrency, cache, Batch API and budget.
    """

    def __init__(self, model: str, *, options: EngineOptions | None = None, temperature: float = 0.0,
                 max_tokens: int = 4096, max_invalid_retries: int = 2, engine: Engine | None = None):
        if not model:
            raise ConfigError("the annotator needs a model name: openai:<model>")
        if max_invalid_retries < 0:
            raise ConfigError(f"max_invalid_retries must be >= 0, got {max_invalid_retries}")
        self.model = model
        self.name = f"openai:{model}"
        self.options = options or EngineOptions()
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_invalid_retries = max_invalid_retries
        self._engine = engine
        self.prompts = {d: load_annotation_prompt(d) for d in DOMAINS}
        self.prompt_version = ",".join(self.prompts[d].version for d in DOMAINS)
        self.stats: dict[str, int] = {}

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from rlkd_bench.llm import make_engine

            self._engine = make_engine(self.name, self.options)
        return self._engine

    @property
    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}

    def describe(self) -> dict[str, Any]:
        """What produced the annotations (recorded in rows and manifests); never the API key."""
        return {
            "name": self.name,
            "model": self.model,
            "engine": "openai-batch" if self.options.batch_api else "openai",
            "base_url": safe_url(self.options.base_url),
            "prompt_versions": {d: p.version for d, p in self.prompts.items()},
            "fallback_domain": FALLBACK_DOMAIN,
            "params": {**self.params, "max_invalid_retries": self.max_invalid_retries},
        }

    def run_summary(self) -> dict[str, Any]:
        """Counts of the last run for the summary and manifest: requests sent, cache hits,
        HTTP retries, invalid-reply retries, failures (no key, no secrets)."""
        out: dict[str, Any] = {f"annotator_{k}": v for k, v in self.stats.items()}
        if self._engine is not None and hasattr(self._engine, "summary"):
            eng = self._engine.summary()
            out.update({f"engine_{k}": eng[k] for k in ("sent", "cache_hits", "retries", "failures",
                                                          "budget_skipped") if k in eng})
        return out

    def price_source(self) -> str | None:
        """Where the prices behind the cost figures came from (genai-prices, an override, none)."""
        if self._engine is None or not hasattr(self._engine, "summary"):
            return None
        return self._engine.summary().get("price_source")

    def _state(self, item: dict[str, Any]) -> _Item:
        domain, fallback = prompt_domain(item.get("domain"))
        prompt = self.prompts.get(domain) or load_annotation_prompt(domain)
        return _Item(item=item, prompt=prompt, domain=domain, fallback=fallback)

    def request(self, st: _Item, attempt: int) -> ChatRequest:
        """The request for one attempt; attempts after the first carry the previous problems.

        A trace retried by ``--retry-rejects`` carries its retry number (``RETRY_KEY``): it goes
        into the request's cache identity (not into what is sent), so the retry is really sent
        instead of being answered by the cached reply it was rejected for.
        """
        feedback = ""
        if attempt > 1:
            feedback = retry_feedback(attempt, st.problems, st.finish_reason, self.max_tokens)
        msgs = st.prompt.messages(str(st.item.get("problem", "")), str(st.item.get("reasoning", "")),
                                  feedback=feedback)
        retry = st.item.get(RETRY_KEY)
        version = f"{st.prompt.version}+retry{int(retry)}" if retry else st.prompt.version
        return ChatRequest(messages=tuple(msgs), params=dict(self.params), prompt_version=version,
                           custom_id=f"{st.item.get('id', '')}#a{attempt}")

    def _result(self, st: _Item, *, decomposition=None, error: str | None, attempts: int,
                retryable: bool = True) -> AnnotationResult:
        return AnnotationResult(
            decomposition=decomposition, raw=st.raw, error=error, usage=st.usage, cached=st.all_cached,
            attempts=attempts, prompt_version=st.prompt.version, prompt_domain=st.domain,
            domain_fallback=st.fallback, finish_reason=st.finish_reason, retryable=retryable,
        )

    def _judge(self, st: _Item, comp: Completion, attempt: int, last: bool) -> AnnotationResult | None:
        """Fold one completion into the item; the final result, or None when a retry is due."""
        st.usage = st.usage + comp.usage
        st.all_cached = st.all_cached and comp.cached
        if comp.error is not None or comp.text is None:
            err = comp.error or "no text in the reply"
            if err.startswith(BUDGET_PREFIX):
                return self._result(st, error=err, attempts=attempt - 1)
            return self._result(st, error=f"{REQUEST_ERROR_PREFIX} {err}", attempts=attempt,
                                retryable=getattr(comp, "retryable", True))
        st.raw, st.finish_reason = comp.text, comp.finish_reason
        # a reasoning model's thinking may hold draft tags: only what follows </think> counts
        parts = split_think(comp.text)
        decomposition = parse_steps(parts.answer if parts.closed else comp.text)
        st.problems = validate(decomposition)
        if not st.problems:
            return self._result(st, decomposition=decomposition, error=None, attempts=attempt)
        if last:
            reasons = "; ".join(st.problems)
            if comp.finish_reason == "length":
                reasons += f"; reply cut off at max_tokens={self.max_tokens}"
            return self._result(st, error=f"{INVALID_PREFIX} after {attempt} attempt(s): {reasons}",
                                attempts=attempt)
        return None

    def decompose(self, items: list[dict[str, Any]], *,
                  on_result: Callable[[int, DecomposeResult], None] | None = None
                  ) -> list[DecomposeResult]:
        """Annotate ``items`` (traces rows); ``on_result(i, result)`` fires as each one is final.

        Round k sends attempt k of every item still unresolved, in one batch. Results whose
        ``error`` starts with "budget:" were stopped by ``max_cost_usd``: they are neither
        annotations nor rejects, and a rerun with a larger budget picks them up.
        """
        states = [self._state(it) for it in items]
        results: list[AnnotationResult | None] = [None] * len(items)
        lock = threading.Lock()
        active = list(range(len(items)))
        attempts_max = self.max_invalid_retries + 1
        stats = {"items": len(items), "requests": 0, "retries": 0, "domain_fallback": 0}
        stats["domain_fallback"] = sum(st.fallback for st in states)

        for attempt in range(1, attempts_max + 1):
            if not active:
                break
            last = attempt == attempts_max
            round_ids = list(active)
            seen: set[int] = set()

            def handle(j: int, comp: Completion, round_ids=round_ids, seen=seen, attempt=attempt,
                       last=last) -> None:
                with lock:
                    if j in seen:
                        return
                    seen.add(j)
                    i = round_ids[j]
                    res = self._judge(states[i], comp, attempt, last)
                    if res is None:
                        return
                    results[i] = res
                if on_result is not None:
                    on_result(i, res)

            requests = [self.request(states[i], attempt) for i in round_ids]
            stats["requests"] += len(requests)
            if attempt > 1:
                stats["retries"] += len(requests)
            completions = self.engine.generate(requests, progress=self.options.progress, on_result=handle)
            for j, comp in enumerate(completions):  # engines that skipped the callback for some
                handle(j, comp)
            active = [i for i in round_ids if results[i] is None]

        final = [r for r in results if r is not None]
        assert len(final) == len(items), "every item ends with a result"
        stats["ok"] = sum(r.ok for r in final)
        stats["budget"] = sum(r.budget_stopped for r in final)
        stats["request_errors"] = sum(bool(r.error and r.error.startswith(REQUEST_ERROR_PREFIX))
                                      for r in final)
        stats["invalid"] = sum(bool(r.error and r.error.startswith(INVALID_PREFIX)) for r in final)
        self.stats = stats
        return list(final)

    def estimate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Requests, expected tokens and cost of the first attempts; calls nothing.

        Input tokens are counted on the exact first-attempt messages. Output is expected at
        ``OUTPUT_BASE + OUTPUT_RATIO`` x the trace's tokens, capped at ``max_tokens``; the worst
        case (every reply hits ``max_tokens``, every retry spent) is given beside it.
        """
        import math
        from dataclasses import replace

        from rlkd_bench.llm.cost import TokenCounter, estimate

        counter = TokenCounter(self.model)
        states = [self._state(it) for it in items]
        requests = [self.request(st, 1) for st in states]
        expected = [
            replace(r, params={**r.params, "max_tokens": min(self.max_tokens, OUTPUT_BASE + math.ceil(
                OUTPUT_RATIO * counter.count_text(str(st.item.get("reasoning", "")))))})
            for r, st in zip(requests, states, strict=True)
        ]
        kw = {"prices": self.options.prices, "batch": self.options.batch_api, "counter": counter}
        exp, worst = estimate(expected, self.model, **kw), estimate(requests, self.model, **kw)
        tries = self.max_invalid_retries + 1
        return {
            "model": self.model,
            "traces": len(items),
            "requests": exp.requests,
            "input tokens": exp.input_tokens,
            "expected output tokens": exp.output_tokens,
            "expected cost (USD)": round(exp.cost_usd, 4),
            "worst case cost (USD)": round(worst.cost_usd * tries, 4),
            "prices": (f"${exp.price_in_per_1m:g} / ${exp.price_out_per_1m:g} per 1M in/out"
                       + (" (Batch API)" if exp.batch_api else "")) if exp.price_known
            else "unknown: set --price MODEL=IN,OUT",
            "token count": exp.input_method,
            "output assumption": f"{OUTPUT_BASE} + {OUTPUT_RATIO:g} x trace tokens, at most "
                                 f"max_tokens={self.max_tokens}; "
                                 f"worst case: max_tokens on all {tries} attempts",
            "domain fallback to math": sum(st.fallback for st in states),
        }
