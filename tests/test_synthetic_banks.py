"""The synthetic generator's phrase banks and the boundary baselines the benchmark compares with.

The "r1" bank is the wording the heuristic decomposer was developed with (in-sample); the
"unseen" bank says the same steps in other words and was written after the heuristic was frozen.
"""

from __future__ import annotations

import pytest

from rlkd_bench.answers import verify
from rlkd_bench.data.synthetic import (
    BANKS,
    BASELINES,
    boundary_f1,
    generate,
    make_trace,
    marker_boundaries,
    paragraph_boundaries,
)
from rlkd_bench.decompose.heuristic import OPEN, classify, units
from rlkd_bench.structure import validate

R1 = generate(60, seed=31)
UNSEEN = generate(60, seed=31, bank="unseen")


def test_banks_share_problems_and_structure_not_words():
    assert set(BANKS) == {"r1", "unseen"}
    for a, b in zip(R1, UNSEEN, strict=True):
        assert (a.problem, a.gold, a.truth, a.equations) == (b.problem, b.gold, b.truth, b.equations)
        assert a.reasoning != b.reasoning and a.id != b.id
        assert len(b.boundaries) == len(b.truth.steps)
        assert validate(b.truth) == [] and verify(b.gold, b.answer)
        assert b.gold in b.reasoning.rsplit("\n", 1)[-1]  # the closing line states the answer
    assert generate(5, seed=31, bank="unseen") == UNSEEN[:5]  # seeded per trace, like the r1 bank
    with pytest.raises(ValueError, match="unknown phrase bank"):
        make_trace(0, 0, bank="nope")


def test_unseen_bank_avoids_the_heuristics_openers():
    """The point of the bank: no true step opens with words the heuristic reads as a step opener.
    If this fails, the heuristic has learned this bank's words: it is no longer unseen, so write a
    new bank rather than loosening this test."""
    opened = {"r1": 0, "unseen": 0}
    for bank, traces in (("r1", R1), ("unseen", UNSEEN)):
        for t in traces:
            starts = {u.start: u.text for u in units(t.reasoning)}
            opened[bank] += sum(classify(starts[b])[0] == OPEN for b in t.boundaries if b in starts)
    assert opened["unseen"] == 0
    assert opened["r1"] > 100  # and the r1 bank is the one it was built around


def test_boundaries_point_at_step_openers():
    for t in UNSEEN:
        for b in t.boundaries:
            assert b == 0 or t.reasoning[b - 1] in " \n", t.reasoning[b - 5 : b + 20]


def test_baselines():
    text = ("Okay, the problem restated.\n\nFirst, 2 + 3 = 5. Then I need to double it.\n\n"
            "Wait, check: 5 + 5 = 10.\n\nSo 10.")
    paras = paragraph_boundaries(text)
    assert [text[i : i + 5] for i in paras] == ["Okay,", "First", "Wait,", "So 10"]
    assert paragraph_boundaries(text, skip_first=True) == paras[1:]
    assert [text[i : i + 5] for i in marker_boundaries(text)] == ["First", "Then "]
    assert marker_boundaries("Nothing to see. Really nothing.") == []
    assert set(BASELINES) == {"paragraphs", "paragraphs - restatement", "markers only"}


def test_the_heuristic_is_measured_out_of_sample_too():
    """The numbers the benchmark reports, on a small sample: in-sample (r1) near perfect, on the
    unseen wording far lower. Measured with bench/bench_structure.py on 1000 traces (seed 0,
    tolerance 40): heuristic F1 0.996 on r1 and 0.477 on unseen; one step per paragraph 0.600 and
    0.601; markers only 0.601 and 0.038. A regression guard for the generator (the unseen bank must
    stay hard for a marker reader), not a target for the heuristic."""
    from rlkd_bench.decompose.heuristic import segment

    def mean_f1(traces, predict):
        return sum(boundary_f1(predict(t), t.boundaries)[2] for t in traces) / len(traces)

    heur = {b: mean_f1(ts, lambda t: [a for a, _ in segment(t.reasoning, t.problem)])
            for b, ts in (("r1", R1), ("unseen", UNSEEN))}
    markers_unseen = mean_f1(UNSEEN, lambda t: marker_boundaries(t.reasoning))
    assert heur["r1"] > 0.95
    assert heur["unseen"] < heur["r1"] - 0.3
    assert markers_unseen < 0.2  # the unseen bank opens no step with a common marker
