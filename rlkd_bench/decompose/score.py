"""Score a decomposer against reference decompositions: how good is a GSRM or an annotator
before RL is trained against it?

Metrics, per sample and then per domain and overall (a mean over the samples that could be
scored; a sample that could not is counted, never scored 0: NaN with its count):

- parse rate: the output is valid step text (``structure.parse_steps`` + ``validate``, the one step
  parser); a request that failed (server down, budget) is unscorable, not a parse failure;
- step-count error: predicted minus reference number of steps (signed mean) and its absolute mean;
- boundary precision / recall / F1: where the steps start in the trace against the reference starts,
  a predicted start matching an unmatched true one at most ``TOLERANCE`` characters away
  (``boundary_f1``). A decomposer that knows its spans gives them (the heuristic's segments, the
  baselines); any other's steps are located by ``locate``, from their answers;
- structure agreement through the reward's own rule (``reward.align``) and a named matcher
  (``reward.matchers``): the rule's normalised reward of the prediction against the reference, and
  per field (meta-reasoning, sub-problem, answer) the share of reference steps whose i-th
  predicted step the matcher calls the same.

Reference sets, by name (``SETS``): ``in-sample`` (hand-written, the heuristic was tuned on them),
``held-out`` and ``benchmark`` (hand-written, never tuned on), ``synthetic`` (generated traces with
their true steps, both wordings) and ``world`` (the mini-study world's traces, exact truth).
Baselines (``BASELINES``): ``paragraphs`` (one step per paragraph), ``oracle`` (the reference
itself, which scores 1 on every metric) and ``oracle-located`` (the reference's steps placed in the
trace by ``locate``, as a GSRM's are: the ceiling of boundary F1 for a decomposer that gives no
positions).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from rlkd_bench.data.synthetic import BANKS, boundary_f1, generate, paragraph_boundaries
from rlkd_bench.decompose import BUDGET_PREFIX, REQUEST_ERROR_PREFIX, DecomposeResult
from rlkd_bench.errors import ConfigError, DataError
from rlkd_bench.reward.align import Comparison, MissingVerdict, align_from_verdicts, all_comparisons
from rlkd_bench.structure import KINDS, Decomposition, Step, parse_steps, render_steps, validate

TOLERANCE = 40  # characters: a predicted step start within this of a true one is a hit
HAND_SETS = {"in-sample": "reference_steps.jsonl", "held-out": "heldout_steps.jsonl",
             "benchmark": "benchmark_steps.jsonl"}
SETS = (*HAND_SETS, "synthetic", "world")
BASELINES = ("paragraphs", "oracle", "oracle-located")
DEFAULT_GENERATED = 50  # traces per generated set (per wording for ``synthetic``)
METRICS = ("parse_rate", "step_error", "abs_step_error", "precision", "recall", "f1", "reward",
           "meta", "subproblem", "answer")
STATUS_OK, STATUS_INVALID, STATUS_UNSCORABLE = "ok", "invalid", "unscorable"


@dataclass(frozen=True)
class Reference:
    """One trace with its reference decomposition and where each reference step starts."""

    id: str
    set: str
    domain: str  # for ``synthetic``: "math (r1 wording)" / "math (unseen wording)"
    problem: str
    reasoning: str
    answer: str
    truth: Decomposition
    starts: tuple[int, ...]

    def item(self) -> dict[str, Any]:
        """The traces row a decomposer gets (never the reference steps)."""
        return {"id": self.id, "domain": self.domain.split(" ")[0], "problem": self.problem,
                "reasoning": self.reasoning, "answer": self.answer}


# ---- reference sets ----------------------------------------------------------------------------


def _bundled(name: str) -> list[dict[str, Any]]:
    path = resources.files("rlkd_bench") / "data" / name
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise DataError(f"{path}:{n}: not JSON ({e})") from None
    return rows


def hand_truth(name: str) -> list[Reference]:
    """A hand-written set: the in-sample set joins the bundled traces by id; the held-out and
    benchmark sets hold their traces themselves. Starts are the verbatim quotes' offsets."""
    traces = {r["id"]: r for r in _bundled("traces.jsonl")}
    out = []
    for n, row in enumerate(_bundled(HAND_SETS[name]), start=1):
        t = {**traces.get(row["id"], {}), **row}
        starts = []
        for quote in row["boundaries"]:
            at = t.get("reasoning", "").find(quote)
            if at < 0:
                raise DataError(f"{HAND_SETS[name]}:{n}: field 'boundaries': {quote!r} is not in the reasoning")
            starts.append(at)
        out.append(Reference(row["id"], name, t["domain"], t["problem"], t["reasoning"], t.get("answer", ""),
                             Decomposition.from_dict(row), tuple(starts)))
    return out


