"""The CLI end to end on the offline default: traces, build-gsrm-data, errors and exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from rlkd_bench.cli import cli
from rlkd_bench.errors import EXIT_DATA, EXIT_USAGE
from rlkd_bench.structure import parse_steps, validate


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_help_reads_like_a_manual() -> None:
    res = run("--help")
    assert res.exit_code == 0
    for cmd in ("traces", "build-gsrm-data"):
        assert cmd in res.output
        sub = run(cmd, "--help")
        assert sub.exit_code == 0 and "Example" in sub.output and "--out" in sub.output


def test_build_gsrm_data_offline_default(tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "gsrm"
    res = run("build-gsrm-data", "--out", str(out), "--no-progress")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().endswith(str(out))
    for name in ("annotations.jsonl", "rejects.jsonl", "manifest.json", "README.md", "sft"):
        assert (out / name).exists(), name
    manifest = json.loads((out / "manifest.json").read_text())
    annotations = [json.loads(x) for x in (out / "annotations.jsonl").read_text().splitlines()]
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines() if x]
    assert manifest["counts"]["ok"] == len(annotations) >= 40
    assert manifest["counts"]["rejected"] == len(rejects)
    assert manifest["inputs"]["traces"]["sha256"]
    assert manifest["prompt_versions"]["annotator"] == "heuristic-v3"
    assert manifest["prompt_versions"]["gsrm"].startswith("gsrm@")
    assert annotations[0]["annotator"]["name"] == "heuristic"
    dd = datasets.load_from_disk(str(out / "sft"))
    assert set(dd) == {"train", "test"}
    assert len(dd["train"]) + len(dd["test"]) == len(annotations) and len(dd["test"]) >= 1
    msgs = dd["train"][0]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert "Reasoning trace:" in msgs[1]["content"]
    assert validate(parse_steps(msgs[2]["content"])) == []
    card = (out / "README.md").read_text()
    assert "GSRM training data" in card and "heuristic" in card

    # a rerun resumes: nothing is annotated twice, nothing is lost
    res2 = run("build-gsrm-data", "--out", str(out), "--no-progress")
    assert res2.exit_code == 0
    manifest2 = json.loads((out / "manifest.json").read_text())
    assert manifest2["counts"]["resumed"] == len(annotations) + len(rejects)
    ids = [json.loads(x)["id"] for x in (out / "annotations.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == len(annotations)


def test_limit_seed_and_test_size(tmp_path: Path) -> None:
    import datasets

    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert run("build-gsrm-data", "--out", str(out), "--limit", "6", "--test-size", "2",
                   "--seed", "3", "--no-progress").exit_code == 0
    da, db = datasets.load_from_disk(str(a / "sft")), datasets.load_from_disk(str(b / "sft"))
    assert (len(da["train"]), len(da["test"])) == (4, 2)
    assert da["test"]["id"] == db["test"]["id"]  # same seed, same split


def test_traces_command(tmp_path: Path) -> None:
    out = tmp_path / "traces"
    res = run("traces", "--out", str(out), "--limit", "5")
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (out / "traces.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and set(rows[0]) >= {"id", "domain", "problem", "reasoning", "gold", "verified"}
    assert json.loads((out / "manifest.json").read_text())["counts"]["ok"] == 5
    # a traces product is itself a valid --traces source
    res2 = run("build-gsrm-data", "--traces", str(out), "--out", str(tmp_path / "g"), "--no-progress")
    assert res2.exit_code == 0, res2.output


def test_bad_input_stops_before_writing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "problem": "p", "reasoning": "Okay. First, 2+2 = 4."}\n{"id": "b", "problem": 3}\n')
    out = tmp_path / "out"
    res = run("build-gsrm-data", "--traces", str(bad), "--out", str(out), "--no-progress")
    assert res.exit_code == EXIT_DATA
    assert f"{bad}:2: field 'problem': expected text, got int" in res.stderr
    assert not out.exists()
    res = run("build-gsrm-data", "--traces", str(bad), "--out", str(out), "--on-error", "skip",
              "--no-progress")
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert any(r["id"] == "b" and r["line"] == 2 and r["field"] == "problem" for r in rejects)


@pytest.mark.parametrize(
    "args",
    [["--test-size", "-1"], ["--annotator", "nonsense"], ["--format", "csv"], ["--field", "problem"],
     ["--traces", "/definitely/not/here.jsonl"]],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    res = run("build-gsrm-data", "--out", str(tmp_path / "o"), *args)
    assert res.exit_code == EXIT_USAGE, res.output


def test_refuses_to_mix_annotators(tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert run("build-gsrm-data", "--out", str(out), "--limit", "3", "--no-progress").exit_code == 0
    state = json.loads((out / "run.json").read_text())
    state["prompt_version"] = "other"
    (out / "run.json").write_text(json.dumps(state))
    res = run("build-gsrm-data", "--out", str(out), "--limit", "3", "--no-progress")
    assert res.exit_code == EXIT_USAGE and "--overwrite" in res.stderr
    assert run("build-gsrm-data", "--out", str(out), "--limit", "3", "--overwrite",
               "--no-progress").exit_code == 0


def test_real_subprocess(tmp_path: Path) -> None:
    exe = shutil.which("rlkd-bench", path=str(Path(sys.executable).parent))
    assert exe, "the console script is installed with the package"
    out = tmp_path / "sub"
    proc = subprocess.run([exe, "build-gsrm-data", "--out", str(out), "--limit", "4"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    assert "build-gsrm-data" in proc.stderr and "outputs" in proc.stderr  # the summary table
    bad = tmp_path / "empty.jsonl"
    bad.write_text("")
    proc = subprocess.run([exe, "traces", "--traces", str(bad), "--out", str(tmp_path / "t")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_DATA and "empty" in proc.stderr and "Traceback" not in proc.stderr


def test_a_second_concurrent_run_on_the_same_output_is_refused(tmp_path: Path) -> None:
    from rlkd_bench.products import run_lock

    out = tmp_path / "o"
    with run_lock(out):  # stands in for a run in progress (flock is per open file, so this holds)
        res = run("build-gsrm-data", "--out", str(out), "--limit", "2", "--no-progress")
    assert res.exit_code == EXIT_USAGE and "another run is writing" in res.stderr
    assert run("build-gsrm-data", "--out", str(out), "--limit", "2", "--no-progress").exit_code == 0
