"""Teacher traces by generation: sample K completions per problem, keep the correct ones.

The paper's teacher trace for a problem is the first of the teacher's generations whose answer
math-verify accepts against the gold answer. Here the teacher is any engine (an OpenAI-compatible
server, a local transformers or vLLM model). Each sample is its own request, told apart by a
``seed`` equal to the base seed plus the sample index, so the cache keeps every sample and a
rerun pays for none (``n`` is not used: ``transformers serve`` ignores it and the cache could not
tell the samples apart).

``keep="first"`` sends sample k only to the problems whose samples 0..k-1 were all wrong, one
concurrent batch per round, so it pays for no sample after the first correct one and picks the
same trace as sending all K at once would. ``keep="all"`` sends all K x problems in one batch and
keeps every correct sample.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlkd_bench.answers import check
from rlkd_bench.errors import ConfigError
from rlkd_bench.llm.base import BUDGET_PREFIX, ChatRequest, Completion, Engine, EngineOptions, Usage
from rlkd_bench.llm.redact import safe_url
from rlkd_bench.prompting import R1_INSTRUCTION
from rlkd_bench.structure import split_think

KEEP = ("first", "all")
PRODUCT = "traces"
# DeepSeek-R1's recommended usage: no system prompt, the instruction in the user turn.
TEACHER_INSTRUCTION = R1_INSTRUCTION
TEACHER_PROMPT_VERSION = "teacher@" + hashlib.sha256(TEACHER_INSTRUCTION.encode()).hexdigest()[:10]


@dataclass
class Sample:
    """One teacher completion, split at ``</think>`` and checked against the gold answer."""

    index: int
    text: str | None = None
    reasoning: str = ""
    answer: str = ""
    closed: bool = False
    correct: bool = False
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    cached: bool = False

    def summary(self, width: int = 80) -> dict[str, Any]:
        """A short record for a reject row: what the sample answered, or why it has nothing."""
        shown = self.answer if self.closed else (self.reasoning[-width:] if self.reasoning else "")
        return {"sample": self.index, "closed_think": self.closed, "correct": self.correct,
                "answer": shown[:width], "error": self.error}


def teacher_messages(problem: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": f"{problem.strip()}\n\n{TEACHER_INSTRUCTION}"},)


def sample_request(problem: dict[str, Any], index: int, params: dict[str, Any]) -> ChatRequest:
    """The request for sample ``index`` of a problem; the seed makes it a distinct request."""
    p = dict(params)
    p["seed"] = int(p.get("seed", 0)) + index
    return ChatRequest(messages=teacher_messages(str(problem["problem"])), params=p,
                       prompt_version=TEACHER_PROMPT_VERSION, custom_id=f"{problem['id']}#s{index}")


def judge(gold: str, index: int, completion: Completion) -> Sample:
    """Split a completion at its last ``</think>`` and check its final answer against ``gold``.

    The verdict is ``rlkd_bench.answers.check``, the one the training reward and the eval metrics
    use. A trace needs its reasoning apart from its answer, so a completion whose thinking never
    closed (it ran out of tokens, or never used the tags) is not kept, nor one with a blank gold.
    """
    s = Sample(index=index, text=completion.text, error=completion.error, usage=completion.usage,
               cached=completion.cached)
    if not completion.ok or completion.text is None:
        s.error = completion.error or "no text in the reply"
        return s
    parts = split_think(completion.text)
    s.reasoning, s.answer, s.closed = parts.thinking, parts.answer, parts.closed
    if s.closed and s.answer:
        s.correct = check(gold, completion.text) is True
    return s


def select(samples: list[Sample], keep: str) -> list[Sample]:
    """The samples to keep: the first correct one by sample index (``first``) or every correct one."""
    if keep not in KEEP:
        raise ConfigError(f"keep must be one of {KEEP}, got {keep!r}")
    correct = sorted((s for s in samples if s.correct), key=lambda s: s.index)
    return correct[:1] if keep == "first" else correct


def trace_row(problem: dict[str, Any], sample: Sample, model: str, keep: str) -> dict[str, Any]:
    """A traces-schema row; with ``keep="all"`` the id carries the sample index to stay unique."""
    pid = str(problem["id"])
    return {
        "id": pid if keep == "first" else f"{pid}-s{sample.index}",
        "domain": problem.get("domain") or "math",
        "problem": problem["problem"],
        "reasoning": sample.reasoning,
        "answer": sample.answer,
        "gold": problem["gold"],
        "source": f"generated:{model}",
        "verified": True,
        "problem_id": pid,
        "sample": sample.index,
        "usage": sample.usage.to_dict(),
        "cached": sample.cached,
    }


def reject_row(problem: dict[str, Any], samples: list[Sample], n: int) -> dict[str, Any]:
    """Why a problem has no trace. A reason starting with "budget:" is a stop, not a reject."""
    budget = [s for s in samples if s.error and s.error.startswith(BUDGET_PREFIX)]
    failed = [s for s in samples if s.error and not s.error.startswith(BUDGET_PREFIX)]
    answered = [s for s in samples if s.error is None]
    if budget:
        reason = f"{budget[0].error} ({len(answered)} of {n} samples answered, none correct)"
    elif failed and not answered:
        reason = f"request failed: all {n} samples failed (last: {failed[-1].error})"
    else:
        unclosed = sum(not s.closed for s in answered)
        reason = (f"no correct sample among {len(answered)} (gold {problem['gold']!r}; "
                  f"{unclosed} never closed </think>"
                  + (f"; {len(failed)} request(s) failed" if failed else "") + ")")
    return {"id": str(problem["id"]), "stage": "generate", "domain": problem.get("domain") or "math",
            "problem": problem["problem"], "gold": problem["gold"], "reason": reason,
            "samples": [s.summary() for s in sorted(samples, key=lambda s: s.index)]}


def _check_problems(problems: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    for i, p in enumerate(problems):
        for key in ("id", "problem", "gold"):
            if not str(p.get(key) or "").strip():
                raise ConfigError(f"problem {i} (id {p.get('id')!r}): field {key!r} is missing or empty")
        if str(p["id"]) in seen:
            raise ConfigError(f"problem {i}: duplicate id {p['id']!r}")
        seen.add(str(p["id"]))


def generate_traces(
    problems: list[dict[str, Any]],
    engine: Engine,
    *,
    n: int,
    keep: str = "first",
    params: dict[str, Any] | None = None,
    progress: bool = True,
    on_sample: Callable[[dict[str, Any], Sample], None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Sample ``n`` completions per problem and keep the verified ones.

    ``problems`` rows hold id, domain, problem, gold. Returns (trace rows, reject rows), both in
    problem order; rejects whose reason starts with "budget:" were stopped by ``max_cost_usd``.
    """
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    if keep not in KEEP:
        raise ConfigError(f"--keep must be one of {KEEP}, got {keep!r}")
    _check_problems(problems)
    params = dict(params or {})
    samples: list[list[Sample]] = [[] for _ in problems]

    def run(pairs: list[tuple[int, int]]) -> None:
        requests = [sample_request(problems[i], k, params) for i, k in pairs]

        def done(j: int, comp: Completion) -> None:
            i, k = pairs[j]
            s = judge(str(problems[i]["gold"]), k, comp)
            samples[i].append(s)
            if on_sample is not None:
                on_sample(problems[i], s)

        got: set[int] = set()

        def once(j: int, comp: Completion) -> None:
            if j not in got:
                got.add(j)
                done(j, comp)

        comps = engine.generate(requests, progress=progress, on_result=once)
        for j, comp in enumerate(comps):
            once(j, comp)

    if keep == "all":
        run([(i, k) for i in range(len(problems)) for k in range(n)])
    else:
        for k in range(n):
            open_ = [i for i in range(len(problems))
                     if not any(s.correct for s in samples[i])
                     and not any(s.error and s.error.startswith(BUDGET_PREFIX) for s in samples[i])]
            if not open_:
                break
            run([(i, k) for i in open_])

    rows, rejects = [], []
    for problem, got in zip(problems, samples, strict=True):
        kept = select(got, keep)
        if kept:
            rows.extend(trace_row(problem, s, engine.model, keep) for s in kept)
        else:
            rejects.append(reject_row(problem, got, n))
    return rows, rejects


