"""Benchmark: the structure reward, ours against a port of the reference algorithm, on one real server.

Part 1, per GRPO batch (prompts x generations completions), on the same batches and the same
``transformers serve`` (the tiny offline model, behind a counting proxy):
- reference (ported from its description): per completion, in parallel threads, the GSRM decodes
  the student trace AND the teacher trace again, then the judge is asked one call after another,
  up to three per step (meta; then sub-problem and answer while the metas match); no cache, no
  dedup, a plain OpenAI client;
- ours (``StructureScorer``): teacher steps precomputed (the rlkd-data product), all student
  decompositions of the batch in one concurrent engine batch, judge comparisons in at most two
  concurrent rounds, identical ones once, math-verify before the judge for answers, through the
  request cache.
Counted: model requests (at the server, by the proxy), generated tokens (the server's usage) and
wall time per batch.

The tiny model's replies are noise, so what steers the rule is the same in both arms: every
GSRM and judge request is really sent (and paid in tokens and time), then the GSRM's steps are
taken from the heuristic decomposition of the same trace and the judge's verdicts from the
lexical matcher (math-verify first for answers). A GSRM request asks for as many tokens as the
rendered decomposition is long (capped by ``--gsrm-cap``): the tiny model always generates
exactly that many, as a real GSRM writing those steps would.

Part 2: the structure reward with offline matchers (heuristic + lexical) against one tiny GRPO
step (a real GRPOTrainer on the tiny model, 8 completions, the four RLKD rewards).

    .venv/bin/python bench/bench_reward.py [--batches 2] [--prompts 4] [--generations 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # servers.py and faultproxy.py live with the tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from servers import served_behind_proxy  # noqa: E402

from rlkd_bench.decompose import DecomposeResult  # noqa: E402
from rlkd_bench.decompose.heuristic import HeuristicDecomposer  # noqa: E402
from rlkd_bench.llm import EngineOptions, make_engine  # noqa: E402
from rlkd_bench.llm.base import ChatRequest, Usage  # noqa: E402
from rlkd_bench.prompting import gsrm_messages, load_prompt  # noqa: E402
from rlkd_bench.reward.align import Comparison  # noqa: E402
from rlkd_bench.reward.matchers import JudgeMatcher, LexicalMatcher, Verdicts, math_equal, parse_math  # noqa: E402
from rlkd_bench.reward.scorer import StructureScorer  # noqa: E402
from rlkd_bench.structure import ANSWER, META, SUBPROBLEM, Decomposition, render_steps, split_think  # noqa: E402

JUDGE_MAX_TOKENS = 3  # "yes" / "no" and a stop token, for both arms


# -- the world: batches of completions with known teacher steps ----------------------------------
@dataclass
class Row:
    problem: str
    reasoning: str  # the teacher's
    gold: str
    teacher: Decomposition  # precomputed once (what the rlkd-data product stores)


def load_rows() -> list[Row]:
    lines = (resources.files("rlkd_bench") / "data" / "traces.jsonl").read_text().splitlines()
    traces = [json.loads(x) for x in lines]
    out = []
    for t, r in zip(traces, HeuristicDecomposer().decompose(traces), strict=True):
        if r.ok and len(r.decomposition) >= 2:
            out.append(Row(t["problem"], t["reasoning"], str(t["gold"]), r.decomposition))
    return out


def student_variant(row: Row, g: int, rng: random.Random) -> str:
    """Generation g of a prompt: the teacher's trace (g=0) or an edited copy whose structure drifts
    (a paragraph dropped, two swapped), so prefixes match to different depths."""
    paras = [p for p in row.reasoning.split("\n\n") if p.strip()]
    if g % 4 == 1 and len(paras) > 2:
        del paras[rng.randrange(1, len(paras) - 1)]
    elif g % 4 == 2 and len(paras) > 3:
        i = rng.randrange(1, len(paras) - 2)
        paras[i], paras[i + 1] = paras[i + 1], paras[i]
    elif g % 4 == 3 and len(paras) > 2:
        paras = paras[:1] + paras[2:][::-1] if rng.random() < 0.5 else paras[1:]
    return "<think>" + "\n\n".join(paras) + f"</think><answer>\\boxed{{{row.gold}}}</answer>"


@dataclass
class Batch:
    rows: list[Row]  # one per completion (a prompt repeated once per generation)
    completions: list[str]


def make_batches(rows: list[Row], n_batches: int, prompts: int, generations: int, seed: int = 0) -> list[Batch]:
    rng = random.Random(seed)
    need = n_batches * prompts
    if need > len(rows):
        raise SystemExit(f"{need} prompts needed, {len(rows)} bundled traces decompose: lower --batches/--prompts")
    out = []
    for b in range(n_batches):
        chosen = rows[b * prompts:(b + 1) * prompts]
        brows = [r for r in chosen for _ in range(generations)]
        comps = [student_variant(r, g, rng) for r in chosen for g in range(generations)]
        out.append(Batch(brows, comps))
    return out


# -- shared stand-ins: what steers the rule in both arms -----------------------------------------
class Oracle:
    """The verdict that steers the rule (math-verify, then lexical) and the GSRM's steps (the
    heuristic decomposition): the same in both arms, since the tiny model's replies are noise."""

    def __init__(self, tokenizer, cap: int):
        self.lexical = LexicalMatcher()
        self.heuristic = HeuristicDecomposer()
        self.tokenizer = tokenizer
        self.cap = cap
        self._lock = threading.Lock()

    def same(self, kind: str, t: str, s: str) -> bool:
        c = Comparison(kind, t, s)
        return bool(self.lexical.judge([c])[c])  # math-verify first for answers, as every matcher does

    def steps(self, problem: str, reasoning: str, answer: str) -> Decomposition | None:
        with self._lock:
            r = self.heuristic.decompose([{"problem": problem, "reasoning": reasoning, "answer": answer}])[0]
        return r.decomposition if r.ok else None

    def gsrm_tokens(self, d: Decomposition | None) -> int:
        text = render_steps(d) if d is not None else "[Meta-reasoning 1]: ?"
        return max(8, min(self.cap, len(self.tokenizer(text)["input_ids"])))


