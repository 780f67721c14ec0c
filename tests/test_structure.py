"""The step format: every tag variant, canonical round trip, validation messages, <think> split."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rlkd_bench.structure import (
    Decomposition,
    Step,
    answer_tag,
    contains_tag,
    parse_steps,
    render_steps,
    split_think,
    validate,
)

EXPECTED = Decomposition(
    steps=(Step("Need the rate first", "What is the rate?", "5 km/h"),
           Step("Then the time", "How long does 20 km take?", "4 h")),
    final_answer="4 hours",
)


@pytest.mark.parametrize(
    "text",
    [
        # canonical
        "[Meta-reasoning 1]: Need the rate first\n[Sub-problem 1]: What is the rate?\n[Answer 1]: 5 km/h\n"
        "[Meta-reasoning 2]: Then the time\n[Sub-problem 2]: How long does 20 km take?\n[Answer 2]: 4 h\n"
        "So the final answer is: 4 hours",
        # the paper's training-data typo, trailing '-' after the meta-reasoning, no colons
        "[Meat-reasoning 1] Need the rate first -\n[Sub-problem 1] What is the rate?\n[Answer 1] 5 km/h\n"
        "[Meat-reasoning 2] Then the time -\n[Sub-problem 2] How long does 20 km take?\n[Answer 2] 4 h\n"
        "So the final answer is: 4 hours",
        # the reference reward code's tags, unnumbered, all on one line
        "[sub-think] Need the rate first [Query] What is the rate? [Answer] 5 km/h "
        "[sub-think] Then the time [Query] How long does 20 km take? [Answer] 4 h\n"
        "So the final answer is: 4 hours",
        # markdown bold around tags and fields
        "**[Meta-reasoning 1]:** Need the rate first\n**[Sub-problem 1]:** What is the rate?\n"
        "**[Answer 1]:** **5 km/h**\n\n**[Meta-reasoning 2]**: Then the time\n**[Sub-problem 2]**: "
        "How long does 20 km take?\n**[Answer 2]**: 4 h\n\n**So the final answer is:** 4 hours",
        # bare tags at line starts, case, spacing, bullets, "The final answer is"
        "- **Meta-reasoning 1:** Need the rate first\n- **Sub-problem 1:** What is the rate?\n"
        "- **Answer 1:** 5 km/h\nmeta reasoning 2: Then the time\nSUB-PROBLEM 2: How long does 20 km take?\n"
        "answer 2: 4 h\nThe final answer is: 4 hours",
        # preamble before the first tag is ignored; sub-question/sub-answer synonyms
        "Here is the decomposition.\n[Meta_reasoning 1]: Need the rate first\n[Sub-question 1]: What is the "
        "rate?\n[Sub-answer 1]: 5 km/h\n[Meta-reasoning 2]: Then the time\n[Sub-problem 2]: How long does "
        "20 km take?\n[Answer 2]: 4 h\nSo, the final answer is: 4 hours",
    ],
    ids=["canonical", "meat-typo", "subthink-query", "bold", "bare", "preamble-synonyms"],
)
def test_parse_variants(text: str) -> None:
    d = parse_steps(text)
    assert d == EXPECTED
    assert validate(d) == []


def test_trailing_dash_glued_to_the_meta_is_stripped() -> None:
    """The paper's annotations glue the closing '-' to the meta-reasoning's last mark."""
    text = ("[Meat-reasoning 1] The chance of rain comes from a probability lookup.-\n"
            "[Sub-problem 1] What is P(rain)?\n[Answer 1] 0.3\n"
            "[Meat-reasoning 2] Then the complement is needed?-\n[Sub-problem 2] What is P(no rain)?\n"
            "[Answer 2] 0.7\nSo the final answer is: 0.7")
    d = parse_steps(text)
    assert [s.meta for s in d.steps] == ["The chance of rain comes from a probability lookup.",
                                         "Then the complement is needed?"]
    assert validate(d) == []


@pytest.mark.parametrize(
    ("field", "kept"),
    [
        ("-3", "-3"),  # a negative number
        ("x-", "x-"),  # a dash glued to a word
        ("i--", "i--"),  # C's decrement
        ("3-", "3-"),
        ("x - y", "x - y"),  # a dash inside the field
        ("lookup.-", "lookup."),  # the paper's glued form
        ("lookup. -", "lookup."),
        ("lookup -", "lookup"),
        ("done;--", "done;"),
        ("-", ""),
    ],
)
def test_trailing_dash_rule(field: str, kept: str) -> None:
    d = parse_steps(f"[Meta-reasoning 1]: m\n[Sub-problem 1]: q?\n[Answer 1]: {field}\n"
                    "So the final answer is: 1")
    assert d.steps[0].answer == kept


def test_render_is_canonical() -> None:
    text = render_steps(EXPECTED)
    assert text.splitlines()[0] == "[Meta-reasoning 1]: Need the rate first"
    assert "[Sub-problem 2]: How long does 20 km take?" in text
    assert text.endswith("So the final answer is: 4 hours")
    assert parse_steps(text) == EXPECTED


def test_multiline_fields_and_last_final_answer_wins() -> None:
    text = ("[Meta-reasoning 1]: line one\nline two\n[Sub-problem 1]: q?\n[Answer 1]: a\n"
            "So the final answer is: draft\nSo the final answer is: \\boxed{12}")
    d = parse_steps(text)
    assert d.steps[0].meta == "line one\nline two"
    assert d.final_answer == "\\boxed{12}"


_field = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="[]*\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
    min_size=1, max_size=40,
).map(lambda s: " ".join(s.split())).filter(
    # only what the parser strips is left out: a field ending in a '-' after a space or a sentence
    # mark, or all dashes; "x-", "3-", "-3" must survive the round trip
    lambda s: s and not contains_tag(s) and not re.search(r"(?:^|[\s.!?:;,])-+$", s) and s == s.strip()
)


@settings(max_examples=200, deadline=None)
@example(steps=[("x-", "-3", "i--")], final="3-")  # dashes that are content survive
@given(
    steps=st.lists(st.tuples(_field, _field, _field), min_size=1, max_size=6),
    final=st.one_of(st.none(), _field),
)
def test_round_trip(steps: list[tuple[str, str, str]], final: str | None) -> None:
    d = Decomposition(steps=tuple(Step(*s) for s in steps), final_answer=final)
    assert parse_steps(render_steps(d)) == d


def test_validation_messages() -> None:
    text = ("[Meta-reasoning 1]: a\n[Sub-problem 1]: b\n"
            "[Meta-reasoning 3]: c\n[Sub-problem 3]:\n[Answer 3]: x")
    problems = validate(text)
    assert "step 1: missing or empty answer" in problems
    assert "step 2: missing or empty sub-problem" in problems
    assert "step 2: numbered 3 (numbering jumps or repeats)" in problems
    assert any(p.startswith("no final answer") for p in problems)
    assert validate("no tags at all")[0].startswith("no steps found")
    assert validate("[Meta-reasoning 1]: a\n[Sub-problem 2]: b\n[Answer 1]: c\nSo the final answer is: c") == [
        "step 1: tags carry different numbers [1, 2]"
    ]
    assert validate(parse_steps("[Meta-reasoning 1]: a\n[Sub-problem 1]: b\n[Answer 1]: c"),
                    require_final=False) == []


def test_dict_round_trip() -> None:
    assert Decomposition.from_dict(EXPECTED.to_dict()) == EXPECTED


@pytest.mark.parametrize(
    ("completion", "thinking", "answer", "closed"),
    [
        ("<think>\nlet me see\n</think>\n<answer>4</answer>", "let me see", "<answer>4</answer>", True),
        # R1 chat templates put <think> in the prompt: the completion only closes it
        ("so: reasoning\n</think>\nfinal", "so: reasoning", "final", True),
        ("reasoning only, no close", "reasoning only, no close", "", False),
        ("</think>", "", "", True),
    ],
)
def test_split_think(completion: str, thinking: str, answer: str, closed: bool) -> None:
    s = split_think(completion)
    assert (s.thinking, s.answer, s.closed) == (thinking, answer, closed)


def test_answer_tag() -> None:
    assert answer_tag("x <answer> \\boxed{3} </answer> y <answer>4</answer>") == "\\boxed{3}"
    assert answer_tag("no tag") is None