def synthetic_truth(n: int = DEFAULT_GENERATED, seed: int = 0) -> list[Reference]:
    """Generated traces in both phrase banks (the wording the heuristic was written around, and
    an unseen one), with the generator's true steps and starts."""
    out = []
    for bank in BANKS:
        for t in generate(n, seed=seed, bank=bank):
            out.append(Reference(t.id, "synthetic", f"math ({bank} wording)", t.problem, t.reasoning, t.answer,
                                 t.truth, tuple(t.boundaries)))
    return out


def world_starts(reasoning: str, n_steps: int) -> tuple[int, ...]:
    """Where each step of a world teacher trace starts: the line after the previous step's
    equation line (and its check), the first one after the opening lines that say what is needed.
    The world writes one line per move, so this is exact."""
    starts: list[int] = []
    pos, want = 0, True  # want: the next line that is not a preamble or a check starts a step
    for i, line in enumerate(reasoning.split("\n")):
        at, pos = pos, pos + len(line) + 1
        if i == 0 or (not starts and line.startswith("And ")) or line.startswith("Check:"):
            continue
        if want and len(starts) < n_steps:
            starts.append(at)
            want = False
        if "=" in line and not line.startswith("Could "):  # an equation line ends its step
            want = True
    return tuple(starts)


def world_truth(n: int = DEFAULT_GENERATED, seed: int = 0) -> list[Reference]:
    """The mini-study world's teacher traces with the steps the teacher really took."""
    from rlkd_bench.data import world

    out = []
    for p in world.problems(n, seed):
        t = world.teach(p, seed)
        out.append(Reference(f"world-{seed}-{p.id}", "world", world.DOMAIN, p.text(), t.reasoning, t.answer,
                             t.truth, world_starts(t.reasoning, len(t.truth.steps))))
    return out


def load_set(name: str, *, n: int = DEFAULT_GENERATED, seed: int = 0) -> list[Reference]:
    """A reference set by name (``SETS``); ``n`` and ``seed`` size the generated ones."""
    if name in HAND_SETS:
        return hand_truth(name)
    if name == "synthetic":
        return synthetic_truth(n, seed)
    if name == "world":
        return world_truth(n, seed)
    raise ConfigError(f"unknown reference set {name!r}: use one of {', '.join(SETS)}")


def parse_set_names(spec: str) -> list[str]:
    """``"held-out,benchmark"`` -> names, each checked; ``all`` is every set."""
    names = [s.strip() for s in (spec or "").split(",") if s.strip()]
    if names == ["all"]:
        return list(SETS)
    bad = [s for s in names if s not in SETS]
    if bad or not names:
        raise ConfigError(f"--set {spec!r}: unknown set {', '.join(bad) or '(none)'}; use one or more of "
                          f"{', '.join(SETS)} (comma-separated) or all")
    return list(dict.fromkeys(names))


# ---- baselines ---------------------------------------------------------------------------------


def paragraph_decomposition(ref: Reference) -> tuple[Decomposition, tuple[int, ...]]:
    """One step per paragraph of the trace: the naive floor. Its fields are what a paragraph
    offers without understanding: its position, and its last sentence as the answer."""
    from rlkd_bench.decompose.heuristic import final_answer

    starts = tuple(paragraph_boundaries(ref.reasoning))
    ends = (*starts[1:], len(ref.reasoning))
    steps = []
    for i, (a, b) in enumerate(zip(starts, ends, strict=True), start=1):
        para = " ".join(ref.reasoning[a:b].split())
        last = re.split(r"(?<=[.?!])\s+", para)[-1] or para
        steps.append(Step(f"Paragraph {i} of the trace comes next.", f"What does paragraph {i} work out?",
                          last[:80].replace("?", "")))
    return Decomposition(tuple(steps), final_answer(ref.reasoning, ref.answer) or "none"), starts


