"""The TRL reward functions on hand-made completions and rlkd-data rows: values, logs, bad input."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from importlib import resources

import pytest

from rlkd_bench.answers import final_answer
from rlkd_bench.decompose.heuristic import HeuristicDecomposer
from rlkd_bench.errors import ConfigError, DataError
from rlkd_bench.llm.base import EngineOptions
from rlkd_bench.reward.rewards import (
    REWARD_FUNCS,
    accuracy,
    check_columns,
    completion_text,
    format_reward,
    get_reward_funcs,
    tag_count,
)
from rlkd_bench.reward.scorer import StructureScorer, as_decomposition
from rlkd_bench.rlkd_data import rlkd_row

GOOD = "<think>\n2 + 3 = 5, then 5 * 4 = 20.\n</think>\n<answer>\nThe result is \\boxed{20}.\n</answer>"
R1 = "2 + 3 = 5, then 5 * 4 = 20.\n</think>\n<answer>\\boxed{20}</answer>"  # <think> was in the prompt


def conv(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize("completion, gold, expected", [
    (GOOD, "20", 1.0),
    (conv(GOOD), "20", 1.0),
    (R1, "20", 1.0),
    (GOOD, "\\frac{40}{2}", 1.0),
    (GOOD, "21", 0.0),
    ("<think>the answer is \\boxed{21}</think><answer>\\boxed{20}</answer>", "20", 1.0),  # <answer> wins
    ("<think>so \\boxed{20}</think>", "20", 0.0),  # an answer inside the thinking only is no answer
    ("I think it is 20", "20", 0.0),
    ("<think>x</think><answer>20</answer>", "20", 1.0),
    # a text gold is scored as text, as the eval metric scores it (it was None here, a match there)
    (GOOD, "Tuesday afternoon", 0.0),
    ("<think>x</think><answer>tuesday afternoon</answer>", "Tuesday afternoon", 1.0),
    (GOOD, "", None),  # a blank gold: unscorable, not wrong
    ("<think>x</think>\\boxed{1.5}", "15", 0.0),
    ("<think>never closed \\boxed{20}", "20", 0.0),  # no answer, as in evaluation
])
def test_accuracy(completion, gold, expected):
    assert accuracy([None], [completion], gold=[gold]) == [expected]


def test_final_answer():
    assert final_answer(GOOD) == "20"
    assert final_answer("<think>a</think>\\boxed{7} and \\boxed{8}") == "8"
    assert final_answer("<think>a</think><answer>seven</answer>") == "seven"
    # never closed: no answer (the eval rule, which training now shares; it used to search the whole text)
    assert final_answer("<think>\\boxed{3}") is None
    assert final_answer("<think>a</think>") is None


@pytest.mark.parametrize("completion, fmt, tags", [
    (GOOD, 1.0, 1.0),
    (conv(GOOD), 1.0, 1.0),
    (R1, 1.0, 1.0),
    ("<think>a</think><answer>b</answer> trailing", 0.0, 1.0),
    ("<think>a</think>", 0.0, 0.5),
    ("<think></think><answer>b</answer>", 0.0, 1.0),  # empty thinking
    ("<think>a</think><answer>b</answer><answer>c</answer>", 0.0, 0.5),
    ("<think>a<think>b</think><answer>c</answer>", 0.0, 0.75),
    ("no tags at all", 0.0, 0.0),
    ("a</think>b</think><answer>c</answer>", 0.0, 0.5),
])
def test_format_and_tag_count(completion, fmt, tags):
    assert format_reward([None], [completion]) == [fmt]
    assert tag_count([None], [completion]) == [tags]


def test_registry_names_and_signatures():
    funcs = get_reward_funcs(["accuracy", "format", "tag_count", "structure"])
    assert [f.__name__ for f in funcs] == ["accuracy", "format", "tag_count", "structure"]
    assert inspect.iscoroutinefunction(funcs[3]), "structure is async so TRL overlaps it with the others"
    assert set(REWARD_FUNCS) == {"accuracy", "format", "tag_count", "structure"}
    with pytest.raises(ConfigError, match="unknown reward 'acuracy'.*accuracy, format, tag_count, structure"):
        get_reward_funcs(["acuracy"])
    with pytest.raises(ConfigError, match="unknown option 'matchr'"):
        get_reward_funcs(["structure"], structure={"matchr": "lexical"})
    with pytest.raises(ConfigError, match="unknown matcher"):
        get_reward_funcs(["structure"], structure={"matcher": "cosine"})
    with pytest.raises(ConfigError, match="unknown decomposer"):
        get_reward_funcs(["structure"], structure={"decomposer": "magic"})


def test_missing_columns_are_data_errors_that_name_the_column_and_its_maker():
    acc, struct = get_reward_funcs(["accuracy", "structure"])
    with pytest.raises(DataError, match="'gold'.*build-rlkd-data"):
        acc(prompts=["p"], completions=[GOOD], trainer_state=None, log_metric=print)
    with pytest.raises(DataError, match="'teacher_steps'.*build-rlkd-data"):
        asyncio.run(struct(prompts=["p"], completions=[GOOD], problem=["p"]))
    with pytest.raises(DataError, match="column 'teacher_steps'"):
        check_columns(["format", "structure"], ["prompt", "problem", "gold"])
    check_columns(["accuracy", "structure"], ["prompt", "problem", "gold", "teacher_steps"])


def test_completion_text_handles_strings_and_messages():
    assert completion_text("x") == "x"
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == "ab"
    assert completion_text([{"role": "tool", "content": "no"}, {"role": "assistant", "content": "yes"}]) == "yes"


# -- structure, on rows the rlkd-data stage writes --------------------------------------------------
@pytest.fixture(scope="module")
def rows():
    """Four rlkd-data rows (the product's own row function) from the bundled traces."""
    lines = (resources.files("rlkd_bench") / "data" / "traces.jsonl").read_text().splitlines()
    traces = [json.loads(x) for x in lines[:6]]
    results = HeuristicDecomposer().decompose(traces)
    out = [rlkd_row(t, r) for t, r in zip(traces, results, strict=True) if r.ok]
    assert len(out) >= 4
    return out[:4]


def student(row) -> str:
    """The teacher's own trace as a completion: its structure is the teacher's."""
    return f"<think>{row['teacher_reasoning']}</think><answer>\\boxed{{{row['gold']}}}</answer>"


def call(func, rows, completions, **extra):
    metrics: dict[str, list[float]] = {}
    extras: dict[str, list] = {}
    cols = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    out = asyncio.run(func(prompts=[r["prompt"] for r in rows], completions=completions,
                           completion_ids=[[0]] * len(rows), trainer_state=None,
                           log_metric=lambda k, v: metrics.setdefault(k, []).append(v),
                           log_extra=lambda k, v: extras.setdefault(k, []).extend(v), **cols, **extra))
    return out, metrics, extras


def test_structure_scores_the_teacher_trace_fully_and_a_mismatch_lower(rows):
    (struct,) = get_reward_funcs(["structure"], structure={"decomposer": "heuristic", "matcher": "lexical",
                                                          "normalize": True})  # the default is the sum
    own = [conv(student(r)) for r in rows]
    swapped = [conv(student(r)) for r in rows[1:] + rows[:1]]  # each completion answers another problem
    good, metrics, extras = call(struct, rows, own)
    assert good == [1.0] * len(rows), "the teacher's own trace follows the teacher's steps: normalised 1.0"
    bad, _, _ = call(struct, rows, swapped)
    assert all(b is not None and b < 1.0 for b in bad)
    assert metrics["structure/failed"] == [0.0] and metrics["structure/decompose_failed"] == [0.0]
    assert metrics["structure/matched_prefix"] == [sum(r["n_teacher_steps"] for r in rows) / len(rows)]
    assert metrics["structure/halvings"] == [0.0]
    assert extras["structure_error"] == [""] * len(rows)
    assert extras["structure_steps"] == [r["n_teacher_steps"] for r in rows]


def test_structure_failures_are_counted_none_never_zero(rows):
    (struct,) = get_reward_funcs(["structure"], structure={"normalize": True})  # the default is the sum
    completions = [student(rows[0]), "<think>never closed", "<think></think><answer>1</answer>",
                   "<think>Just a guess.</think><answer>x</answer>"]
    out, metrics, extras = call(struct, rows, completions)
    assert out[0] == 1.0 and out[1] is None and out[2] is None
    assert extras["structure_error"][1] == "no </think>"
    assert extras["structure_error"][2].startswith("decomposition failed")
    assert metrics["structure/no_think_end"] == [0.25]
    assert metrics["structure/failed"] == [sum(o is None for o in out) / 4]
    assert struct.counts["failed"] == sum(o is None for o in out)
    # TRL sums rewards with nansum: a None is a 0 next to the other rewards; the logs say both means
    scored = [o for o in out if o is not None]
    assert metrics["structure/none_frac"] == [sum(o is None for o in out) / 4] and metrics["structure/none_frac"][0] > 0
    assert metrics["structure/mean_with_failures_as_0"] == [pytest.approx(sum(scored) / 4)]
    assert metrics["structure/mean_scored"] == [pytest.approx(sum(scored) / len(scored))]
    assert metrics["structure/mean_with_failures_as_0"][0] < metrics["structure/mean_scored"][0]


def test_what_the_docstring_says_trl_does_with_none_is_in_the_installed_trl():
    """rewards.py documents TRL's handling of None from its source; this fails if an upgrade changes it."""
    import inspect

    from trl import GRPOTrainer

    calc = inspect.getsource(GRPOTrainer._calculate_rewards)
    assert "torch.nan" in calc and "is not None else torch.nan" in calc  # None -> NaN
    score = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert ".nansum(dim=1)" in score  # NaN counts as 0 in the weighted sum
    assert "torch.isnan(rewards_per_func).all(dim=1)" in score  # only an all-None row is left out
    assert "torch.nanmean(rewards_per_func[:, i])" in score  # rewards/<name>/mean: scored samples only


def test_structure_with_an_unreachable_gsrm_is_none_with_one_warning(rows, caplog):
    (struct,) = get_reward_funcs(["structure"], structure={
        "decomposer": "gsrm:http://127.0.0.1:9/v1", "timeout_s": 30,
        "engine_options": {"timeout_s": 2, "max_retries": 0}})
    with caplog.at_level(logging.WARNING, logger="rlkd_bench.reward"):
        first, metrics, _ = call(struct, rows, [student(r) for r in rows])
        second, _, _ = call(struct, rows, [student(r) for r in rows])
    assert first == second == [None] * len(rows)
    assert metrics["structure/decompose_failed"] == [1.0]
    warnings = [r.getMessage() for r in caplog.records if "decomposition failed" in r.getMessage()]
    assert len(warnings) == 1 and "cannot list the models" in warnings[0]


def test_the_call_timeout_is_a_counted_none(rows):
    scorer = StructureScorer(timeout_s=1e-9, engine_options=EngineOptions(progress=False))
    out = scorer.score([r["problem"] for r in rows], [student(r) for r in rows], [r["teacher_steps"] for r in rows])
    assert all(o.error == "timeout" and o.reward() is None for o in out)
    assert scorer.stats.timeouts == len(rows)


def test_teacher_steps_shapes(rows):
    steps = rows[0]["teacher_steps"]
    a = as_decomposition(steps)
    assert as_decomposition({"steps": steps, "final_answer": "1"}).steps == a.steps
    assert as_decomposition(a) is a
    with pytest.raises(DataError, match="teacher_steps"):
        as_decomposition("[Meta-reasoning 1]: text")
    with pytest.raises(DataError, match="step 1"):
        as_decomposition(["just text"])


def test_a_teacher_without_steps_scores_zero(rows):
    scorer = StructureScorer()
    (o,) = scorer.score([rows[0]["problem"]], [student(rows[0])], [[]])
    assert o.ok and o.reward() == 0.0 and o.reward(normalize=False) == 0.0


def test_scorer_describe_and_pairs(rows):
    scorer = StructureScorer(normalize=False)
    d = scorer.describe()
    assert d["matcher"]["kind"] == "lexical" and d["normalize"] is False and d["decomposer"]["name"]
    t = [as_decomposition(r["teacher_steps"]) for r in rows[:2]]
    got = scorer.align_pairs([(t[0], t[0]), (t[0], t[1])])
    assert got[0].score == len(t[0]) and got[1].score < len(t[0])
    res = scorer.decompose([rows[0]["problem"], "p"], [rows[0]["teacher_reasoning"], "  "],
                           [f"\\boxed{{{rows[0]['gold']}}}", ""])
    assert res[0].ok and not res[1].ok and res[1].error == "empty thinking"
