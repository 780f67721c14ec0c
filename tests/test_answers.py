"""The answer module: the 200+ pair table (ours beside math-verify's own verdict), where the answer
is read from, and the same verdict in training (the accuracy reward), evaluation (the lm-eval
metric), teacher verification and ``traces --verify``."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from answer_pairs import CHOICE_ROWS, ROWS, math_verify_verdict  # tests/ is on sys.path (rootdir conftest)
from click.testing import CliRunner

from rlkd_bench import answers
from rlkd_bench.cli import cli
from rlkd_bench.errors import EXIT_DATA
from rlkd_bench.llm.base import Completion
from rlkd_bench.reward.rewards import accuracy
from rlkd_bench.structure import split_think
from rlkd_bench.tasks import metrics
from rlkd_bench.teacher import judge


def ours(table: str, gold: str, answer: str) -> bool | None:
    if table == "choice":
        return answers.check(gold, answer, choices="ABCD")
    return answers.equal(gold, answer)


TABLE = [("math", *r) for r in ROWS] + [("choice", *r) for r in CHOICE_ROWS]


def test_the_table_is_big_and_covers_every_kind():
    assert len(TABLE) >= 200
    assert len({(t, g, a) for t, g, a, _, _ in TABLE}) == len(TABLE), "duplicate rows"


def test_every_row_gets_our_expected_verdict():
    wrong = [(t, g, a, e, ours(t, g, a)) for t, g, a, e, _ in TABLE if ours(t, g, a) is not e]
    assert wrong == [], "\n".join(f"{t} {g!r} vs {a!r}: expected {e}, got {o}" for t, g, a, e, o in wrong)


def test_we_differ_from_math_verify_exactly_where_a_row_says_why():
    differ = [(t, g, a) for t, g, a, e, _ in TABLE if e is not math_verify_verdict(g, a)]
    explained = [(t, g, a) for t, g, a, _, why in TABLE if why]
    assert differ == explained


def test_the_issue_cases():
    for gold, answer in [("1.5", "15"), ("3.14", "314"), ("0.25", "025"), ("15", "1.5")]:
        assert answers.equal(gold, answer) is False, (gold, answer)
    assert answers.check("5", "garbage 5\x00 tail") is False
    assert answers.check("5", "it is 5") is False


@pytest.mark.parametrize("gold, answer, expected", [(g, a, e) for g, a, e, _ in ROWS
                                                    if answers.last_boxed(f"\\boxed{{{a}}}") == a.strip()
                                                    and a.strip() and "\\boxed" not in a])
def test_a_boxed_answer_in_a_completion_keeps_its_verdict(gold, answer, expected):
    """Extraction does not change the verdict: the row's answer boxed after the thinking scores the same."""
    completion = f"<think>\nworking\n</think>\nThe final answer is $\\boxed{{{answer}}}$."
    assert answers.check(gold, completion) is expected


# -- where the answer is read from ---------------------------------------------------------------
@pytest.mark.parametrize("completion, answer_text, final", [
    ("<think>so \\boxed{3}</think> The answer is \\boxed{4}.", "The answer is \\boxed{4}.", "4"),
    ("reasoning only, R1 template</think>\n\\boxed{4}", "\\boxed{4}", "4"),
    ("<think>cut off before the end \\boxed{4}", "", None),  # opened, never closed: no answer
    ("No tags at all: \\boxed{4}", "No tags at all: \\boxed{4}", "4"),
    ("<think>x</think>\n<answer>It is \\boxed{7}</answer>", "<answer>It is \\boxed{7}</answer>", "7"),
    ("<think>x</think><answer>seven</answer>", "<answer>seven</answer>", "seven"),
    ("<think>x</think><answer>\\boxed{20}</answer> \\boxed{5}", "<answer>\\boxed{20}</answer> \\boxed{5}", "20"),
    ("<think>a</think>\\boxed{7} and \\boxed{8}", "\\boxed{7} and \\boxed{8}", "8"),
    # the thinking ends at the LAST </think>: a model that closed it twice answered after the second
    ("<think>a</think>\\boxed{1}</think>\\boxed{2}", "\\boxed{2}", "2"),
    ("<think>a</think>", "", None),
    ("</think> 42 ", "42", "42"),
    ("", "", None),
])
def test_where_the_answer_is_read_from(completion, answer_text, final):
    assert answers.answer_text(completion) == answer_text
    assert answers.final_answer(completion) == final