class Baseline:
    """A baseline of ``BASELINES`` behind the decomposer interface, with the starts it knows. It
    needs the references (the oracle returns them), so it is the command's, not ``get_decomposer``'s."""

    prompt_version = "baseline-v1"

    def __init__(self, name: str, refs: Sequence[Reference]):
        if name not in BASELINES:
            raise ConfigError(f"unknown baseline {name!r}: use one of {', '.join(BASELINES)}")
        self.name = name
        self._refs = {r.id: r for r in refs}

    def decompose(self, items: list[dict[str, Any]]) -> list[DecomposeResult]:
        out = []
        for item in items:
            ref = self._refs[item["id"]]
            if self.name == "paragraphs":
                d, starts = paragraph_decomposition(ref)
            else:  # oracle-located: the reference's steps without their starts, placed by ``locate``
                d, starts = ref.truth, (ref.starts if self.name == "oracle" else None)
            out.append(DecomposeResult(decomposition=d, raw=render_steps(d), starts=starts))
        return out

    def describe(self) -> dict[str, Any]:
        what = {"oracle": "the reference itself", "paragraphs": "one step per paragraph",
                "oracle-located": "the reference's steps, placed in the trace by score.locate"}[self.name]
        return {"name": self.name, "kind": "baseline", "what": what, "prompt_version": self.prompt_version}


def heuristic_starts(ref: Reference, n_steps: int) -> tuple[int, ...] | None:
    """The heuristic knows its spans; None if its segments and steps disagree in number."""
    from rlkd_bench.decompose.heuristic import segment

    starts = tuple(a for a, _ in segment(ref.reasoning, ref.problem))
    return starts if len(starts) == n_steps else None


def method_scores(items: Sequence[dict[str, Any]], tolerance: int = TOLERANCE) -> dict[str, dict[str, float]]:
    """Mean P / R / F1 and |steps - true| per segmentation method (the heuristic's spans and the
    boundary-only baselines of ``rlkd_bench.data.synthetic.BASELINES``) over ``items`` (dicts with
    reasoning, problem and the true starts ``true``): the step boundaries alone, fast, for
    bench/bench_structure.py."""
    from rlkd_bench.data.synthetic import BASELINES as BOUNDARY_BASELINES
    from rlkd_bench.decompose.heuristic import segment

    methods: dict[str, Callable[[dict], list[int]]] = {
        "heuristic": lambda t: [a for a, _ in segment(t["reasoning"], t["problem"])],
        **{name: (lambda t, f=f: f(t["reasoning"])) for name, f in BOUNDARY_BASELINES.items()},
    }
    out = {}
    for name, predict in methods.items():
        scores, err = [], 0
        for t in items:
            pred = predict(t)
            scores.append(boundary_f1(pred, t["true"], tolerance))
            err += abs(len(pred) - len(t["true"]))
        p, r, f1 = (sum(x) / len(x) for x in zip(*scores, strict=True))
        out[name] = {"precision": p, "recall": r, "F1": f1, "step_err": err / len(items)}
    return out


# ---- per-sample metrics (pure) -----------------------------------------------------------------

_NUMBER_RE = re.compile(r"-?\d+(?:[.,]\d+)*(?:/\d+)?")


def _token_at(text: str, token: str, start: int) -> int:
    """First index >= start where ``token`` occurs not glued to a letter or digit, or -1."""
    i = text.find(token, start)
    while i >= 0:
        before = text[i - 1] if i else " "
        after = text[i + len(token)] if i + len(token) < len(text) else " "
        if not before.isalnum() and not after.isalnum():
            return i
        i = text.find(token, i + 1)
    return -1


def _answer_keys(answer: str) -> list[str]:
    """What to look for in the trace, most specific first: the answer as written, the right side of
    an 'x = 9' answer, its last and first numbers (also without trailing zeros: '$6.00' -> '6')."""
    answer = " ".join(answer.split()).strip().rstrip(".")
    keys = [answer]
    if "=" in answer:
        keys.append(answer.rsplit("=", 1)[1].strip())
    numbers = _NUMBER_RE.findall(answer)
    for n in (numbers[-1:] + numbers[:1]) if numbers else []:
        keys.append(n)
        if "." in n and "," not in n:
            keys.append(n.rstrip("0").rstrip("."))
    return [k for k in dict.fromkeys(keys) if k]


