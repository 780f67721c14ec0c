"""The structure reward of a batch of completions, batched end to end.

``StructureScorer.score(problems, completions, teacher_steps)``: the student's thinking (the
completion before ``</think>``) is decomposed by the configured decomposer, ALL completions of the
call in one batch; the teacher's steps are given (precomputed in the rlkd-data product, never
decoded again); the rule (``align.py``) then says which comparisons it needs, and they go to the
matcher in at most two rounds (meta-reasonings first, then the sub-problems and answers of the
matched prefixes), every completion's together, identical ones once. Each completion gets a
``StudentOutcome``: an ``Alignment``, or the reason there is none (no ``</think>``, a failed
decomposition, a failed judge verdict, the call's timeout), never a silent 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rlkd_bench.decompose import REQUEST_ERROR_PREFIX, DecomposeResult, get_decomposer
from rlkd_bench.errors import ConfigError, DataError, RlkdError
from rlkd_bench.llm.base import EngineOptions
from rlkd_bench.llm.runner import run_sync
from rlkd_bench.reward.align import Alignment, Comparison, MissingVerdict, align_from_verdicts, needed, unique
from rlkd_bench.reward.matchers import make_matcher
from rlkd_bench.structure import META, Decomposition, Step, split_think

log = logging.getLogger("rlkd_bench.reward")

NO_THINK_END = "no </think>"
EMPTY_THINKING = "empty thinking"
DECOMPOSE_FAILED = "decomposition failed"
JUDGE_FAILED = "judge failed"
TIMEOUT = "timeout"
MAX_ROUNDS = 3  # the rule needs two; one more only if a matcher left a needed verdict out


@dataclass
class StudentOutcome:
    """One completion's structure alignment, or why there is none (``error``)."""

    alignment: Alignment | None
    decomposition: Decomposition | None = None
    error: str | None = None
    thinking: str = ""

    @property
    def ok(self) -> bool:
        return self.alignment is not None and self.error is None

    def reward(self, normalize: bool = False) -> float | None:
        return self.alignment.value(normalize) if self.ok else None  # type: ignore[union-attr]


@dataclass
class ScoreStats:
    """Counts over a scorer's lifetime (all calls), for the trainer logs and the benchmark."""

    calls: int = 0
    completions: int = 0
    scored: int = 0
    no_think_end: int = 0
    decompose_failed: int = 0
    judge_failed: int = 0
    timeouts: int = 0
    judge_rounds: int = 0
    comparisons: int = 0  # unique comparisons sent to the matcher
    wall_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    unavailable: int = 0  # no score because a model did not answer: a failed request, a judge verdict, time
    last_error: str = ""  # the latest such reason


def _served_model(url: str, options: EngineOptions, *, what: str, hint: str) -> str:
    """The one model the server at ``url`` lists: RlkdError (exit 70) when it does not answer,
    ConfigError naming ``hint`` when it lists several or none."""
    from rlkd_bench.llm.endpoint import list_models, resolve
    from rlkd_bench.llm.redact import safe_url

    try:
        names = [str(m["id"]) for m in list_models(resolve(url, options.api_key_env),
                                                    timeout_s=min(float(options.timeout_s or 30.0), 30.0))]
    except ConfigError as e:
        if "cannot list the models" not in str(e):
            raise  # a missing key, plain http to a remote host: the settings are wrong
        raise RlkdError(f"structure reward: the {what} did not answer before training: {e}") from None
    if len(names) != 1:
        raise ConfigError(f"structure reward: the {what} at {safe_url(url)} lists {len(names)} models "
                          f"({', '.join(names[:5]) or 'none'}); name one with {hint}")
    return names[0]


def as_decomposition(value: Any, *, where: str = "teacher_steps") -> Decomposition:
    """A Decomposition from an rlkd-data ``teacher_steps`` cell (a list of step dicts), a
    ``Decomposition.to_dict()`` dict, or a Decomposition."""
    if isinstance(value, Decomposition):
        return value
    if isinstance(value, dict) and "steps" in value:
        return Decomposition.from_dict(value)
    if isinstance(value, (list, tuple)):
        steps = []
        for i, s in enumerate(value):
            if isinstance(s, Step):
                steps.append(s)
            elif isinstance(s, dict):
                steps.append(Step(str(s.get("meta") or ""), str(s.get("subproblem") or ""),
                                  str(s.get("answer") or "")))
            else:
                raise DataError(f"step {i + 1} is a {type(s).__name__}, expected a dict with meta, subproblem, "
                                "answer (as `rlkd-bench build-rlkd-data` writes)", field=where)
        return Decomposition(steps=tuple(steps))
    raise DataError(f"expected a list of steps (dicts with meta, subproblem, answer), got {type(value).__name__}",
                    field=where)