def build_generated_traces(
    problems_source: str | None,
    out: str | Path,
    *,
    teacher: str,
    n: int,
    keep: str = "first",
    params: dict[str, Any] | None = None,
    options: EngineOptions | None = None,
    load: dict[str, Any] | None = None,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """``rlkd-bench traces --generate``: problems -> sampled, verified teacher traces product.

    Writes OUT/traces.jsonl and OUT/rejects.jsonl whole (atomically) with manifest.json and the
    card. A rerun is free: every sample is in the request cache. Problems stopped by
    ``--max-cost`` are neither traces nor rejects; they are counted as pending.
    """
    import time

    from rlkd_bench.build import preflight
    from rlkd_bench.llm import make_engine
    from rlkd_bench.products import check_out_dir, open_product
    from rlkd_bench.sources import load_traces

    t0 = time.time()
    out = Path(out)
    check_out_dir(out, PRODUCT)
    loaded = load_traces(problems_source, problems_only=True, **(load or {}))
    engine = engine or make_engine(teacher, options)
    preflight(engine)  # e.g. no API key: stop before any output exists
    with open_product(out, PRODUCT):
        return _generate_and_save(problems_source, out, loaded, engine, teacher=teacher, n=n, keep=keep,
                                  params=params, options=options, load=load, t0=t0)


def _generate_and_save(problems_source: str | None, out: Path, loaded: Any, engine: Engine, *, teacher: str,
                       n: int, keep: str, params: dict[str, Any] | None, options: EngineOptions | None,
                       load: dict[str, Any] | None, t0: float) -> dict[str, Any]:
    """The run itself, under the lock: sample, verify, write the product. Exit 70 (RlkdError) when
    no request came back at all: the manifest then says the run failed."""
    from rlkd_bench.build import failure_summary, record_traces_input
    from rlkd_bench.errors import RlkdError
    from rlkd_bench.products import Manifest, finish_product, write_jsonl

    problems = [p for p in loaded.rows if str(p.get("gold") or "").strip()]
    no_gold = [{"id": p["id"], "stage": "generate", "reason": "no gold answer to verify against"}
               for p in loaded.rows if not str(p.get("gold") or "").strip()]
    sample_errors: list[str] = []
    answered = 0

    def count(problem: dict[str, Any], s: Sample) -> None:
        nonlocal answered
        if s.error is None:
            answered += 1
        elif not s.error.startswith(BUDGET_PREFIX):
            sample_errors.append(s.error)

    rows, rejects = generate_traces(problems, engine, n=n, keep=keep, params=params,
                                    progress=bool(options.progress) if options else True, on_sample=count)
    stopped = [r for r in rejects if r["reason"].startswith(BUDGET_PREFIX)]
    rejects = list(loaded.rejects) + no_gold + [r for r in rejects if not r["reason"].startswith(BUDGET_PREFIX)]
    write_jsonl(out / "traces.jsonl", rows)
    write_jsonl(out / "rejects.jsonl", rejects)

    manifest = Manifest(product=PRODUCT)
    record_traces_input(manifest, problems_source, loaded, split=(load or {}).get("split", "train"),
                        name="problems")
    manifest.params = {"teacher": teacher, "n": n, "keep": keep, "sampling": dict(params or {}),
                       "base_url": safe_url(options.base_url) if options else None,
                       "batch_api": bool(options and options.batch_api),
                       "verify": True}  # every sample is checked against its gold: what --verify asks
    manifest.prompt_versions = {"teacher": TEACHER_PROMPT_VERSION}
    stats = getattr(engine, "stats", None)
    st = stats.to_dict() if hasattr(stats, "to_dict") else {}
    manifest.counts = {"problems": len(loaded.rows) + len(loaded.rejects), "ok": len(rows),
                       "problems_solved": len({r["problem_id"] for r in rows}), "rejected": len(rejects),
                       "pending_budget": len(stopped), "requests": st.get("requests", 0),
                       "cached": st.get("cache_hits", 0), "retries": st.get("retries", 0),
                       "failed_requests": len(sample_errors)}
    manifest.usage = {k: st[k] for k in ("prompt_tokens", "completion_tokens", "cost_usd") if k in st}
    price_source = engine.summary().get("price_source") if hasattr(engine, "summary") else None
    if price_source:
        manifest.usage["price_source"] = price_source
    budget_note = None
    if stopped:  # pending, as every stage files a budget stop (build.record_budget_stop)
        from rlkd_bench.build import record_budget_stop

        budget_note = record_budget_stop(manifest, len(stopped), stopped[0]["reason"].split(" (", 1)[0],
                                         "problem(s)")
    error = None
    if sample_errors and not answered:  # nothing came back: a model or server problem, not the data
        error = f"every teacher request failed ({len(sample_errors)}): {failure_summary(sample_errors)}"
    rule = "the first correct sample (the paper's rule)" if keep == "first" else "every correct sample"
    result = finish_product(
        manifest, out, t0, ["traces.jsonl", "rejects.jsonl"], title="Generated teacher reasoning traces",
        error=error,
        summary=(f"Teacher traces sampled from `{teacher}` ({n} samples per problem), split at `</think>` "
                 f"into reasoning and answer, checked against the gold answer with math-verify; kept: {rule}. "
                 "Rows follow the rlkd-bench traces schema (id, domain, problem, reasoning, answer, gold, "
                 "source, verified) plus problem_id and sample."))
    if error is not None:
        raise RlkdError(error + f"; the manifest in {out} says so")
    if sample_errors:
        from rlkd_bench.console import console

        console.print(f"[yellow]{len(sample_errors)} teacher request(s) failed "
                      f"({failure_summary(sample_errors)})[/yellow]")
    if budget_note:
        from rlkd_bench.console import console

        console.print(f"[yellow]{budget_note}[/yellow]")
    return result