def locate(steps: Sequence[Step], reasoning: str) -> list[int | None]:
    """Where each step starts in ``reasoning``, for a decomposer that does not say (a GSRM, an
    annotator). The rule, in order:

    1. the step is anchored where its answer (``_answer_keys``) is first written after the previous
       step's anchor; failing that, at the sentence after it that shares the most words with the
       step's sub-problem and answer (none shared: the step cannot be placed, None);
    2. it starts at the start of the anchor's paragraph, or of the anchor's sentence when the previous
       step already starts in that paragraph.

    An unplaced step still counts as a predicted start that matches nothing (``boundary_scores``).
    Placing the reference's own steps this way scores below 1 (the rule cannot know where a step's
    work begins): that ceiling is reported beside the scores as ``oracle-located``.
    """
    from rlkd_bench.decompose.heuristic import units
    from rlkd_bench.reward.matchers import overlap

    us = units(reasoning)
    out: list[int | None] = []
    cursor, prev_start = 0, -1
    for step in steps:
        keys = _answer_keys(step.answer)
        at = next((i for k in keys if (i := _token_at(reasoning, k, cursor)) >= 0), -1)
        width = len(next((k for k in keys if _token_at(reasoning, k, cursor) == at), "")) if at >= 0 else 0
        if at < 0:
            best = max(((overlap(f"{step.subproblem} {step.answer}", u.text), -u.start, u) for u in us
                        if u.end > cursor), default=None, key=lambda x: x[:2])
            if best is None or best[0] <= 0:
                out.append(None)
                continue
            at, width = best[2].start, max(1, best[2].end - best[2].start)
        idx = next((j for j, u in enumerate(us) if u.start <= at < max(u.end, u.start + 1)), None)
        if idx is None:
            start = at
        else:
            para = next((us[j] for j in range(idx, -1, -1) if us[j].para_start), us[idx])
            start = para.start if para.start > prev_start else us[idx].start
        start = max(start, prev_start + 1)
        out.append(start)
        prev_start, cursor = start, at + max(1, width)
    return out


def boundary_scores(pred: Sequence[int | None], true: Sequence[int], tolerance: int = TOLERANCE
                    ) -> tuple[float, float, float]:
    """``boundary_f1`` where an unlocated predicted step (None) still counts as a prediction."""
    placed = [p for p in pred if p is not None]
    p, r, _ = boundary_f1(placed, true, tolerance)
    matched = round(p * len(placed)) if placed else 0
    precision = matched / len(pred) if pred else 1.0
    recall = r
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def field_agreement(ref: Decomposition, pred: Decomposition, verdicts: dict) -> dict[str, float]:
    """Per field, the share of reference steps whose i-th predicted step the matcher calls the
    same (every pair judged, no prefix rule: this says how close each field is)."""
    out = {}
    for kind in KINDS:
        hits = 0
        for t, s in zip(ref.steps, pred.steps, strict=False):
            c = Comparison(kind, getattr(t, kind), getattr(s, kind))
            if verdicts.get(c) is None:
                raise MissingVerdict(c)
            hits += bool(verdicts[c])
        out[kind] = hits / len(ref.steps) if ref.steps else float("nan")
    return out


def classify(res: DecomposeResult) -> tuple[str, Decomposition | None, str | None]:
    """ok / invalid (the decomposer answered, the text is not valid steps) / unscorable (no answer
    came: a failed request or a budget stop), with the parsed steps and the reason."""
    error = res.error or ""
    if error.startswith((REQUEST_ERROR_PREFIX, BUDGET_PREFIX)):
        return STATUS_UNSCORABLE, None, error
    text = res.raw or (render_steps(res.decomposition) if res.decomposition is not None else "")
    parsed = parse_steps(text) if text else None
    problems = validate(parsed) if parsed is not None else ["no output"]
    if problems or not res.ok:
        return STATUS_INVALID, None, error or "; ".join(problems)
    return STATUS_OK, parsed, None