class StructureScorer:
    """Decomposer + matcher + the rule, with one timeout per call.

    ``decomposer``: ``heuristic``, ``gsrm:<checkpoint>`` (in process; ``gsrm_engine`` picks
    transformers or vllm) or ``gsrm:http://HOST/v1``. ``matcher``: see ``matchers.make_matcher``.
    ``normalize``: the reward is the sum of r_i / n_teacher (in [0, 1]) instead of the raw sum; the
    default is the sum, as ``align.Alignment.value`` and the paper's reference code have it.
    ``gsrm_max_new_tokens``: the longest decomposition a GSRM may write (its default: 4096).
    ``gsrm_model`` / ``judge_model``: the served model at a ``gsrm:URL`` / ``judge:URL`` (default: the
    only model the server lists).
    """

    def __init__(self, decomposer: str = "heuristic", matcher: str = "lexical", *, normalize: bool = False,
                 engine_options: EngineOptions | None = None, timeout_s: float = 300,
                 gsrm_engine: str | None = None, gsrm_max_new_tokens: int | None = None,
                 gsrm_model: str | None = None, judge_model: str | None = None):
        if not timeout_s or timeout_s <= 0:
            raise ConfigError(f"structure reward: timeout_s must be > 0, got {timeout_s}")
        self.decomposer_spec = decomposer
        self.matcher_spec = matcher
        self.normalize = bool(normalize)
        self.timeout_s = float(timeout_s)
        self.engine_options = engine_options or EngineOptions(progress=False)
        opts: dict[str, Any] = {}
        kind = decomposer.partition(":")[0]
        if kind in ("gsrm", "openai"):
            opts["options"] = self.engine_options
            if kind == "gsrm" and gsrm_engine:
                opts["engine"] = gsrm_engine
            if kind == "gsrm" and gsrm_max_new_tokens:  # a GSRM that never stops must not stall training
                opts["max_new_tokens"] = int(gsrm_max_new_tokens)
            if kind == "gsrm" and gsrm_model:
                opts["model"] = gsrm_model
        self.decomposer = get_decomposer(decomposer, **opts)
        matcher_kw: dict[str, Any] = {}
        if matcher.partition(":")[0].strip().lower() == "judge":
            matcher_kw["timeout_s"] = self.timeout_s
            if judge_model:
                matcher_kw["model"] = judge_model
        self.matcher = make_matcher(matcher, engine_options=self.engine_options, **matcher_kw)
        self.stats = ScoreStats()
        self._warned: set[str] = set()

    def describe(self) -> dict[str, Any]:
        return {"decomposer": self.decomposer.describe(), "decomposer_spec": self.decomposer_spec,
                "matcher": self.matcher.describe(), "normalize": self.normalize, "timeout_s": self.timeout_s}

    # -- preflight ----------------------------------------------------------------------------
    def preflight(self, *, gsrm_model_hint: str = "--gsrm-model NAME",
                  judge_model_hint: str = "judge:openai:MODEL with the base URL in the options") -> None:
        """Ask the decomposer for one tiny decomposition and an LLM judge for one comparison, so a
        GSRM or judge that does not answer stops a run before it starts (RlkdError, exit 70) instead
        of every structure reward being None. The probe carries a fresh nonce: a cached answer would
        prove nothing. A server that lists several models is a ConfigError naming the hint's key."""
        import uuid

        from rlkd_bench.llm.redact import redact_text, safe_url

        nonce = uuid.uuid4().hex[:12]
        dec = self.decomposer
        url = getattr(dec, "target", "") if getattr(dec, "engine_kind", None) == "openai" else ""
        shown = f"the GSRM at {safe_url(url)}" if url else f"the decomposer {redact_text(self.decomposer_spec)}"
        if url and not getattr(dec, "model", None):
            dec.model = _served_model(url, dec.options, what="GSRM server", hint=gsrm_model_hint)
        item = {"id": f"preflight-{nonce}", "problem": f"Add 2 and 3, then multiply the sum by 4. [{nonce}]",
                "reasoning": "First, I add 2 and 3: 2 + 3 = 5.\n\nNext, I multiply the sum by 4: 5 * 4 = 20.",
                "answer": "20"}
        limit = getattr(dec, "max_new_tokens", None)
        if limit:  # enough to show that it answers; a whole decomposition may take minutes on CPU
            dec.max_new_tokens = min(int(limit), 32)
        try:
            [res] = dec.decompose([item])
        except ConfigError:
            raise
        except Exception as e:  # an unreachable endpoint, a checkpoint that does not load
            raise RlkdError(redact_text(f"structure reward: {shown} did not answer a test decomposition "
                                        f"before training: {type(e).__name__}: {e}")) from None
        finally:
            if limit:
                dec.max_new_tokens = limit
        if (res.error or "").startswith(REQUEST_ERROR_PREFIX):  # a reply that does not parse still is an answer
            raise RlkdError(redact_text(f"structure reward: {shown} did not answer a test decomposition "
                                        f"before training: {res.error}"))
        matcher = self.matcher
        if getattr(matcher, "name", None) != "judge":
            return
        base = matcher.options.base_url
        where = f"the judge at {safe_url(base)}" if base else f"the judge {matcher.engine_spec}"
        if matcher.engine_spec is None:
            name = _served_model(base or matcher.target, matcher.options, what="judge server", hint=judge_model_hint)
            matcher.engine_spec = f"openai:{name}"
        probe = Comparison(kind=META, teacher=f"Add 2 and 3. [{nonce}]", student="Multiply 5 by 4.")
        try:
            [done] = matcher.engine.generate([matcher.request(probe)], progress=False)
        except ConfigError:
            raise
        except Exception as e:
            raise RlkdError(redact_text(f"structure reward: {where} did not answer a test comparison before "
                                        f"training: {type(e).__name__}: {e}")) from None
        if not done.ok:
            raise RlkdError(redact_text(f"structure reward: {where} did not answer a test comparison before "
                                        f"training: {done.error}"))

    # -- decomposition ----------------------------------------------------------------------
    def decompose(self, problems: Sequence[str], thinkings: Sequence[str],
                  answers: Sequence[str] | None = None) -> list[DecomposeResult]:
        """Decompose ``thinkings`` (one batch); a failure is a DecomposeResult with an error.
        ``answers``: what followed ``</think>`` (the heuristic reads the final answer there)."""
        answers = list(answers) if answers is not None else [""] * len(thinkings)
        items = [{"id": str(i), "problem": str(p or ""), "reasoning": str(t or ""), "answer": str(a or "")}
                 for i, (p, t, a) in enumerate(zip(problems, thinkings, answers, strict=True))]
        out: list[DecomposeResult | None] = [None] * len(items)
        todo = []
        for i, it in enumerate(items):
            if not it["reasoning"].strip():
                out[i] = DecomposeResult(decomposition=None, error=EMPTY_THINKING)
            elif not it["problem"].strip():
                out[i] = DecomposeResult(decomposition=None, error="no problem text")
            else:
                todo.append(i)
        if todo:
            try:
                results = self.decomposer.decompose([items[i] for i in todo])
            except Exception as e:  # an unreachable GSRM endpoint, a bad checkpoint: never a crash mid-training
                msg = f"{REQUEST_ERROR_PREFIX} " + (str(e) if isinstance(e, RlkdError) else f"{type(e).__name__}: {e}")
                self._warn_once(f"{DECOMPOSE_FAILED}: {msg}")
                results = [DecomposeResult(decomposition=None, error=msg) for _ in todo]
            for i, res in zip(todo, results, strict=True):
                if res.ok and not res.decomposition.steps:  # type: ignore[union-attr]
                    res = DecomposeResult(decomposition=None, raw=res.raw, error="no steps", usage=res.usage)
                out[i] = res
        return out  # type: ignore[return-value]

    # -- judging ----------------------------------------------------------------------------
    async def _verdicts(self, pairs: list[tuple[Decomposition, Decomposition]], deadline: float
                        ) -> tuple[dict[Comparison, bool | None], bool]:
        """Judge what the rule needs for every pair, in rounds; returns (verdicts, timed_out)."""
        verdicts: dict[Comparison, bool | None] = {}
        for _ in range(MAX_ROUNDS):
            ask = unique(c for t, s in pairs for c in needed(t, s, verdicts))
            if not ask:
                return verdicts, False
            left = deadline - time.monotonic()
            if left <= 0:
                return verdicts, True
            self.stats.judge_rounds += 1
            self.stats.comparisons += len(ask)
            try:
                got = await asyncio.wait_for(self.matcher.ajudge(ask), timeout=left)
            except asyncio.TimeoutError:
                return verdicts, True
            verdicts.update({c: got.get(c) for c in ask})
        return verdicts, False

    def _align(self, teacher: Decomposition, student: Decomposition, verdicts, timed_out: bool
               ) -> tuple[Alignment | None, str | None]:
        try:
            return align_from_verdicts(teacher, student, verdicts), None
        except MissingVerdict as e:
            if timed_out and e.comparison not in verdicts:
                return None, TIMEOUT
            return None, f"{JUDGE_FAILED} ({e.comparison.kind})"

    async def aalign_pairs(self, pairs: list[tuple[Decomposition, Decomposition]], *,
                           deadline: float | None = None) -> list[Alignment | None]:
        """Align each (teacher, student) pair; None where a verdict failed or time ran out."""
        deadline = deadline if deadline is not None else time.monotonic() + self.timeout_s
        verdicts, timed_out = await self._verdicts(pairs, deadline)
        return [self._align(t, s, verdicts, timed_out)[0] for t, s in pairs]

    def align_pairs(self, pairs: list[tuple[Decomposition, Decomposition]]) -> list[Alignment | None]:
        """``aalign_pairs`` from sync code (e.g. pairwise diversity between student traces)."""
        return run_sync(lambda: self.aalign_pairs(list(pairs)))

    # -- the whole call -----------------------------------------------------------------------
    async def ascore(self, problems: Sequence[str], completions: Sequence[str],
                     teacher_steps: Sequence[Any]) -> list[StudentOutcome]:
        """One outcome per completion; never raises for model trouble (see ``StudentOutcome.error``)."""
        if not (len(problems) == len(completions) == len(teacher_steps)):
            raise ValueError(f"structure scorer: {len(problems)} problems, {len(completions)} completions, "
                             f"{len(teacher_steps)} teacher_steps: expected one of each per completion")
        t0 = time.monotonic()
        deadline = t0 + self.timeout_s
        teachers = [as_decomposition(t) for t in teacher_steps]
        outcomes = [StudentOutcome(alignment=None) for _ in completions]
        todo: list[int] = []
        tails: list[str] = []
        for i, comp in enumerate(completions):
            split = split_think(str(comp or ""))
            outcomes[i].thinking = split.thinking
            tails.append(split.answer)
            if not split.closed:
                outcomes[i].error = NO_THINK_END
            else:
                todo.append(i)
        if todo:
            try:
                results = await asyncio.wait_for(
                    asyncio.to_thread(self.decompose, [problems[i] for i in todo],
                                      [outcomes[i].thinking for i in todo], [tails[i] for i in todo]),
                    timeout=max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                self._warn_once(f"decomposition gave no result within {self.timeout_s:g} s")
                results = None
            ready: list[int] = []
            for n, i in enumerate(todo):
                if results is None:
                    outcomes[i].error = TIMEOUT
                    continue
                res = results[n]
                if not res.ok:
                    outcomes[i].error = f"{DECOMPOSE_FAILED}: {res.error}"
                    if (res.error or "").startswith(REQUEST_ERROR_PREFIX):  # an endpoint in trouble
                        self._warn_once(outcomes[i].error)
                    continue
                outcomes[i].decomposition = res.decomposition
                if not teachers[i].steps or not res.decomposition.steps:  # type: ignore[union-attr]
                    outcomes[i].alignment = align_from_verdicts(teachers[i], res.decomposition, {})  # 0
                else:
                    ready.append(i)
            if ready:
                pairs = [(teachers[i], outcomes[i].decomposition) for i in ready]
                verdicts, timed_out = await self._verdicts(pairs, deadline)  # type: ignore[arg-type]
                for i, (t, s) in zip(ready, pairs, strict=True):
                    outcomes[i].alignment, outcomes[i].error = self._align(t, s, verdicts, timed_out)  # type: ignore[arg-type]
        self._count(outcomes, time.monotonic() - t0)
        return outcomes

    def score(self, problems: Sequence[str], completions: Sequence[str],
              teacher_steps: Sequence[Any]) -> list[StudentOutcome]:
        """``ascore`` from sync code."""
        return run_sync(lambda: self.ascore(problems, completions, teacher_steps))

    def _count(self, outcomes: list[StudentOutcome], wall_s: float) -> None:
        s = self.stats
        s.calls += 1
        s.completions += len(outcomes)
        s.wall_s += wall_s
        for o in outcomes:
            if o.ok:
                s.scored += 1
                continue
            err = o.error or "?"
            if (err.startswith((f"{DECOMPOSE_FAILED}: {REQUEST_ERROR_PREFIX}", JUDGE_FAILED)) or err == TIMEOUT):
                s.unavailable += 1
                s.last_error = err
            s.no_think_end += err == NO_THINK_END
            s.decompose_failed += err.startswith(DECOMPOSE_FAILED) or err == EMPTY_THINKING
            s.judge_failed += err.startswith(JUDGE_FAILED)
            s.timeouts += err == TIMEOUT
            key = err.split(":")[0]
            s.errors[key] = s.errors.get(key, 0) + 1

    def _warn_once(self, message: str) -> None:
        key = message[:60]
        if key not in self._warned:
            self._warned.add(key)
            log.warning("structure reward: %s (the completion gets no structure reward, counted)", message)
