"""The benchmark set (rlkd_bench/data/benchmark_steps.jsonl): 40 R1-style traces with hand-written
decompositions, written to score decomposers (``rlkd-bench score-decomposer``, the ``rlkd_decompose``
lm-eval task), never to tune one.

How it was made, in this order:
1. 40 new problems (16 math, 8 code, 8 science, 8 puzzle) were written for this set, none taken
   from another set, repository or dataset; each trace was written by hand in R1's first-person
   thinking style (hesitations, a check, now and then a detour or a second route) in the paper's
   format: the restatement, then the work, then a closing line, with the answer boxed in ``answer``;
2. each trace was decomposed by hand with the conventions of the in-sample and held-out sets
   (tests/test_reference_steps.py): a step is forward work that settles one question; checks that
   only re-derive a result stay in their step; detours and the restatement are left out; a step
   starts where it is announced (or where its work starts), given as a verbatim quote; the
   meta-reasoning says why the sub-problem comes next, never what it comes to;
3. the file was pinned by hash below BEFORE any decomposer was scored on it; only then were the
   heuristic and the baselines scored (README, "Scoring a decomposer"). No rule of any decomposer was
   changed after seeing those scores, and none may be tuned on these traces.

So this file holds no score floors (a floor is a target, and a target is what tuning aims at). Change
the file only to fix a mistake in the annotation, never to suit a decomposer.
"""

from __future__ import annotations

import hashlib
from importlib import resources

import pytest
from test_reference_steps import (  # tests/ is on sys.path (rootdir conftest)
    assert_boundary_quotes,
    assert_final_answer_verifies,
    assert_reference_format,
    bundled_jsonl,
)

from rlkd_bench.structure import Decomposition, render_steps, validate

BENCHMARK_SHA256 = "3dd24ab98d63bb96c608b5829e761ef83e64b3b70b4904a3382d35805d24cf15"
TRACE_FIELDS = {"id", "domain", "problem", "reasoning", "answer", "gold", "source", "verified"}
DOMAINS = {"math": 16, "code": 8, "science": 8, "puzzle": 8}


BENCHMARK = bundled_jsonl("benchmark_steps.jsonl")


def test_file_is_frozen():
    path = resources.files("rlkd_bench") / "data" / "benchmark_steps.jsonl"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == BENCHMARK_SHA256, (
        "benchmark_steps.jsonl changed: it is the benchmark's truth; update the hash only for a reviewed "
        "correction of the annotation, never to fit a decomposer")


def test_rows_are_well_formed_new_and_spread_over_domains():
    assert len(BENCHMARK) >= 40
    ids = [row["id"] for row in BENCHMARK]
    assert len(set(ids)) == len(ids) and all(i.startswith("bench-") for i in ids)
    others = bundled_jsonl("traces.jsonl") + bundled_jsonl("heldout_steps.jsonl")
    other_ids = {r["id"] for r in others} | {r["id"] for r in bundled_jsonl("reference_steps.jsonl")}
    assert not set(ids) & other_ids
    seen_problems = {r["problem"] for r in others}
    seen_reasoning = {r["reasoning"] for r in others}
    domains: dict[str, int] = {}
    for row in BENCHMARK:
        assert set(row) == TRACE_FIELDS | {"steps", "final_answer", "boundaries"}, row["id"]
        assert row["problem"] not in seen_problems and row["reasoning"] not in seen_reasoning, row["id"]
        assert row["source"] == "rlkd-bench/benchmark" and row["verified"] is True
        assert row["id"].startswith(f"bench-{row['domain']}-"), row["id"]
        assert len(row["boundaries"]) == len(row["steps"]) >= 2, row["id"]
        domains[row["domain"]] = domains.get(row["domain"], 0) + 1
    assert domains == DOMAINS
    assert len({r["problem"] for r in BENCHMARK}) == len(BENCHMARK)


@pytest.mark.parametrize("row", BENCHMARK, ids=lambda r: r["id"])
def test_steps_follow_the_format(row):
    assert_reference_format(row)  # through structure.py: validate, parse(render(d)) == d, brief fields
    assert validate(render_steps(Decomposition.from_dict(row))) == []  # the text form parses as valid steps


@pytest.mark.parametrize("row", BENCHMARK, ids=lambda r: r["id"])
def test_boundaries_are_unique_quotes_in_order(row):
    offsets = assert_boundary_quotes(row["reasoning"], row["boundaries"])
    assert offsets[0] > 0  # the opening restatement is never a step


@pytest.mark.parametrize("row", BENCHMARK, ids=lambda r: r["id"])
def test_final_answer_matches_gold(row):
    assert_final_answer_verifies(row)