def score_sample(ref: Reference, res: DecomposeResult, verdicts: dict, *,
                 starts: Sequence[int | None] | None = None, tolerance: int = TOLERANCE) -> dict[str, Any]:
    """Every metric of one sample (None where it cannot be scored, with the reason)."""
    status, pred, reason = classify(res)
    row: dict[str, Any] = {"id": ref.id, "set": ref.set, "domain": ref.domain, "status": status,
                           "n_ref": len(ref.truth.steps), "n_pred": None, "error": reason,
                           **{m: None for m in METRICS}}
    if status == STATUS_UNSCORABLE:
        return row
    row["parse_rate"] = 1.0 if status == STATUS_OK else 0.0
    if pred is None:
        return row
    given = res.starts
    where = list(given) if given is not None else (list(starts) if starts is not None
                                                   else locate(pred.steps, ref.reasoning))
    row.update(n_pred=len(pred.steps), step_error=float(len(pred.steps) - len(ref.truth.steps)),
               unlocated=sum(w is None for w in where), starts="given" if given is not None or starts is not None
               else "located")
    row["abs_step_error"] = abs(row["step_error"])
    row["precision"], row["recall"], row["f1"] = boundary_scores(where, ref.starts, tolerance)
    try:
        row["reward"] = align_from_verdicts(ref.truth, pred, verdicts).normalized
        row.update(field_agreement(ref.truth, pred, verdicts))
    except MissingVerdict as e:
        row["agreement_error"] = f"matcher gave no verdict for a {e.comparison.kind} comparison"
    return row


# ---- aggregation -------------------------------------------------------------------------------


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean of each metric over the rows that have it (NaN when none), with how many had it."""
    out: dict[str, Any] = {"n": len(rows), "unscorable": sum(r["status"] == STATUS_UNSCORABLE for r in rows),
                           "invalid": sum(r["status"] == STATUS_INVALID for r in rows)}
    for m in METRICS:
        vals = [r[m] for r in rows if r.get(m) is not None]
        out[m] = sum(vals) / len(vals) if vals else float("nan")
        out[f"n_{m}"] = len(vals)
    return out


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Overall and per-domain aggregates of one set's rows."""
    domains = sorted({r["domain"] for r in rows})
    return {"overall": aggregate(rows), "by_domain": {d: aggregate([r for r in rows if r["domain"] == d])
                                                       for d in domains}}


# ---- the run -----------------------------------------------------------------------------------


def judge_all(matcher: Any, pairs: Sequence[tuple[Decomposition, Decomposition]]) -> dict:
    """Every comparison of every (reference, prediction) pair, judged in one batch."""
    todo = list(dict.fromkeys(c for t, s in pairs for c in all_comparisons(t, s)))
    return matcher.judge(todo) if todo else {}


def score_results(refs: Sequence[Reference], results: Sequence[DecomposeResult], matcher: Any, *,
                  starts_for: Callable[[Reference, Decomposition], Sequence[int] | None] | None = None,
                  tolerance: int = TOLERANCE) -> list[dict[str, Any]]:
    """Per-sample rows for ``results`` (one per reference, in order)."""
    parsed = [classify(r)[1] for r in results]
    verdicts = judge_all(matcher, [(ref.truth, p) for ref, p in zip(refs, parsed, strict=True) if p is not None])
    rows = []
    for ref, res, p in zip(refs, results, parsed, strict=True):
        known = starts_for(ref, p) if (starts_for is not None and p is not None) else None
        rows.append(score_sample(ref, res, verdicts, starts=known, tolerance=tolerance))
    return rows


def fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


TABLE_HEAD = ("| decomposer | set | n | parse | steps Δ | \\|Δ\\| | P | R | F1 | reward | meta | sub | ans "
              "| unscorable |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")


def table_rows(name: str, sets: dict[str, dict[str, Any]]) -> list[str]:
    """One markdown row per reference set of one decomposer's results."""
    lines = []
    for set_name, s in sets.items():
        o = s["overall"]
        lines.append(
            f"| {name} | {set_name} | {o['n']} | {fmt(o['parse_rate'])} | {fmt(o['step_error'], 2)} | "
            f"{fmt(o['abs_step_error'], 2)} | {fmt(o['precision'])} | {fmt(o['recall'])} | {fmt(o['f1'])} | "
            f"{fmt(o['reward'])} | {fmt(o['meta'])} | {fmt(o['subproblem'])} | {fmt(o['answer'])} | "
            f"{o['unscorable']} |")
    return lines


