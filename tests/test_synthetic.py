"""The synthetic generator: seeded and pure, arithmetic right, true structure well formed; and the
boundary metric it is scored with."""

from __future__ import annotations

import ast
import itertools
import re
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlkd_bench.answers import last_boxed
from rlkd_bench.data.synthetic import (
    DEFAULT_TOLERANCE,
    SOURCE,
    TEMPLATES,
    boundary_f1,
    fmt,
    generate,
    make_trace,
    paragraph_boundaries,
)
from rlkd_bench.structure import parse_steps, render_steps, validate

TRACES = generate(200, seed=11)


# ---------------------------------------------------------------------------------------------
# determinism


def test_same_seed_same_traces_and_prefix_stable():
    a, b = generate(30, seed=4), generate(30, seed=4)
    assert a == b
    assert [t.to_trace_row() for t in a] == [t.to_trace_row() for t in b]
    assert generate(10, seed=4) == a[:10]  # trace i depends only on (seed, i)


def test_other_seed_other_traces():
    a, b = generate(30, seed=0), generate(30, seed=1)
    assert sum(x.reasoning != y.reasoning for x, y in zip(a, b, strict=True)) >= 28
    assert len({t.problem for t in a} & {t.problem for t in b}) <= 2


def test_no_global_random_state():
    import random

    random.seed(123)
    first = generate(5, seed=9)
    random.seed(456)
    random.random()
    assert generate(5, seed=9) == first


def test_bad_n():
    assert generate(0) == []
    with pytest.raises(ValueError, match="n must be"):
        generate(-1)


# ---------------------------------------------------------------------------------------------
# rows and truth


def test_trace_rows():
    for i, t in enumerate(TRACES[:20]):
        row = t.to_trace_row()
        assert set(row) == {"id", "domain", "problem", "reasoning", "answer", "gold", "source", "verified"}
        assert row["id"] == f"synth-11-{i}"
        assert row["domain"] == "math" and row["source"] == SOURCE and row["verified"] is True
        assert last_boxed(row["answer"]) == row["gold"]
        assert all(isinstance(row[k], str) and row[k] for k in ("problem", "reasoning", "answer", "gold"))


def test_templates_and_step_counts():
    assert {t.template for t in TRACES} == set(TEMPLATES)
    counts = {len(t.truth.steps) for t in TRACES}
    assert min(counts) >= 3 and max(counts) <= 7
    assert len(counts) >= 4  # not all the same length


def test_truth_is_valid_and_round_trips():
    for t in TRACES:
        assert validate(t.truth) == [], t.id
        assert parse_steps(render_steps(t.truth)) == t.truth
        assert t.truth.final_answer == t.gold
        for step in t.truth.steps:
            assert step.subproblem.endswith("?")
            # the meta-reasoning says why, not what comes out
            own = re.compile(rf"(?<![\d.$]){re.escape(step.answer)}(?![\d])")
            assert not own.search(step.meta) or step.answer in t.problem, (t.id, step)


def test_boundaries_are_sentence_starts_one_per_step():
    for t in TRACES:
        text, bs = t.reasoning, t.boundaries
        assert len(bs) == len(t.truth.steps)
        assert bs == sorted(set(bs))
        assert bs[0] > 0 and bs[-1] < len(text)
        for b in bs:
            assert text[b].isupper() or text[b].isdigit(), (t.id, text[b : b + 30])
            assert text[b - 1] in " \n"
            before = text[:b].rstrip()
            assert text[b - 1] == "\n" or before[-1] in ".?!", (t.id, before[-30:])


def test_each_step_shows_its_equation_before_the_next_step():
    for t in TRACES:
        ends = t.boundaries[1:] + [len(t.reasoning)]
        for b, end, eq in zip(t.boundaries, ends, t.equations, strict=True):
            # the step's equation, or its words form ("4 times 3 is 12"), inside the step's span
            words = eq.replace(" × ", " times ").replace(" + ", " plus ").replace(" - ", " minus ")
            words = words.replace(" ÷ ", " divided by ").replace(" = ", " is ")
            span = t.reasoning[b:end]
            assert eq in span or words in span, (t.id, eq, span)


# ---------------------------------------------------------------------------------------------
# arithmetic


def _eval(expr: str) -> Fraction:
    """Exact value of an arithmetic expression in the trace's notation."""
    tree = ast.parse(expr.replace("×", "*").replace("÷", "/").replace("−", "-"), mode="eval")

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            ops = {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}
            return ops[type(node.op)] if type(node.op) in ops else a / b
        raise AssertionError(f"not arithmetic: {expr!r}")

    return ev(tree)


# "12 + 8 + 12 + 8 = 40", "0.25 × 80 = 20"; not "2x + 4 = 28" (the lookbehind keeps '4' of '2x + 4' out)
_EQ_RE = re.compile(r"(?<![\w.+\-×÷*/] )(?<![\w.])(\d[\d.]*(?:\s*[+\-×÷]\s*\d[\d.]*)+)\s*=\s*(\d[\d.]*\d|\d)")


