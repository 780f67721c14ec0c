"""The bundled teacher traces (package data) are well formed, correct and R1-like.

They are the offline default input of every stage, so a malformed row or a wrong gold
answer would silently poison annotations, rewards and benchmarks downstream.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from importlib.resources import files

import pytest

from rlkd_bench.answers import last_boxed, verify

KEYS = {
    "id": str,
    "domain": str,
    "problem": str,
    "reasoning": str,
    "answer": str,
    "gold": str,
    "source": str,
    "verified": bool,
}
DOMAINS = {"math", "science", "puzzle", "code"}
MARKERS = re.compile(r"wait|alternatively|let me check|double-check|verify", re.IGNORECASE)
ID_FORM = re.compile(r"bundled-(math|science|puzzle|code)-\d{3}")


def _raw() -> bytes:
    return files("rlkd_bench").joinpath("data/traces.jsonl").read_bytes()


def _rows() -> list[dict]:
    return [json.loads(line) for line in _raw().decode("utf-8").splitlines()]


ROWS = _rows()


def test_file_is_clean_utf8_jsonl():
    raw = _raw()
    assert not raw.startswith(b"\xef\xbb\xbf"), "BOM at start of traces.jsonl"
    text = raw.decode("utf-8")  # raises on non-UTF-8 bytes
    assert text.endswith("\n"), "last line is not newline-terminated"
    for n, line in enumerate(text.splitlines(), 1):
        assert line.strip(), f"blank line {n}"
        assert isinstance(json.loads(line), dict), f"line {n} is not a JSON object"


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.get("id", "?"))
def test_keys_and_types_exact(row):
    assert set(row) == set(KEYS), f"keys differ: {sorted(set(row) ^ set(KEYS))}"
    for key, typ in KEYS.items():
        assert type(row[key]) is typ, f"{key} is {type(row[key]).__name__}, want {typ.__name__}"
        if typ is str:
            assert row[key].strip(), f"{key} is empty"
    assert row["domain"] in DOMAINS
    assert ID_FORM.fullmatch(row["id"]), row["id"]
    assert row["id"].split("-")[1] == row["domain"], "id names another domain"
    assert row["source"] == "rlkd-bench/bundled"
    assert row["verified"] is True


def test_ids_unique_and_domain_mix():
    ids = [r["id"] for r in ROWS]
    assert len(ids) == len(set(ids)), [i for i, c in Counter(ids).items() if c > 1]
    assert len(ROWS) >= 40
    counts = Counter(r["domain"] for r in ROWS)
    assert set(counts) == DOMAINS, f"every domain should be present: {dict(counts)}"
    assert counts["math"] > len(ROWS) / 2, f"mostly math expected: {dict(counts)}"
    assert len({r["problem"] for r in ROWS}) == len(ROWS), "duplicate problem"


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r["id"])
def test_answer_reaches_gold(row):
    boxed = last_boxed(row["answer"])
    assert boxed is not None, "answer has no \\boxed{...}"
    assert verify(row["gold"], row["answer"]), f"gold {row['gold']!r} vs boxed {boxed!r}"
    if row["domain"] != "math":
        plain = re.sub(r"\\text\{([^}]*)\}", r"\1", boxed)
        assert row["gold"].lower() in plain.lower(), f"gold {row['gold']!r} not in boxed {boxed!r}"


def test_verify_is_not_vacuous_on_these_rows():
    """A math answer must fail against another row's (different) gold, or the check above proves nothing."""
    math = [r for r in ROWS if r["domain"] == "math"]
    checked = 0
    for row, other in zip(math, math[1:] + math[:1], strict=True):
        if last_boxed(row["answer"]) != last_boxed(other["answer"]):
            assert not verify(other["gold"], row["answer"]), (row["id"], other["gold"])
            checked += 1
    assert checked >= len(math) - 2


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r["id"])
def test_reasoning_reads_like_r1(row):
    text = row["reasoning"]
    assert len(text) >= 800, f"reasoning only {len(text)} characters"
    assert MARKERS.search(text), "no Wait/Alternatively/check/verify marker"
    assert "<think>" not in text and "</think>" not in text, "reasoning must not carry think tags"
    assert "\\boxed" not in text, "the boxed final answer belongs to the answer field"
    assert 2 <= row["answer"].count(". ") + 1 <= 8, "answer should be a short written solution"
