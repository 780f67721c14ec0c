"""Loading traces: the three schemas, every storage form, and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlkd_bench.errors import ConfigError, DataError
from rlkd_bench.sources import load_traces, parse_field_mappings

GOOD = {"id": "t1", "domain": "math", "problem": "What is 2+3?",
        "reasoning": "Okay, 2+3. Wait, that is 5.", "answer": "So \\boxed{5}.", "gold": "5"}


def write_lines(path: Path, lines: list[str | bytes], *, final_newline: bool = True) -> Path:
    blob = b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines)
    path.write_bytes(blob + (b"\n" if final_newline else b""))
    return path


def openr1_row(uuid: str, gens: list[str], marks: list[bool], answer: str = "5") -> dict:
    return {"problem": f"Problem {uuid}", "solution": "...", "answer": answer, "uuid": uuid,
            "generations": gens, "correctness_math_verify": marks, "problem_type": "Algebra"}


def test_traces_jsonl_roundtrip(tmp_path: Path) -> None:
    p = write_lines(tmp_path / "t.jsonl", [json.dumps(GOOD), json.dumps({**GOOD, "id": "t2", "gold": 7})])
    res = load_traces(str(p))
    assert [r["id"] for r in res.rows] == ["t1", "t2"]
    assert res.rows[1]["gold"] == "7"  # numeric gold is accepted as text
    assert res.fmt == "traces" and res.rejects == []


@pytest.mark.parametrize(
    ("lines", "final_newline", "line", "field", "words"),
    [
        (["{not json"], True, 1, None, "malformed JSON"),
        ([json.dumps(GOOD), '{"id": "t2", "problem": "p", "reason'], False, 2, None, "truncated last line"),
        ([json.dumps(GOOD), json.dumps({**GOOD, "id": "x", "problem": "  "})], True, 2, "problem", "empty"),
        ([json.dumps({k: v for k, v in GOOD.items() if k != "reasoning"})], True, 1, "reasoning", "missing"),
        ([json.dumps({**GOOD, "reasoning": ["a", "b"]})], True, 1, "reasoning", "expected text, got list"),
        ([json.dumps({**GOOD, "problem": 12})], True, 1, "problem", "expected text, got int"),
        ([json.dumps({**GOOD, "verified": "yes"})], True, 1, "verified", "expected true or false"),
        ([json.dumps(GOOD), json.dumps({**GOOD, "domain": "poetry"})], True, 2, "domain", "unknown domain 'poetry'"),
        ([json.dumps(GOOD), b'{"id": "b", "problem": "\xff\xfe", "reasoning": "r"}'], True, 2, None, "not valid UTF-8"),
        ([json.dumps(GOOD), "[1, 2]"], True, 2, None, "expected a JSON object"),
        ([json.dumps(GOOD), json.dumps(GOOD)], True, 2, "id", "duplicate id 't1'"),
    ],
    ids=["malformed", "truncated", "empty-field", "missing-field", "wrong-type-list", "wrong-type-int",
         "wrong-type-bool", "unknown-domain", "non-utf8", "not-object", "duplicate-id"],
)
def test_bad_input_names_file_line_field(tmp_path: Path, lines, final_newline, line, field, words) -> None:
    p = write_lines(tmp_path / "bad.jsonl", lines, final_newline=final_newline)
    with pytest.raises(DataError) as info:
        load_traces(str(p))
    err = info.value
    assert (err.file, err.line, err.field) == (str(p), line, field)
    assert words in str(err) and str(p) in str(err) and f":{line}" in str(err)
    # --on-error skip keeps going and records the row with the same reason
    res = load_traces(str(p), on_error="skip")
    assert len(res.rejects) == 1 and res.rejects[0]["line"] == line and words in res.rejects[0]["reason"]
    assert len(res.rows) == len([x for x in lines if x]) - 1


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.jsonl"
    p.write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        load_traces(str(p))


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_traces(str(tmp_path / "nope.jsonl"))


def test_unknown_schema_asks_for_field_mappings(tmp_path: Path) -> None:
    p = write_lines(tmp_path / "g.jsonl", [json.dumps({"question": "q", "cot": "c"})])
    with pytest.raises(DataError, match="--field problem=COL"):
        load_traces(str(p))
    res = load_traces(str(p), fields=parse_field_mappings(["problem=question", "reasoning=cot"]))
    assert res.rows[0]["problem"] == "q" and res.rows[0]["reasoning"] == "c" and res.fmt == "generic"
    with pytest.raises(ConfigError, match="name=column"):
        parse_field_mappings(["problem"])
    with pytest.raises(ConfigError, match="needs --field for reasoning"):
        load_traces(str(p), fields={"problem": "question"})
    with pytest.raises(DataError, match="field 'cot2': missing"):
        load_traces(str(p), fields={"problem": "question", "reasoning": "cot2"})


def test_openr1_first_correct_generation(tmp_path: Path) -> None:
    rows = [
        openr1_row("a", ["<think>wrong path</think>\\boxed{4}", "<think>right path</think>\\boxed{5}",
                         "<think>also right</think>\\boxed{5}"], [False, True, True]),
        openr1_row("b", ["<think>x</think>\\boxed{1}"], [False]),
        openr1_row("c", ["<think>y</think>"], [True, True]),
    ]
    p = write_lines(tmp_path / "openr1.jsonl", [json.dumps(r) for r in rows])
    res = load_traces(str(p), on_error="skip")
    assert res.fmt == "openr1"
    assert [r["id"] for r in res.rows] == ["openr1-a"]
    row = res.rows[0]
    assert row["reasoning"] == "right path" and row["answer"] == "\\boxed{5}" and row["gold"] == "5"
    assert row["source"].endswith("#generation1") and row["verified"] is True
    reasons = {r["id"]: r["reason"] for r in res.rejects}
    assert reasons["b"] == "no math-verify-correct generation"
    assert "as long as generations" in reasons["c"]


def test_openthoughts_schema(tmp_path: Path) -> None:
    row = {"problem": "Speed of light?", "deepseek_reasoning": "Hmm, c is about 3e8 m/s.",
           "deepseek_solution": "\\boxed{3\\times 10^8}", "ground_truth_solution": "It is \\boxed{3\\times 10^8}",
           "domain": "physics", "source": "x"}
    p = write_lines(tmp_path / "ot.jsonl", [json.dumps(row)])
    res = load_traces(str(p))
    assert res.fmt == "openthoughts"
    assert res.rows[0]["domain"] == "science" and res.rows[0]["gold"] == "3\\times 10^8"


def test_verify_rejects_wrong_answers(tmp_path: Path) -> None:
    rows = [GOOD, {**GOOD, "id": "t2", "answer": "\\boxed{6}"}]
    p = write_lines(tmp_path / "t.jsonl", [json.dumps(r) for r in rows])
    res = load_traces(str(p), verify=True, on_error="skip")
    assert [r["id"] for r in res.rows] == ["t1"] and res.rows[0]["verified"] is True
    assert "does not match gold" in res.rejects[0]["reason"]


def test_parquet_saved_dataset_and_hub_style_folder(tmp_path: Path) -> None:
    """Hub ids go through datasets.load_dataset(source, ...): exercised here on a local folder."""
    import datasets

    rows = [openr1_row(str(i), [f"<think>t{i}</think>\\boxed{{5}}"], [True]) for i in range(3)]
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "one.parquet"))
    hub = tmp_path / "hub_like" / "data"
    hub.mkdir(parents=True)
    ds.to_parquet(str(hub / "train-00000-of-00001.parquet"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "saved"))
    for source in (tmp_path / "one.parquet", tmp_path / "hub_like", tmp_path / "saved"):
        res = load_traces(str(source), limit=2)
        assert [r["id"] for r in res.rows] == ["openr1-0", "openr1-1"], source
    with pytest.raises(ConfigError, match="no split 'test'"):
        load_traces(str(tmp_path / "saved"), split="test")


def test_bundled_default_loads() -> None:
    res = load_traces()
    assert len(res.rows) >= 40 and not res.rejects
    assert {r["domain"] for r in res.rows} >= {"math", "science", "puzzle", "code"}


def test_problems_only_for_teacher_generation(tmp_path: Path) -> None:
    rows = [openr1_row("a", [], [], answer="7"), {"question": "q?", "ans": 3}]
    p = write_lines(tmp_path / "p.jsonl", [json.dumps(rows[0])])
    res = load_traces(str(p), problems_only=True)
    assert res.rows == [{"id": "openr1-a", "domain": "math", "problem": "Problem a", "gold": "7",
                         "source": str(p)}]
    q = write_lines(tmp_path / "q.jsonl", [json.dumps(rows[1])])
    res = load_traces(str(q), problems_only=True, fields={"problem": "question", "gold": "ans"})
    assert res.rows[0]["problem"] == "q?" and res.rows[0]["gold"] == "3"