def run(spec: str, set_names: Sequence[str], *, matcher: str = "lexical", options: dict[str, Any] | None = None,
        engine_options: Any = None, baselines: bool = True, n: int = DEFAULT_GENERATED, seed: int = 0,
        tolerance: int = TOLERANCE, limit: int | None = None) -> dict[str, Any]:
    """Score ``spec`` (and the baselines) on each named set. Returns the results dict the command
    writes: per decomposer and set, overall and per-domain metrics, the per-sample rows, usage."""
    from rlkd_bench.decompose import get_decomposer
    from rlkd_bench.llm.base import Usage
    from rlkd_bench.llm.redact import redact_text
    from rlkd_bench.reward.matchers import make_matcher

    refs = {name: load_set(name, n=n, seed=seed)[:limit] for name in set_names}
    everything = [r for rs in refs.values() for r in rs]
    judge = make_matcher(matcher, engine_options=engine_options)
    specs = [spec] + [b for b in ("heuristic", *BASELINES) if baselines and b != spec]
    out: dict[str, Any] = {"tolerance": tolerance, "matcher": judge.describe(), "sets": {
        k: {"n": len(v), "domains": sorted({r.domain for r in v})} for k, v in refs.items()},
        "decomposers": {}, "samples": []}
    try:
        for name in specs:
            dec = Baseline(name, everything) if name in BASELINES else get_decomposer(
                name, **((options or {}) if name == spec else {}))
            starts_for = (lambda ref, d: heuristic_starts(ref, len(d.steps))) if name == "heuristic" else None
            usage, per_set, cached = Usage(), {}, 0
            for set_name, rs in refs.items():
                results = dec.decompose([r.item() for r in rs]) if rs else []
                for res in results:
                    usage, cached = usage + res.usage, cached + bool(res.cached)
                rows = score_results(rs, results, judge, starts_for=starts_for, tolerance=tolerance)
                per_set[set_name] = summarize(rows)
                out["samples"] += [{"decomposer": redact_text(name), **row} for row in rows]
            out["decomposers"][redact_text(name)] = {"describe": dec.describe(), "usage": usage.to_dict(),
                                                     "cached": cached, "sets": per_set}
    finally:
        if hasattr(judge, "close"):  # a judge's engine holds a client or a model
            judge.close()
    return out


def table(results: dict[str, Any]) -> str:
    """The short markdown table of a run: one row per decomposer and set."""
    lines = [TABLE_HEAD]
    for name, d in results["decomposers"].items():
        lines += table_rows(name, d["sets"])
    return "\n".join(lines) + (
        f"\n\nBoundaries: a predicted step start within {results['tolerance']} characters of an unmatched "
        f"reference start is a hit. reward / meta / sub / ans: the structure rule and matcher "
        f"{results['matcher'].get('kind')}. — : nothing to score (see the counts in results.json).\n")


def command(spec: str, sets: str, *, matcher: str, out: str, options: dict[str, Any], engine_options: Any,
            estimate: bool, baselines: bool, n: int, seed: int, limit: int | None, echo: Callable[[str], None]
            ) -> dict[str, Any] | None:
    """``rlkd-bench score-decomposer``: score, write OUT/results.json, samples.jsonl and table.md."""
    from rlkd_bench.console import summary
    from rlkd_bench.decompose import get_decomposer
    from rlkd_bench.llm.redact import redact_text, scrub
    from rlkd_bench.products import check_out_dir, make_out_dir, write_json, write_jsonl, write_text

    names = parse_set_names(sets)
    if estimate:
        dec = get_decomposer(spec, **options)
        if not hasattr(dec, "estimate"):
            raise ConfigError(f"--estimate needs an LLM annotator; {spec!r} calls no model and costs 0")
        items = [r.item() for name in names for r in load_set(name, n=n, seed=seed)[:limit]]
        summary(f"estimate ({spec})", dec.estimate(items))
        return None
    check_out_dir(out, "decomposer-scores")
    results = run(spec, names, matcher=matcher, options=options, engine_options=engine_options,
                  baselines=baselines, n=n, seed=seed, limit=limit)
    results["product"] = "decomposer-scores"
    results = scrub(results)  # a URL's credentials never reach a file (dict keys: redacted by ``run``)
    path = make_out_dir(out)
    samples = results.pop("samples")
    write_jsonl(path / "samples.jsonl", samples)
    write_json(path / "results.json", results)
    text = table(results)
    write_text(path / "table.md", text)
    echo(text)
    usage = results["decomposers"][redact_text(spec)]["usage"]
    summary("score-decomposer", {"decomposer": spec, "sets": ", ".join(names), "matcher": matcher,
                                 "tokens in / out": f"{usage['prompt_tokens']} / {usage['completion_tokens']}",
                                 "cost (USD)": usage["cost_usd"], "results": f"{out}/results.json"})
    return results