def gsrm_request(problem: str, reasoning: str, max_tokens: int) -> ChatRequest:
    return ChatRequest(messages=tuple(gsrm_messages(problem, reasoning)),
                       params={"temperature": 0.0, "max_tokens": max_tokens},
                       prompt_version=load_prompt("gsrm").version)


# -- the reference, ported from its description ----------------------------------------------------
class Reference:
    """Per completion (parallel threads): decode student, decode teacher again, then judge calls one
    after another, up to three per step. No cache, no batching, no dedup."""

    def __init__(self, base_url: str, model: str, oracle: Oracle, judge_templates: dict[str, str]):
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=600)
        self.model = model
        self.oracle = oracle
        self.templates = judge_templates
        self.usage = Usage()
        self.phase_s = {"gsrm": 0.0, "judge": 0.0}  # summed over threads (request latency)
        self._lock = threading.Lock()

    def _chat(self, messages: list[dict[str, str]], max_tokens: int) -> None:
        resp = self.client.chat.completions.create(model=self.model, messages=messages, temperature=0.0,
                                                   max_tokens=max_tokens)
        with self._lock:
            self.usage += Usage(resp.usage.prompt_tokens, resp.usage.completion_tokens)

    def gsrm(self, problem: str, reasoning: str, answer: str) -> Decomposition | None:
        d = self.oracle.steps(problem, reasoning, answer)
        t0 = time.perf_counter()
        self._chat(gsrm_messages(problem, reasoning), self.oracle.gsrm_tokens(d))
        self.phase_s["gsrm"] += time.perf_counter() - t0
        return d

    def judge(self, kind: str, t: str, s: str) -> bool:
        text = self.templates[kind].replace("{teacher}", t.strip()).replace("{student}", s.strip())
        t0 = time.perf_counter()
        self._chat([{"role": "user", "content": text}], JUDGE_MAX_TOKENS)
        self.phase_s["judge"] += time.perf_counter() - t0
        return self.oracle.same(kind, t, s)

    def score_one(self, row: Row, completion: str) -> float | None:
        split = split_think(completion)
        student = self.gsrm(row.problem, split.thinking, split.answer)
        teacher = self.gsrm(row.problem, row.reasoning, f"\\boxed{{{row.gold}}}")  # decoded again
        if student is None or teacher is None:
            return None
        total = 0.0
        for t, s in zip(teacher.steps, student.steps, strict=False):
            if not self.judge(META, t.meta, s.meta):
                break
            q = self.judge(SUBPROBLEM, t.subproblem, s.subproblem)
            a = self.judge(ANSWER, t.answer, s.answer)
            total += (1.0 if q else 0.5) * (1.0 if a else 0.5)
        return total

    def score(self, batch: Batch) -> list[float | None]:
        with concurrent.futures.ThreadPoolExecutor(len(batch.completions)) as ex:
            return list(ex.map(self.score_one, batch.rows, batch.completions))


