"""lm-eval task benchmark: what the structure metrics cost per sample on the offline path
(heuristic decomposer + lexical matcher), and where the wall time of a tiny ``rlkd_diversity`` run
goes (generation vs scoring).

    .venv/bin/python bench/bench_tasks.py [--k 8] [--limit 4] [--max-gen-toks 64] [--repeat 3]

Part 1 replays the scoring functions the task YAMLs call (``rlkd_bench/tasks/utils.py``: the
filter that scores a whole task in one batch, then process_results per doc) on the bundled eval set with realistic completions: each problem's own teacher reasoning in ``<think>``
plus a boxed answer, and for diversity k samples mixing the problem's trace with other problems'
traces (so the pairwise alignments do real work). It reports CPU milliseconds per scored sample, best
of ``--repeat`` runs, next to the accuracy check alone (math-verify), as a ratio.

Part 2 runs ``lm_eval.simple_evaluate`` in process on the tiny offline model (rlkd_bench.tiny),
timing the model's ``generate_until`` calls; "rest" is the remainder of ``simple_evaluate`` (building
contexts, the scoring filter, process_results, aggregation), and the scoring alone is timed by
replaying the same filter and process_results on the logged samples. The tiny model writes noise (no ``</think>``), so its scoring is
the cheap path; part 1 is the representative per-sample cost.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def completion(row: dict, gold: str) -> str:
    return f"<think>\n{row['teacher_reasoning']}\n</think>\n<answer>So the answer is \\boxed{{{gold}}}.</answer>"


def best_of(repeat: int, fn) -> float:
    """CPU seconds (all threads of this process), best of ``repeat``: steadier than wall time on a
    shared machine, and the scoring is CPU-bound on the offline path."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def scoring_overhead(k: int, repeat: int) -> list[tuple[str, float, str]]:
    """As lm-eval runs it: the task's filter scores every completion of the task in one batch, then
    process_results reads each doc's record."""
    from rlkd_bench.tasks import evaldata, metrics, utils

    rows = evaldata.read_jsonl_rows(evaldata.bundled_eval_path())
    docs = {d["id"]: d for d in evaldata.structure_docs({})}
    order = [docs[r["id"]] for r in rows]
    single = [[completion(r, r["gold"])] for r in rows]
    n = len(rows)

    def structure():
        for doc, rec in zip(order, utils.score_against_teacher(single, order), strict=True):
            utils.process_structure(doc, [rec])

    multi = []
    for i, r in enumerate(rows):  # own trace twice, then other problems' traces: mixed structures
        picks = [r, r] + [rows[(i + j) % n] for j in range(1, k - 1)]
        multi.append([completion(p, r["gold"]) for p in picks[:k]])

    def diversity():
        for doc, rec in zip(order, utils.score_samples(multi, order), strict=True):
            utils.process_diversity(doc, [rec])

    def accuracy_only():
        for doc, comps in zip(order, single, strict=True):
            metrics.math_correct(doc["gold"], comps[0])

    structure()  # warm up: scorer built, math-verify imported
    t_acc = best_of(repeat, accuracy_only) / n
    t_struct = best_of(repeat, structure) / n
    t_div = best_of(repeat, diversity) / (n * k)
    return [
        ("accuracy only (math-verify)", t_acc * 1e3, "1.0x"),
        ("rlkd_structure, all metrics", t_struct * 1e3, f"{t_struct / t_acc:.1f}x"),
        (f"rlkd_diversity, k={k}, per sample", t_div * 1e3, f"{t_div / t_acc:.1f}x"),
    ]


def tiny_run(k: int, limit: int, max_gen_toks: int) -> dict[str, float]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from rlkd_bench.evaluate import load_tasks, structure_metadata
    from rlkd_bench.tasks import utils
    from rlkd_bench.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(os.path.join(tmp, "tiny"))
        t0 = time.perf_counter()
        lm = HFLM(pretrained=str(model_dir), device="cpu", batch_size=k * limit)
        meta = structure_metadata(None, None, None, None)
        tm, top, _ = load_tasks(["rlkd_diversity"], meta, repeats=k)
        t_setup = time.perf_counter() - t0
        gen = {"s": 0.0, "cpu": 0.0, "n": 0}
        generate = lm.generate_until

        def timed(requests, *a, **kw):
            t, c = time.perf_counter(), time.process_time()
            out = generate(requests, *a, **kw)
            gen["s"] += time.perf_counter() - t
            gen["cpu"] += time.process_time() - c
            gen["n"] += len(requests)
            return out

        lm.generate_until = timed
        t1 = time.perf_counter()
        res = lm_eval.simple_evaluate(model=lm, tasks=top, task_manager=tm, limit=limit, log_samples=True,
                                      apply_chat_template=True, gen_kwargs={"max_gen_toks": max_gen_toks},
                                      bootstrap_iters=0)
        t_eval = time.perf_counter() - t1
        logged = res["samples"]["rlkd_diversity"]
        t2, c2 = time.perf_counter(), time.process_time()
        docs = [s["doc"] for s in logged]
        for doc, rec in zip(docs, utils.score_samples([s["resps"][0] for s in logged], docs), strict=True):
            utils.process_diversity(doc, [rec])
        t_score, c_score = time.perf_counter() - t2, time.process_time() - c2
    return {"setup (model + tasks)": t_setup, "evaluate total": t_eval, "generation": gen["s"],
            "  of which scoring (replayed)": t_score, "rest (contexts, scoring filter, metrics)": t_eval - gen["s"],
            "completions": gen["n"], "problems": len(logged), "generation cpu": gen["cpu"], "scoring cpu": c_score}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=8, help="samples per problem (rlkd_diversity)")
    ap.add_argument("--limit", type=int, default=4, help="problems in the tiny run")
    ap.add_argument("--max-gen-toks", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    log("scoring the bundled eval set ...")
    rows = scoring_overhead(args.k, args.repeat)
    print("\nstructure metrics, offline path (heuristic + lexical), CPU per scored sample, best of", args.repeat)
    print(f"{'':40s} {'ms/sample':>10s} {'vs accuracy':>12s}")
    for name, ms, ratio in rows:
        print(f"{name:40s} {ms:10.2f} {ratio:>12s}")

    log("tiny rlkd_diversity run ...")
    t = tiny_run(args.k, args.limit, args.max_gen_toks)
    print(f"\ntiny rlkd_diversity run: {t['problems']} problems x k={args.k} = {t['completions']} completions, "
          f"up to {args.max_gen_toks} tokens each, CPU")
    total = t["evaluate total"]
    for key in ("setup (model + tasks)", "evaluate total", "generation", "rest (contexts, scoring filter, metrics)",
                "  of which scoring (replayed)"):
        share = f"{t[key] / total:6.1%}" if key not in ("setup (model + tasks)", "evaluate total") else ""
        print(f"{key:40s} {t[key]:8.2f} s {share}")
    print(f"{'CPU seconds: generation / scoring':40s} {t['generation cpu']:8.2f} s / {t['scoring cpu']:.2f} s "
          f"(scoring {t['scoring cpu'] / max(t['generation cpu'], 1e-9):.1%} of generation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
