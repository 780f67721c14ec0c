"""build-rlkd-data: OpenR1-Math-220k rows -> prompts, gold answers and precomputed teacher steps."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rlkd_bench.cli import cli
from rlkd_bench.prompting import R1_INSTRUCTION
from rlkd_bench.rlkd_data import load_rlkd_data, system_prompt


def _thinking(tag: str, a: int, b: int) -> str:
    return (
        f"Okay, so I need to find {a} times {b} plus {a}. ({tag})\n\n"
        f"First, let me compute the product. {a} times {b} is {a * b}. So the product is {a * b}.\n\n"
        f"Wait, let me double-check that: {b} times {a} = {a * b}. Yes.\n\n"
        f"Next, I add {a} to the product. {a * b} + {a} = {a * b + a}.\n\n"
        f"So the final answer is {a * b + a}."
    )


def _generation(tag: str, a: int, b: int, answer: int) -> str:
    return (f"<think>\n{_thinking(tag, a, b)}\n</think>\n\n"
            f"The product is {a * b}; adding {a} gives \\boxed{{{answer}}}.")


def _openr1_row(uid: str, a: int, b: int, marks: list[bool]) -> dict:
    """A row in the OpenR1-Math-220k schema; generation i is correct iff marks[i]."""
    right = a * b + a
    gens = [_generation(f"{uid}-gen{i}", a, b, right if ok else right + 1) for i, ok in enumerate(marks)]
    return {
        "problem": f"What is {a} times {b} plus {a}?", "solution": f"{a}*{b}+{a} = {right}",
        "answer": str(right), "problem_type": "Algebra", "question_type": "math-word-problem",
        "source": "synthetic", "uuid": uid, "is_reasoning_complete": [True] * len(marks),
        "generations": gens, "correctness_math_verify": marks, "correctness_llama": None,
        "finish_reasons": None, "correctness_count": sum(marks),
        "messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": gens[0]}],
    }


@pytest.fixture
def openr1_file(tmp_path):
    rows = [
        _openr1_row("u1", 7, 6, [False, True]),        # the second generation is the first correct one
        _openr1_row("u2", 3, 9, [True, True]),
        _openr1_row("u3", 5, 5, [False, False]),       # no correct generation: rejected at load
        _openr1_row("u4", 12, 4, [False, False, True]),
        _openr1_row("u5", 8, 11, [True]),
    ]
    path = tmp_path / "openr1.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_openr1_rows_become_rlkd_rows_with_teacher_steps(openr1_file, tmp_path):
    out = tmp_path / "rlkd"
    res = CliRunner().invoke(cli, ["build-rlkd-data", "--traces", str(openr1_file), "--on-error", "skip",
                                   "--out", str(out), "--test-size", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    train, test = load_rlkd_data(str(out), "train"), load_rlkd_data(str(out), "test")
    assert (len(train), len(test)) == (3, 1)
    rows = {r["id"]: r for r in list(train) + list(test)}
    assert set(rows) == {"openr1-u1", "openr1-u2", "openr1-u4", "openr1-u5"}
    picked = {"openr1-u1": ("u1-gen1", 7, 6), "openr1-u2": ("u2-gen0", 3, 9),
              "openr1-u4": ("u4-gen2", 12, 4), "openr1-u5": ("u5-gen0", 8, 11)}
    for rid, (tag, a, b) in picked.items():
        row = rows[rid]
        assert row["teacher_reasoning"] == _thinking(tag, a, b)  # thinking of the first correct one
        assert row["gold"] == str(a * b + a)
        assert row["prompt"] == [{"role": "system", "content": system_prompt()},
                                 {"role": "user", "content": f"What is {a} times {b} plus {a}?"}]
        steps = row["teacher_steps"]
        assert len(steps) == row["n_teacher_steps"] >= 2
        assert all(s["meta"] and s["subproblem"] and s["answer"] for s in steps)
        assert row["teacher_final_answer"] == str(a * b + a)
    sp = system_prompt()
    assert "<think>" in sp and "</answer>" in sp and "\\boxed{}" in sp

    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["id"], r["stage"], r["line"]) for r in rejects] == [("u3", "load", 3)]
    assert "no math-verify-correct generation" in rejects[0]["reason"]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["product"] == "rlkd-data"
    assert manifest["counts"]["ok"] == 4 and manifest["counts"]["rejected"] == 1
    assert manifest["inputs"]["traces"]["format"] == "openr1" and manifest["inputs"]["traces"]["sha256"]
    assert manifest["params"]["decomposer"] == "heuristic"
    assert manifest["prompt_versions"]["rlkd_system"].startswith("rlkd_system@")
    card = (out / "README.md").read_text()
    assert "teacher_steps" in card and "rlkd_system@" in card
    assert "RLKD training data" in res.output  # the closing summary


def test_failed_gsrm_decompositions_go_to_rejects_with_the_reply(openr1_file, gsrm_checkpoint, tmp_path):
    out = tmp_path / "rlkd"
    res = CliRunner().invoke(cli, ["build-rlkd-data", "--traces", str(openr1_file), "--on-error", "skip",
                                   "--decomposer", f"gsrm:{gsrm_checkpoint}", "--max-new-tokens", "8",
                                   "--out", str(out), "--no-progress"])
    # a few SFT steps on a random model: no reply validates, so there is nothing to train on
    assert res.exit_code == 65, res.output
    assert "no usable row" in res.output and "rejects.jsonl" in res.output
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    decomposed = [r for r in rejects if r["stage"] == "decompose"]
    assert len(decomposed) == 4
    assert all(r["reason"].startswith("invalid reply") and isinstance(r["raw"], str) and r["raw"]
               for r in decomposed)
    assert not (out / "dataset").exists()


def test_default_is_offline_bundled_and_heuristic(tmp_path):
    out = tmp_path / "rlkd"
    res = CliRunner().invoke(cli, ["build-rlkd-data", "--limit", "10", "--test-size", "0", "--out", str(out),
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["traces"] == 10
    assert (manifest["counts"]["train"], manifest["counts"]["test"]) == (manifest["counts"]["ok"], 0)
    assert manifest["inputs"]["traces"]["source"].endswith("traces.jsonl")
    assert len(load_rlkd_data(str(out), "train")) == manifest["counts"]["ok"]
    from rlkd_bench.errors import ConfigError

    with pytest.raises(ConfigError, match="no split 'test'"):  # an empty split is left out, and said so
        load_rlkd_data(str(out), "test")


def test_teacher_steps_from_a_gsrm_checkpoint(memorizing_gsrm, tmp_path):
    """gsrm:<checkpoint> as the decomposer: the steps the GSRM writes are what the row stores."""
    ckpt, trace, learned = memorizing_gsrm
    (tmp_path / "t.jsonl").write_text(json.dumps(trace) + "\n")
    out = tmp_path / "rlkd"
    res = CliRunner().invoke(cli, ["build-rlkd-data", "--traces", str(tmp_path / "t.jsonl"), "--decomposer",
                                   f"gsrm:{ckpt}", "--max-new-tokens", "400", "--test-size", "0",
                                   "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    (row,) = list(load_rlkd_data(str(out), "train"))
    assert row["teacher_steps"] == [s.to_dict() for s in learned.steps]
    assert row["teacher_final_answer"] == learned.final_answer
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"]["decomposer_config"]["engine"] == "transformers"
    assert manifest["prompt_versions"]["decomposer"].startswith("gsrm@")


def test_r1_prompt_style_has_no_system_turn(tmp_path):
    out = tmp_path / "rlkd"
    res = CliRunner().invoke(cli, ["build-rlkd-data", "--limit", "4", "--test-size", "0", "--prompt", "r1",
                                   "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"]["prompt_style"] == "r1" and "rlkd_system" not in manifest["prompt_versions"]
    rows = load_rlkd_data(str(out), "train")
    for row in rows:  # the problem, then R1's instruction, as `rlkd-bench eval --prompt r1` asks
        assert [m["role"] for m in row["prompt"]] == ["user"]
        assert row["prompt"][0]["content"] == row["problem"].strip() + "\n" + R1_INSTRUCTION
    bad = CliRunner().invoke(cli, ["build-rlkd-data", "--prompt", "chat", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "chat" in bad.output