# -- ours: the real StructureScorer, its decomposer and judge sending real requests -----------------
class ServedGSRM:
    """A decomposer that sends each trace to the served model in one engine batch (the GSRM's cost)
    and returns the oracle's steps (the tiny model's replies do not parse)."""

    name = "gsrm-bench"
    prompt_version = "bench"

    def __init__(self, engine, oracle: Oracle):
        self.engine = engine
        self.oracle = oracle

    def decompose(self, items: list[dict[str, Any]]) -> list[DecomposeResult]:
        steps = [self.oracle.steps(it["problem"], it["reasoning"], it.get("answer", "")) for it in items]
        reqs = [gsrm_request(it["problem"], it["reasoning"], self.oracle.gsrm_tokens(d)) for it, d in zip(items, steps, strict=True)]
        comps = self.engine.generate(reqs, progress=False)
        return [DecomposeResult(decomposition=d, usage=c.usage) if c.ok and d is not None
                else DecomposeResult(decomposition=None, error=c.error or "no steps") for d, c in zip(steps, comps, strict=True)]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


class OracleJudge(JudgeMatcher):
    """Our judge matcher, every request really sent; the verdict that steers the rule is the oracle's."""

    def __init__(self, *a, oracle: Oracle, **kw):
        super().__init__(*a, **kw)
        self.oracle = oracle

    def _ask(self, comparisons: list[Comparison]) -> Verdicts:
        completions = self.engine.generate([self.request(c) for c in comparisons], progress=False)
        out: Verdicts = {}
        for c, comp in zip(comparisons, completions, strict=True):
            self.stats.cached += int(comp.cached)
            self.stats.failed += int(not comp.ok)
            out[c] = self.oracle.same(c.kind, c.teacher, c.student) if comp.ok else None
        return out


def make_ours(base_url: str, model: str, oracle: Oracle, cache_dir: str, concurrency: int,
              no_identical: bool = False) -> StructureScorer:
    opts = EngineOptions(base_url=base_url, cache_dir=cache_dir, concurrency=concurrency, progress=False,
                         max_retries=0, timeout_s=600)
    scorer = StructureScorer("heuristic", "lexical", normalize=False, engine_options=opts, timeout_s=600)
    scorer.decomposer = ServedGSRM(make_engine(f"openai:{model}", opts), oracle)  # type: ignore[assignment]
    judge = OracleJudge(f"openai:{model}", engine_options=opts, max_tokens=JUDGE_MAX_TOKENS, timeout_s=600,
                        oracle=oracle)
    scorer.matcher = judge
    judge.skip_identical = not no_identical
    return scorer


# -- part 1 -----------------------------------------------------------------------------------------
def run_part1(args) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from rlkd_bench.reward.matchers import judge_templates
    from rlkd_bench.tiny import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="bench-reward-"))
    model_dir = build_tiny_model(work / "tiny")
    oracle = Oracle(AutoTokenizer.from_pretrained(model_dir), args.gsrm_cap)
    rows = load_rows()
    batches = make_batches(rows, args.batches, args.prompts, args.generations)
    n = args.prompts * args.generations
    print(f"world: {len(batches)} batches x {n} completions ({args.prompts} prompts x {args.generations} "
          f"generations) from the bundled traces; server: transformers serve, tiny model, CPU", flush=True)
    per: dict[str, list[dict[str, float]]] = {"reference": [], "ours": []}
    agree = True
    # a paged KV cache of kv_blocks x 32 tokens holds every sequence of a batch at once, so neither
    # arm queues on server memory
    with served_behind_proxy(model_dir, cb_blocks=args.kv_blocks, timeout_s=300) as (base_url, model_id, proxy):
        ref = Reference(base_url, model_id, oracle, judge_templates())
        ours = make_ours(base_url, model_id, oracle, str(work / "cache"), concurrency=n,
                         no_identical=args.no_identical_shortcut)
        # warm the server up on a batch of its own (its first requests of each shape are slow)
        warm = make_batches(rows[len(rows) - args.prompts:], 1, args.prompts, args.generations, seed=99)[0]
        ref.score(warm)
        make_ours(base_url, model_id, oracle, str(work / "warm-cache"), concurrency=n).score(
            [r.problem for r in warm.rows], warm.completions, [r.teacher.to_dict()["steps"] for r in warm.rows])

        def run_ref(batch: Batch) -> list[float | None]:
            proxy.reset()
            u0 = Usage() + ref.usage
            t0 = time.perf_counter()
            scores = ref.score(batch)
            per["reference"].append({"requests": proxy.count, "wall_s": time.perf_counter() - t0,
                                     "tokens": ref.usage.completion_tokens - u0.completion_tokens})
            return scores

        def run_ours(batch: Batch) -> list[float | None]:
            proxy.reset()
            gen0 = _engine_tokens(ours)
            t0 = time.perf_counter()
            outcomes = ours.score([r.problem for r in batch.rows], batch.completions,
                                  [r.teacher.to_dict()["steps"] for r in batch.rows])
            per["ours"].append({"requests": proxy.count, "tokens": _engine_tokens(ours) - gen0,
                                "wall_s": time.perf_counter() - t0})
            return [o.reward(normalize=False) for o in outcomes]

        for b, batch in enumerate(batches):
            # interleave the arms batch by batch, first one then the other, so the load of the shared
            # machine falls on both alike
            if b % 2:
                our_scores, ref_scores = run_ours(batch), run_ref(batch)
            else:
                ref_scores, our_scores = run_ref(batch), run_ours(batch)
            if our_scores != ref_scores:
                agree = False
                print(f"  batch {b}: scores differ: reference {ref_scores} ours {our_scores}", flush=True)
            print(f"  batch {b + 1}: reference {per['reference'][-1]}  ours {per['ours'][-1]}  "
                  f"(reference request latency summed over threads so far: {ref.phase_s})", flush=True)
        # a rerun of the first batch (the next epoch sees the same prompts): ours pays nothing twice
        proxy.reset()
        t0 = time.perf_counter()
        ours.score([r.problem for r in batches[0].rows], batches[0].completions,
                   [r.teacher.to_dict()["steps"] for r in batches[0].rows])
        rerun = {"requests": proxy.count, "wall_s": time.perf_counter() - t0}
    return {"per_batch": per, "scores_agree": agree, "skip_identical": not args.no_identical_shortcut, "rerun_ours": rerun, "completions_per_batch": n,
            "judge": ours.matcher.stats.to_dict(), "scorer": {"judge_rounds": ours.stats.judge_rounds,
                                                               "comparisons": ours.stats.comparisons}}


