"""Benchmark: the OpenAI-compatible engine against one `transformers serve --continuous-batching`.

One run, side by side against the same server with the tiny offline model:
- requests/s at concurrency 1 (the reference code's way: one request after another), 8 and 32,
  as ratios against concurrency 1; straight to the server (compute-bound: the tiny model on
  CPU), and again with ``--latency-ms`` added per request by the proxy (latency-bound, as a
  hosted API is);
- the rerun's request count, counted at the server by the fault proxy (must be 0);
- client overhead per request: our engine vs bare ``AsyncOpenAI`` calls (same requests, same
  concurrency, no cache), and the cache-hit path per request.

    .venv/bin/python bench/bench_llm.py [--n 64] [--max-tokens 16] [--rounds 5] [--latency-ms 200] [--json out.json]

Numbers depend on the machine and its load: the server is warmed up first (its first requests
of each shape are slow), measurements are interleaved, and each figure is the best of ``--rounds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # servers.py and faultproxy.py live with the tests

from faultproxy import FaultProxy  # noqa: E402
from servers import TinyServer  # noqa: E402

from rlkd_bench.llm import EngineOptions, make_engine  # noqa: E402
from rlkd_bench.llm.base import ChatRequest  # noqa: E402
from rlkd_bench.tiny import build_tiny_model  # noqa: E402


def make_requests(n: int, max_tokens: int, tag: str) -> list[ChatRequest]:
    return [ChatRequest(messages=({"role": "user", "content": f"{tag}: please think about problem {i}"},),
                        params={"max_tokens": max_tokens, "temperature": 0}, custom_id=str(i)) for i in range(n)]


def run_engine(base_url: str, model: str, reqs: list[ChatRequest], concurrency: int, cache_dir: str | None) -> float:
    opts = EngineOptions(base_url=base_url, concurrency=concurrency, progress=False,
                         use_cache=cache_dir is not None, cache_dir=cache_dir)
    eng = make_engine(f"openai:{model}", opts)
    t0 = time.perf_counter()
    out = eng.generate(reqs)
    dt = time.perf_counter() - t0
    bad = [c.error for c in out if not c.ok]
    if bad:
        raise SystemExit(f"{len(bad)} requests failed, e.g. {bad[0]}")
    return dt


def run_raw(base_url: str, model: str, reqs: list[ChatRequest], concurrency: int) -> float:
    """The same requests with bare AsyncOpenAI calls and a semaphore: the floor for client cost."""
    from openai import AsyncOpenAI

    async def main() -> float:
        client = AsyncOpenAI(api_key="local", base_url=base_url, max_retries=0)
        sem = asyncio.Semaphore(concurrency)

        async def one(r: ChatRequest) -> None:
            async with sem:
                await client.chat.completions.create(model=model, messages=[dict(m) for m in r.messages], **r.params)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(r) for r in reqs))
        dt = time.perf_counter() - t0
        await client.close()
        return dt

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64, help="requests per measurement")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5, help="repeat each measurement; report the best")
    ap.add_argument("--latency-ms", type=float, default=200.0,
                    help="also measure with this much latency added per request by the proxy (0: skip)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    model_dir = build_tiny_model(work / "tiny")
    server = TinyServer(model_dir, continuous_batching=True, cb_blocks=512).start()
    proxy = FaultProxy(server.port).start()
    model = server.model_id
    res: dict = {"n": args.n, "max_tokens": args.max_tokens, "rounds": args.rounds,
                 "server": "transformers serve --continuous-batching (tiny Qwen2, CPU)"}
    try:
        # 0. warm-up: the server's first requests of each shape are slow; pay that outside timing
        for c in (8, 1):
            run_engine(server.base_url, model, make_requests(args.n, args.max_tokens, f"warm{c}"), c, None)

        # 1. throughput by concurrency (no cache, straight to the server), rounds interleaved
        times: dict[int, list[float]] = {1: [], 8: [], 32: []}
        for r in range(args.rounds):
            for c in times:
                reqs = make_requests(args.n, args.max_tokens, f"c{c}r{r}")
                times[c].append(run_engine(server.base_url, model, reqs, c, None))
        rps = {c: args.n / min(ts) for c, ts in times.items()}
        res["seconds_per_round"] = {str(c): [round(t, 3) for t in ts] for c, ts in times.items()}
        res["requests_per_s"] = {str(c): round(v, 2) for c, v in rps.items()}
        res["speedup_vs_concurrency_1"] = {str(c): round(v / rps[1], 2) for c, v in rps.items()}

        # 2. rerun through the counting proxy: first run pays, the rerun must make 0 requests
        cache_dir = str(work / "cache")
        reqs = make_requests(args.n, args.max_tokens, "rerun")
        proxy.reset()
        run_engine(proxy.url, model, reqs, 8, cache_dir)
        first = proxy.count
        proxy.reset()
        t_hit = run_engine(proxy.url, model, reqs, 8, cache_dir)
        res["first_run_requests_at_server"] = first
        res["rerun_requests_at_server"] = proxy.count
        res["cache_hit_ms_per_request"] = round(1000 * t_hit / args.n, 3)

        # 2b. a remote API is latency-bound, not compute-bound: the same through the proxy with
        # --latency-ms added to every request (as a hosted endpoint's network + queueing would)
        if args.latency_ms > 0:
            proxy.reset()
            proxy.delay_s = args.latency_ms / 1000
            lat: dict[int, list[float]] = {1: [], 8: [], 32: []}
            for r in range(min(2, args.rounds)):
                for c in lat:
                    reqs = make_requests(args.n, args.max_tokens, f"lat{c}r{r}")
                    lat[c].append(run_engine(proxy.url, model, reqs, c, None))
            lrps = {c: args.n / min(ts) for c, ts in lat.items()}
            res["latency_ms_added"] = args.latency_ms
            res["requests_per_s_with_latency"] = {str(c): round(v, 2) for c, v in lrps.items()}
            res["speedup_with_latency"] = {str(c): round(v / lrps[1], 2) for c, v in lrps.items()}
            proxy.reset()

        # 3. client overhead: ours vs bare AsyncOpenAI, same requests, interleaved rounds
        for c in (1, 8):
            ours, raw = [], []
            for r in range(args.rounds):
                # distinct prompts of equal length (the server may reuse a cached prefix), order alternated
                raw_reqs = make_requests(args.n, args.max_tokens, f"bare{c}{r}")
                our_reqs = make_requests(args.n, args.max_tokens, f"ours{c}{r}")
                steps = [lambda: raw.append(run_raw(server.base_url, model, raw_reqs, c)),  # noqa: B023
                         lambda: ours.append(run_engine(server.base_url, model, our_reqs, c, None))]  # noqa: B023
                for step in (steps if r % 2 == 0 else steps[::-1]):
                    step()
            res[f"overhead_ms_per_request_c{c}"] = round(1000 * (min(ours) - min(raw)) / args.n, 3)
            res[f"overhead_seconds_per_round_c{c}"] = {"engine": [round(t, 3) for t in ours],
                                                       "bare": [round(t, 3) for t in raw]}
            res[f"raw_openai_requests_per_s_c{c}"] = round(args.n / min(raw), 2)
            res[f"engine_requests_per_s_c{c}"] = round(args.n / min(ours), 2)
    finally:
        proxy.stop()
        server.stop()

    print(table(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return res


def table(res: dict) -> str:
    rows = ["| measure | value |", "|---|---|"]
    for c, v in res["requests_per_s"].items():
        rows.append(f"| requests/s at concurrency {c} | {v} ({res['speedup_vs_concurrency_1'][c]}x vs 1) |")
    for c, v in res.get("requests_per_s_with_latency", {}).items():
        rows.append(f"| requests/s at concurrency {c}, +{res['latency_ms_added']:g} ms latency per request | "
                    f"{v} ({res['speedup_with_latency'][c]}x vs 1) |")
    rows.append(f"| requests at the server, first run / rerun | {res['first_run_requests_at_server']} / "
                f"{res['rerun_requests_at_server']} |")
    rows.append(f"| cache-hit path per request | {res['cache_hit_ms_per_request']} ms |")
    for c in (1, 8):
        rows.append(f"| client overhead vs bare AsyncOpenAI, concurrency {c} | "
                    f"{res[f'overhead_ms_per_request_c{c}']} ms/request (engine {res[f'engine_requests_per_s_c{c}']} "
                    f"req/s, bare {res[f'raw_openai_requests_per_s_c{c}']} req/s) |")
    return (f"n={res['n']} requests, max_tokens={res['max_tokens']}, best of {res['rounds']}; "
            f"{res['server']}\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