def test_split_think_ends_the_thinking_where_the_answer_module_does():
    text = "<think>a</think>\\boxed{1}</think>\\boxed{2}"
    s = split_think(text)
    assert s.closed and s.answer == answers.answer_text(text) == "\\boxed{2}"
    assert s.thinking == "a</think>\\boxed{1}"


# -- one verdict everywhere ----------------------------------------------------------------------
SAME_SAMPLES = [
    ("15", "<think>3/2*10</think>\\boxed{1.5}"),
    ("1.5", "<think>3/2</think>\\boxed{1.50}"),
    ("20", "<think>x</think><answer>The result is \\boxed{20}.</answer>"),
    ("20", "<think>x</think><answer>20</answer>"),
    ("20", "2 + 3 = 5, 5 * 4 = 20.\n</think>\n<answer>\\boxed{20}</answer>"),
    ("20", "<think>so \\boxed{20}</think>"),
    ("20", "<think>never closed \\boxed{20}"),
    ("20", "No tags: \\boxed{20}"),
    ("20", "I think it is 20"),
    ("20", "<think>a</think>\\boxed{20}</think>\\boxed{21}"),
    ("\\frac{1}{2}", "</think>So the answer is \\boxed{0.5}."),
    ("5", "</think>garbage 5\x00 tail"),
    ("5", "</think>it is 5"),
    ("Tuesday afternoon", "<think>x</think><answer>tuesday afternoon</answer>"),
    ("Tuesday afternoon", "<think>x</think><answer>\\boxed{20}</answer>"),
    ("isosceles", "</think>\\boxed{\\text{Isosceles}}"),
    ("", "</think>\\boxed{20}"),
    ("  ", "</think>\\boxed{20}"),
    ("1.5e3", "</think>\\boxed{1500}"),
    ("x=3", "</think>\\boxed{3}"),
]


@pytest.mark.parametrize("gold, completion", SAME_SAMPLES)
def test_training_and_evaluation_agree_on_every_sample(gold, completion):
    """The accuracy reward (TRL) and the lm-eval metric give the same verdict, None included."""
    reward = accuracy([None], [completion], gold=[gold])[0]
    metric = metrics.math_correct(gold, completion)
    assert (None if reward is None else reward == 1.0) == metric == answers.check(gold, completion)
    conv = accuracy([None], [[{"role": "assistant", "content": completion}]], gold=[gold])[0]
    assert conv == reward


def test_the_teacher_keeps_a_trace_only_when_the_check_says_right():
    assert not judge("15", 0, Completion(text="<think>3/2*10</think>\\boxed{1.5}")).correct
    assert judge("1.5", 0, Completion(text="<think>3/2</think>\\boxed{1.50}")).correct
    # the same last-</think> rule as every other caller
    s = judge("2", 0, Completion(text="<think>a</think>\\boxed{1}</think>\\boxed{2}"))
    assert s.correct and s.answer == "\\boxed{2}"
    assert not judge("", 0, Completion(text="<think>a</think>\\boxed{1}")).correct  # nothing to verify against


def test_the_check_works_off_the_main_thread():
    """TRL runs rewards on a loop thread where SIGALRM timeouts cannot be set: no silent False there."""
    got: list = []
    t = threading.Thread(target=lambda: got.append((answers.check("\\frac{1}{2}", "</think>\\boxed{0.5}"),
                                                    answers.equal("x^2+1", "1+x^2"))))
    t.start()
    t.join()
    assert got == [(True, True)]


# -- through the CLI -----------------------------------------------------------------------------
def trace(id_: str, boxed: str, gold: str) -> dict:
    return {"id": id_, "domain": "math", "problem": "What is 3/2 times 10?",
            "reasoning": "3/2 * 10, let me see.", "answer": f"So \\boxed{{{boxed}}}.", "gold": gold}


def test_traces_verify_rejects_1_5_against_gold_15(tmp_path: Path):
    src = tmp_path / "t.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [trace("ok", "1.50", "1.5"), trace("bad", "1.5", "15")]) + "\n")
    runner = CliRunner()
    res = runner.invoke(cli, ["traces", "--traces", str(src), "--verify", "--on-error", "skip",
                              "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (tmp_path / "out" / "traces.jsonl").read_text().splitlines()]
    assert [(r["id"], r["verified"]) for r in rows] == [("ok", True)]
    rejects = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rejects] == ["bad"] and "does not match gold '15'" in rejects[0]["reason"]
    # the default (stop) refuses the file, naming the line and the field
    res = runner.invoke(cli, ["traces", "--traces", str(src), "--verify", "--out", str(tmp_path / "out2")])
    assert res.exit_code == EXIT_DATA
    assert f"{src}:2: field 'answer'" in res.stderr