def _engine_tokens(scorer: StructureScorer) -> int:
    total = scorer.decomposer.engine.stats.completion_tokens  # type: ignore[attr-defined]
    judge = scorer.matcher._engine  # type: ignore[attr-defined]
    return total + (judge.stats.completion_tokens if judge is not None else 0)


# -- part 2 -----------------------------------------------------------------------------------------
def run_part2(args) -> dict[str, Any]:
    """One tiny GRPO step (real GRPOTrainer, 8 completions, the four rewards) vs the structure reward."""
    import datasets
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlkd_bench.reward.rewards import get_reward_funcs
    from rlkd_bench.rlkd_data import conversation
    from rlkd_bench.tiny import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="bench-grpo-"))
    model_dir = build_tiny_model(work / "tiny")
    rows = load_rows()[:16]
    data = datasets.Dataset.from_list([{"prompt": conversation(r.problem), "problem": r.problem, "gold": r.gold,
                                        "teacher_steps": r.teacher.to_dict()["steps"]} for r in rows])
    acc, fmt, tags, structure = get_reward_funcs(["accuracy", "format", "tag_count", "structure"],
                                                 structure={"decomposer": "heuristic", "matcher": "lexical"})
    by_problem = {r.problem: r for r in rows}
    noise_s: list[float] = []
    realistic_s: list[float] = []
    realistic_ok: list[bool] = []
    rng = random.Random(1)

    async def timed_structure(prompts, completions, **kw):
        """In TRL's own async loop: first the reward on realistic completions of the same rows (the
        tiny model writes noise, which never reaches the decomposer), caches cleared; then the real call."""
        quiet = {k: v for k, v in kw.items() if k not in ("log_metric", "log_extra")}
        realistic = [[{"role": "assistant", "content": student_variant(by_problem[p], g % 4, rng)}]
                     for g, p in enumerate(kw["problem"])]
        parse_math.cache_clear()
        math_equal.cache_clear()
        t0 = time.perf_counter()
        got = await structure(prompts, realistic, **quiet)
        realistic_s.append(time.perf_counter() - t0)
        realistic_ok.append(all(g is not None for g in got))
        t0 = time.perf_counter()
        out = await structure(prompts, completions, **kw)
        noise_s.append(time.perf_counter() - t0)
        return out

    timed_structure.__name__ = "structure"
    steps: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            steps.append(time.perf_counter() - self.t0)

    cfg = GRPOConfig(output_dir=str(work / "out"), per_device_train_batch_size=8, num_generations=4,
                     max_completion_length=args.max_completion, max_steps=args.grpo_steps, learning_rate=1e-4,
                     beta=0.0, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False,
                     temperature=0.7, seed=0, disable_tqdm=True)
    trainer = GRPOTrainer(model=str(model_dir), reward_funcs=[acc, fmt, tags, timed_structure], args=cfg,
                          train_dataset=data, callbacks=[StepTimer()])
    trainer.train()
    assert all(realistic_ok), "the realistic completions must all be scored"
    # a step without the extra realistic call we added for the measurement
    own = [st - r for st, r in zip(steps, realistic_s, strict=True)]
    skip = 1 if len(own) > 1 else 0  # the first step pays warm-up
    return {"grpo_step_s": statistics.median(own[skip:]), "steps": own,
            "structure_in_trainer_s": statistics.median(noise_s[skip:]),
            "structure_realistic_s": statistics.median(realistic_s[skip:]), "max_completion_length": args.max_completion}