def test_every_equation_in_every_trace_is_right():
    checked = 0
    for t in TRACES:
        for text in (t.reasoning, t.answer):
            for m in _EQ_RE.finditer(text):
                assert _eval(m.group(1)) == Fraction(m.group(2)), (t.id, m.group(0))
                checked += 1
    assert checked > 5 * len(TRACES)


_TIME = {"weeks": 7, "days": 24, "hours": 60, "minutes": 1}


def _solve(template: str, p: dict) -> Fraction:
    """Each template's answer from its parameters, computed here without the step plans."""
    f = Fraction
    if template == "shopping":
        return p["bill"] - sum(q * f(c) for q, c in zip(p["qty"], p["price"], strict=True))
    if template == "conversion":
        units = list(_TIME)
        scale = 1
        for u in units[units.index(p["start"]) : units.index(p["end"])]:
            scale *= _TIME[u]
        return f(p["t"] * scale * p["rate"], p["factor"])
    if template == "ages":
        a = p["base"]
        b = a * p["mult"]
        c = b - p["younger"]
        ages = [a, b, c] + ([c + p["older"]] if p["older"] is not None else [])
        return f(sum(ages) + len(ages) * p["years"])
    if template == "travel":
        return f(p["s1"] * p["t1"] + p["s2"] * p["t2"], p["t1"] + p["t2"])
    if template == "percent":
        sale = p["price"] * (1 - f(p["off"], 100)) - p["coupon"]
        return sale * (1 + f(p["tax"], 100))
    if template == "equation" and p["kind"] == "linear":
        x = f(p["c"] - p["b"], p["a"] - p["k"])
        assert p["a"] * x + p["b"] == p["k"] * x + p["c"]
        return x * x if p["square"] else x
    if template == "equation":
        big, small = f(p["sum"] + p["diff"], 2), f(p["sum"] - p["diff"], 2)
        return big * small
    if template == "garden":
        cost = f(p["length"] * p["width"], p["cover"]) * p["bag_price"]
        if p["fence_price"] is not None:
            cost += 2 * (p["length"] + p["width"]) * p["fence_price"]
        return cost
    if template == "savings":
        weekly = f(p["wage"] * p["hours"] * p["days"] * p["pct"], 100)
        return (f(p["goal"]) - p["have"]) / weekly
    raise AssertionError(template)


def test_gold_matches_the_arithmetic():
    for t in TRACES:
        assert Fraction(t.gold) == _solve(t.template, t.params), t.id
        assert t.gold == fmt(Fraction(t.gold))
        # the last step's computation is the answer
        assert _eval(t.equations[-1].split("=")[0]) == Fraction(t.gold)


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_each_template_directly(template):
    for i in range(15):
        t = make_trace(5, i, template=template)
        assert t.template == template
        assert Fraction(t.gold) == _solve(template, t.params)


# ---------------------------------------------------------------------------------------------
# the metric


def test_boundary_f1_cases():
    assert boundary_f1([10, 100], [10, 100], 0) == (1.0, 1.0, 1.0)
    assert boundary_f1([50], [10], 40) == (1.0, 1.0, 1.0)  # exactly at the tolerance
    assert boundary_f1([51], [10], 40) == (0.0, 0.0, 0.0)
    p, r, f = boundary_f1([9, 11], [10], 5)  # one true boundary matches one prediction only
    assert (p, r) == (0.5, 1.0) and f == pytest.approx(2 / 3)
    assert boundary_f1([], [], 10) == (1.0, 1.0, 1.0)
    assert boundary_f1([], [5], 10) == (1.0, 0.0, 0.0)
    assert boundary_f1([5], [], 10) == (0.0, 1.0, 0.0)
    assert boundary_f1([300, 0, 100], [100, 0, 300], 0) == (1.0, 1.0, 1.0)  # order does not matter
    assert DEFAULT_TOLERANCE == 40


def _max_matching(pred: list[int], true: list[int], tol: int) -> int:
    """Brute force: the most pairs within ``tol`` that use each boundary once."""
    best = 0
    for k in range(min(len(pred), len(true)), 0, -1):
        for ps in itertools.combinations(pred, k):
            for ts in itertools.permutations(true, k):
                if all(abs(a - b) <= tol for a, b in zip(ps, ts, strict=True)):
                    return k
    return best


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 60), max_size=5),
    st.lists(st.integers(0, 60), max_size=5),
    st.integers(0, 15),
)
def test_greedy_matching_is_maximum(pred, true, tol):
    p, r, _ = boundary_f1(pred, true, tol)
    matched = round(p * len(pred)) if pred else round(r * len(true)) if true else 0
    assert matched == _max_matching(pred, true, tol)


def test_paragraph_baseline():
    text = "Okay, so.\n\nFirst, a = 1.\nSo a.\n\n\n  Then b = 2."
    assert paragraph_boundaries(text) == [0, 11, text.index("Then")]
    assert paragraph_boundaries("") == []