# -- report ---------------------------------------------------------------------------------------
def table(p1: dict[str, Any]) -> str:
    ref, ours = p1["per_batch"]["reference"], p1["per_batch"]["ours"]

    def mean(xs, k):
        return sum(x[k] for x in xs) / len(xs)

    lines = ["| per batch (mean) | reference port | ours | ratio (reference / ours) |", "|---|---|---|---|"]
    for k, label, fmt in (("requests", "model requests", "{:.1f}"), ("tokens", "generated tokens", "{:.0f}"),
                          ("wall_s", "wall time (s)", "{:.2f}")):
        r, o = mean(ref, k), mean(ours, k)
        lines.append(f"| {label} | {fmt.format(r)} | {fmt.format(o)} | {r / o if o else float('inf'):.2f}x |")
    return "\n".join(lines)


def print_part1(p1: dict[str, Any]) -> None:
    print("\nPart 1: the structure reward per GRPO batch, same batches, same server "
          f"({p1['completions_per_batch']} completions per batch; replies are noise, verdicts and steps from "
          "the lexical/heuristic oracle in both arms)")
    print(table(p1))
    print(f"ours skips identical texts: {p1['skip_identical']}; "
          f"scores identical in both arms: {p1['scores_agree']}; ours, rerun of batch 1: "
          f"{p1['rerun_ours']['requests']} requests, {p1['rerun_ours']['wall_s']:.2f} s; "
          f"judge rounds {p1['scorer']['judge_rounds']}, matcher {p1['judge']}")


def print_part2(p2: dict[str, Any]) -> None:
    share = p2["structure_realistic_s"] / p2["grpo_step_s"]
    p2["share"] = share
    print("\nPart 2: structure reward (heuristic + lexical) vs one tiny GRPO step (GRPOTrainer, 8 completions, "
          f"max_completion_length {p2['max_completion_length']}, CPU)")
    print("| | seconds | share of a step |\n|---|---|---|")
    print(f"| GRPO step (median of steps 2..{len(p2['steps'])}, the four rewards) | {p2['grpo_step_s']:.3f} | 100% |")
    print(f"| structure reward, 8 realistic completions, in TRL's loop, cold caches | {p2['structure_realistic_s']:.4f} "
          f"| {share:.1%} |")
    print(f"| structure reward inside the trainer (noise completions) | {p2['structure_in_trainer_s']:.4f} | "
          f"{p2['structure_in_trainer_s'] / p2['grpo_step_s']:.1%} |")
    print(f"target < 10%: {'met' if share < 0.10 else 'NOT met'}")



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=4, help="prompts per GRPO batch")
    ap.add_argument("--generations", type=int, default=4, help="completions per prompt (the paper: 4)")
    ap.add_argument("--gsrm-cap", type=int, default=256, help="most tokens a GSRM request asks for")
    ap.add_argument("--no-identical-shortcut", action="store_true",
                    help="ours sends identical texts to the judge too (as the reference does)")
    ap.add_argument("--kv-blocks", type=int, default=1024, help="server KV cache, in blocks of 32 tokens")
    ap.add_argument("--grpo-steps", type=int, default=6)
    ap.add_argument("--max-completion", type=int, default=64, help="GRPO max_completion_length (tiny recipe: 64)")
    ap.add_argument("--skip-grpo", action="store_true", help="part 1 only")
    ap.add_argument("--skip-server", action="store_true", help="part 2 only")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("rlkd_bench.llm", "httpx", "transformers", "trl"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    out: dict[str, Any] = {}
    if not args.skip_server:
        print_part1(out.setdefault("part1", run_part1(args)))
    if not args.skip_grpo:
        print_part2(out.setdefault("part2", run_part2(args)))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
