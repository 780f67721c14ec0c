"""Stages that never lose or mix data silently, exit with true codes, and fail with words (issue 9).

Each test runs the CLI the way a user meets it (click's CliRunner, or a subprocess where the
process matters: umask, environment, tracebacks) and failed before the fix it goes with.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from rlkd_bench.cli import cli
from rlkd_bench.errors import EXIT_DATA, EXIT_RUNTIME, EXIT_USAGE
from rlkd_bench.sources import bundled_traces_path

NO_PROGRESS = "--no-progress"


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, env=env)


def bundled(n: int) -> list[dict]:
    rows = [json.loads(x) for x in bundled_traces_path().read_text(encoding="utf-8").splitlines()]
    return rows[:n]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def cli_exe() -> str:
    exe = shutil.which("rlkd-bench", path=str(Path(sys.executable).parent))
    assert exe, "the console script is installed with the package"
    return exe


def offline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", **extra)
    return env


# ---- 1. a rerun with changed traces never pairs new problems with old steps ----------------------


def test_rerun_with_changed_traces_redoes_exactly_the_changed_rows(tmp_path: Path) -> None:
    import datasets

    rows = bundled(4)
    out = tmp_path / "gsrm"
    assert run("build-gsrm-data", "--traces", str(write_rows(tmp_path / "a.jsonl", rows)), "--out", str(out),
               "--test-size", "0", NO_PROGRESS).exit_code == 0
    state = json.loads((out / "run.json").read_text())
    assert state["input"]["sha256"] and state["settings"]["name"] == "heuristic"

    changed = [dict(r) for r in rows]  # same ids; the first two swap problem and reasoning
    for a, b in ((0, 1), (1, 0)):
        changed[a].update(problem=rows[b]["problem"], reasoning=rows[b]["reasoning"], answer=rows[b]["answer"])
    res = run("build-gsrm-data", "--traces", str(write_rows(tmp_path / "b.jsonl", changed)), "--out", str(out),
              "--test-size", "0", NO_PROGRESS)
    assert res.exit_code == 0, res.output
    assert "annotated again" in res.stderr and rows[0]["id"] in res.stderr
    counts = manifest(out)["counts"]
    assert (counts["ok"], counts["resumed"], counts["redone_changed"]) == (4, 2, 2)
    assert json.loads((out / "run.json").read_text())["input"]["sha256"] != state["input"]["sha256"]

    by_id = {t["id"]: t for t in changed}
    annotations = jsonl(out / "annotations.jsonl")
    assert sorted(a["id"] for a in annotations) == sorted(by_id), "one row per id, none twice"
    # every SFT example pairs the current problem and trace with the steps made from them
    from rlkd_bench.decompose.heuristic import HeuristicDecomposer
    from rlkd_bench.structure import Decomposition, render_steps

    fresh = {t["id"]: r for t, r in zip(changed, HeuristicDecomposer().decompose(changed), strict=True)}
    for a in annotations:
        assert Decomposition.from_dict(a) == fresh[a["id"]].decomposition, a["id"]
    for ex in datasets.load_from_disk(str(out / "sft"))["train"]:
        user, steps = ex["messages"][1]["content"], ex["messages"][2]["content"]
        assert by_id[ex["id"]]["problem"].strip() in user and by_id[ex["id"]]["reasoning"].strip() in user
        assert steps == render_steps(fresh[ex["id"]].decomposition)


# ---- 2. rows rejected at load never count as done ----------------------------------------------


def _dup_and_bad(tmp_path: Path) -> tuple[Path, Path, list[dict]]:
    a, b, c = bundled(3)
    broken = dict(c, problem=3)  # a bad field: rejected at load under c's id
    v1 = write_rows(tmp_path / "v1.jsonl", [a, dict(b, id=a["id"]), broken])  # b carries a duplicate id
    v2 = write_rows(tmp_path / "v2.jsonl", [a, c])  # fixed: no duplicate, c's problem is text
    return v1, v2, [a, b, c]


@pytest.mark.parametrize("flags", [[], ["--retry-rejects"]])
def test_load_rejects_never_mark_an_id_done(tmp_path: Path, flags: list[str]) -> None:
    v1, v2, (a, _, c) = _dup_and_bad(tmp_path)
    out = tmp_path / "gsrm"
    res = run("build-gsrm-data", "--traces", str(v1), "--on-error", "skip", "--out", str(out), "--test-size", "0",
              NO_PROGRESS)
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in jsonl(out / "annotations.jsonl")] == [a["id"]], "the valid first row is annotated"
    rejects = jsonl(out / "rejects.jsonl")
    assert sorted((r["line"], r["field"]) for r in rejects) == [(2, "id"), (3, "problem")]
    counts = manifest(out)["counts"]
    assert (counts["ok"], counts["rejected"], counts["resumed"], counts["pending"]) == (1, 2, 0, 0)
    assert counts["rejected"] == len(rejects)

    res = run("build-gsrm-data", "--traces", str(v2), "--out", str(out), "--test-size", "0", NO_PROGRESS, *flags)
    assert res.exit_code == 0, res.output
    assert sorted(r["id"] for r in jsonl(out / "annotations.jsonl")) == sorted([a["id"], c["id"]])
    assert jsonl(out / "rejects.jsonl") == [], "the old load rejects describe another input"
    counts = manifest(out)["counts"]
    assert (counts["ok"], counts["rejected"], counts["resumed"], counts["pending"]) == (2, 0, 1, 0)


# ---- 3. --retry-rejects writes its new rejects to the file, and really retries ---------------------


def test_retry_rejects_writes_new_rejects_into_the_file(tmp_path: Path) -> None:
    rows = bundled(2) + [dict(bundled(3)[2], reasoning="Hmm.", answer="")]  # the heuristic finds no answer
    traces = write_rows(tmp_path / "t.jsonl", rows)
    out = tmp_path / "gsrm"
    assert run("build-gsrm-data", "--traces", str(traces), "--out", str(out), NO_PROGRESS).exit_code == 0
    assert [r["id"] for r in jsonl(out / "rejects.jsonl")] == [rows[2]["id"]]
    for n in (1, 2):
        res = run("build-gsrm-data", "--traces", str(traces), "--out", str(out), "--retry-rejects", NO_PROGRESS)
        assert res.exit_code == 0, res.output
        rejects = jsonl(out / "rejects.jsonl")
        assert [(r["id"], r["retries"]) for r in rejects] == [(rows[2]["id"], n)]
        counts = manifest(out)["counts"]
        assert counts["rejected"] == len(rejects) == 1 and counts["retried_rejects"] == 1
        assert counts["resumed"] == 2


def test_a_retried_request_has_its_own_cache_identity_but_the_same_messages() -> None:
    from rlkd_bench.decompose.annotate import RETRY_KEY, Annotator

    a = Annotator("m", max_tokens=16)
    item = {"id": "t", "domain": "math", "problem": "What is 2+2?", "reasoning": "2+2 is 4."}
    first, retry1, retry2 = (a.request(a._state(it), 1) for it in
                             (item, dict(item, **{RETRY_KEY: 1}), dict(item, **{RETRY_KEY: 2})))
    assert first.messages == retry1.messages == retry2.messages and first.params == retry1.params
    assert len({r.cache_key("m") for r in (first, retry1, retry2)}) == 3


@pytest.mark.slow
def test_retry_rejects_sends_the_requests_again_with_the_cache_on(tiny_server, tmp_path: Path) -> None:
    """The random tiny model's replies never validate: every row is a reject; --retry-rejects must
    reach the server again instead of reading the reply it rejected from the cache."""
    base_url, model_id, counter = tiny_server
    items = [{"id": f"t{i}", "domain": "math", "problem": f"What is {i}+{i}?",
              "reasoning": f"{i} plus {i} is {2 * i}."} for i in range(2)]
    traces = write_rows(tmp_path / "t.jsonl", items)
    out = tmp_path / "gsrm"
    args = ["build-gsrm-data", "--traces", str(traces), "--annotator", f"openai:{model_id}", "--base-url", base_url,
            "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--max-tokens", "8",
            "--max-invalid-retries", "0", NO_PROGRESS]
    counter.reset()
    assert run(*args).exit_code == EXIT_DATA
    assert counter.count == 2
    counter.reset()
    assert run(*args).exit_code == EXIT_DATA  # a plain rerun resumes: nothing is sent
    assert counter.count == 0
    counter.reset()
    res = run(*args, "--retry-rejects")
    assert res.exit_code == EXIT_DATA, res.output
    assert counter.count == 2, "each retried row reaches the server"
    assert sorted((r["id"], r["retries"]) for r in jsonl(out / "rejects.jsonl")) == [("t0", 1), ("t1", 1)]


# ---- 4. locks, consistent products, publish checks, one product per directory ------------------


@pytest.mark.parametrize("command", [["traces"], ["build-rlkd-data", NO_PROGRESS]])
def test_every_product_command_takes_the_run_lock(tmp_path: Path, command: list[str]) -> None:
    from rlkd_bench.products import run_lock

    out = tmp_path / "o"
    with run_lock(out):  # stands in for a run in progress
        res = run(*command, "--out", str(out), "--limit", "3")
    assert res.exit_code == EXIT_USAGE and "another run is writing" in res.stderr
    assert not (out / "manifest.json").exists()
    assert run(*command, "--out", str(out), "--limit", "3").exit_code == 0


def test_a_failed_rlkd_data_rerun_leaves_a_manifest_that_says_so_and_publish_refuses(tmp_path: Path) -> None:
    out = tmp_path / "rlkd"
    assert run("build-rlkd-data", "--out", str(out), "--limit", "6", NO_PROGRESS).exit_code == 0
    assert (out / "dataset").is_dir() and manifest(out)["status"] == "ok"
    no_gold = write_rows(tmp_path / "nogold.jsonl", [dict(r, gold="") for r in bundled(3)])
    res = run("build-rlkd-data", "--traces", str(no_gold), "--out", str(out), NO_PROGRESS)
    assert res.exit_code == EXIT_DATA
    m = manifest(out)
    assert m["status"] == "failed" and "no usable row" in m["error"]
    assert not (out / "dataset").exists(), "the old dataset does not belong to this manifest"
    assert all((out / f).exists() for f in m["files"])
    assert len(jsonl(out / "rejects.jsonl")) == m["counts"]["rejected"] == 3
    assert "failed" in (out / "README.md").read_text()
    res = run("publish", str(out), "--repo", "someone/x", "--dry-run")
    assert res.exit_code == EXIT_USAGE and "failed" in res.stderr


def test_publish_checks_the_files_the_manifest_lists(tmp_path: Path) -> None:
    out = tmp_path / "rlkd"
    assert run("build-rlkd-data", "--out", str(out), "--limit", "6", NO_PROGRESS).exit_code == 0
    assert set(manifest(out)["checksums"]) == {"dataset/", "rejects.jsonl"}
    assert run("publish", str(out), "--repo", "someone/x", "--dry-run").exit_code == 0
    (out / "rejects.jsonl").write_text('{"id": "forged"}\n')
    res = run("publish", str(out), "--repo", "someone/x", "--dry-run")
    assert res.exit_code == EXIT_USAGE and "rejects.jsonl changed" in res.stderr
    shutil.rmtree(out / "dataset")
    res = run("publish", str(out), "--repo", "someone/x", "--dry-run")
    assert res.exit_code == EXIT_USAGE and "not there: dataset/" in res.stderr


def test_publish_uploads_only_what_the_manifest_lists(tmp_path: Path) -> None:
    out = tmp_path / "traces"
    assert run("traces", "--out", str(out), "--limit", "3").exit_code == 0
    (out / "notes-from-elsewhere.txt").write_text("not part of the product")
    res = run("publish", str(out), "--repo", "someone/x", "--dry-run")
    assert res.exit_code == 0, res.output
    assert "traces.jsonl" in res.output and "notes-from-elsewhere" not in res.output


@pytest.mark.parametrize("first, second", [
    (["build-gsrm-data", "--limit", "3", NO_PROGRESS], ["traces", "--limit", "3"]),
    (["traces", "--limit", "3"], ["build-rlkd-data", "--limit", "3", NO_PROGRESS]),
    (["build-rlkd-data", "--limit", "3", NO_PROGRESS], ["build-gsrm-data", "--limit", "3", NO_PROGRESS]),
])
def test_out_pointing_at_another_products_directory_is_refused(tmp_path: Path, first, second) -> None:
    out = tmp_path / "product"
    assert run(*first, "--out", str(out)).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    res = run(*second, "--out", str(out))
    assert res.exit_code == EXIT_USAGE and f"holds a '{manifest(out)['product']}' product" in res.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


# ---- 7. nothing succeeded: exit 70 with the reasons --------------------------------------------


def _closed_port() -> str:
    sys.path.insert(0, str(Path(__file__).parent))
    from servers import free_port

    return f"http://127.0.0.1:{free_port()}/v1"  # nobody listens: connection refused at once


@pytest.fixture
def refusing_server(server):
    """The session's real tiny server behind its proxy, which refuses every chat request with a
    permanent 400 (as a server does for a prompt over the context length); six are queued, so a
    retry would use more than one per request. Yields ``(base_url, model_id, proxy)``."""
    from faultproxy import Fault  # tests/ is on sys.path (rootdir conftest)

    base_url, model_id, proxy = server
    proxy.inject(*[Fault("error", status=400, message="This model's maximum context length is 8 tokens",
                         code="context_length_exceeded")] * 6)
    return base_url, model_id, proxy


def _engine_args(base_url: str) -> list[str]:
    return ["--base-url", base_url, "--max-retries", "0", "--timeout", "10", NO_PROGRESS]


def test_build_gsrm_data_with_the_server_down_exits_70_and_keeps_rows_pending(tmp_path: Path) -> None:
    out = tmp_path / "gsrm"
    res = run("build-gsrm-data", "--annotator", "openai:m", "--limit", "3", "--out", str(out),
              *_engine_args(_closed_port()))
    assert res.exit_code == EXIT_RUNTIME, res.output
    assert "every request failed (3 row(s))" in res.stderr and "connection error" in res.stderr
    m = manifest(out)
    assert m["status"] == "failed" and m["counts"]["pending"] == 3 and m["counts"]["ok"] == 0
    assert jsonl(out / "rejects.jsonl") == [], "a server that is down rejects nothing: rerun to try again"


def test_a_permanent_http_400_is_a_reject_with_its_reason_and_exit_70(tmp_path: Path, refusing_server) -> None:
    base_url, model_id, proxy = refusing_server
    out = tmp_path / "gsrm"
    res = run("build-gsrm-data", "--annotator", f"openai:{model_id}", "--limit", "2", "--out", str(out),
              *_engine_args(base_url))
    assert res.exit_code == EXIT_RUNTIME, res.output
    assert "HTTP 400" in res.stderr and "maximum context length" in res.stderr
    assert proxy.count == 2 and proxy.pending_faults == 4, "a permanent error is not retried"
    rejects = jsonl(out / "rejects.jsonl")
    assert len(rejects) == 2 and all("HTTP 400" in r["reason"] and "context length" in r["reason"]
                                     for r in rejects)
    m = manifest(out)
    assert m["counts"]["rejected"] == 2 and m["counts"]["pending"] == 0 and m["status"] == "failed"
    [error] = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert "refused by the server for good" in error and "pending" not in error, error


def test_build_rlkd_data_with_the_server_down_exits_70_not_65(tmp_path: Path) -> None:
    out = tmp_path / "rlkd"
    res = run("build-rlkd-data", "--decomposer", "openai:m", "--limit", "3", "--out", str(out),
              *_engine_args(_closed_port()))
    assert res.exit_code == EXIT_RUNTIME, res.output
    assert "every decomposition request failed (3 trace(s))" in res.stderr and "connection error" in res.stderr
    assert manifest(out)["status"] == "failed" and not (out / "dataset").exists()


def test_traces_generate_with_every_request_failing_exits_70(tmp_path: Path) -> None:
    problems = write_rows(tmp_path / "p.jsonl", [{"id": "p1", "problem": "What is 2+2?", "gold": "4"}])
    out = tmp_path / "traces"
    res = run("traces", "--generate", "--teacher", "openai:m", "--traces", str(problems), "--n", "2",
              "--out", str(out), *_engine_args(_closed_port())[:-1])
    assert res.exit_code == EXIT_RUNTIME, res.output
    assert "every teacher request failed (2)" in res.stderr and "connection error" in res.stderr
    assert manifest(out)["status"] == "failed"


# ---- 8. errors, not tracebacks -----------------------------------------------------------------


def test_csv_traces_read_through_datasets(tmp_path: Path) -> None:
    import csv

    rows = bundled(3)
    path = tmp_path / "t.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "domain", "problem", "reasoning", "answer", "gold"],
                           extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "traces"
    res = run("traces", "--traces", str(path), "--out", str(out))
    assert res.exit_code == 0, res.output
    got = jsonl(out / "traces.jsonl")
    assert [(r["id"], r["problem"], r["reasoning"], r["gold"]) for r in got] == [
        (r["id"], r["problem"], r["reasoning"], r["gold"]) for r in rows]


@pytest.mark.parametrize("source, words", [
    ("nope", ["no such file or directory", "not a Hub dataset id", ".csv"]),
    ("open-r1/OpenR1-Math-220k", ["cannot be looked up as a Hub dataset", "offline", "hf download",
                                  "--traces DIR"]),
    ("notes.txt", ["cannot read .txt", ".parquet"]),
])
def test_unreadable_sources_are_errors_not_tracebacks(tmp_path: Path, source: str, words: list[str]) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    proc = subprocess.run([cli_exe(), "traces", "--traces", source, "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=offline_env())
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in proc.stderr, (w, proc.stderr)
    assert not (tmp_path / "o").exists()


def test_out_below_a_regular_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    proc = subprocess.run([cli_exe(), "traces", "--out", str(tmp_path / "afile" / "o"), "--limit", "2"],
                          capture_output=True, text=True, timeout=120, env=offline_env())
    assert proc.returncode == EXIT_USAGE and "is a file" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([cli_exe(), "traces", "--out", str(tmp_path / "afile"), "--limit", "2"],
                          capture_output=True, text=True, timeout=120, env=offline_env())
    assert proc.returncode == EXIT_USAGE and "is a file" in proc.stderr and "Traceback" not in proc.stderr


def read_only_runner(ro: Path):
    """How to run a command that meets ``ro`` read-only: a 0555 directory for a normal user; for
    root (who may write there anyway) a read-only tmpfs mounted on it in a private mount namespace
    of that one command. None when neither is possible here."""
    if os.geteuid() != 0:
        ro.chmod(0o555)
        return lambda cmd: cmd
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o ro tmpfs '{ro}'"],
                           capture_output=True)
    if probe.returncode != 0:
        return None
    return lambda cmd: ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o ro tmpfs '{ro}' && exec \"$@\"",
                        "sh", *cmd]


def test_read_only_out_is_an_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    wrap = read_only_runner(ro)
    if wrap is None:
        pytest.skip("running as root without a way to mount a read-only directory")
    try:
        for out in (ro, ro / "below"):
            proc = subprocess.run(wrap([cli_exe(), "traces", "--out", str(out), "--limit", "2"]),
                                  capture_output=True, text=True, timeout=120, env=offline_env())
            assert proc.returncode == EXIT_USAGE and "not writable" in proc.stderr, proc.stderr
            assert "Traceback" not in proc.stderr
    finally:
        ro.chmod(0o755)


# ---- 9. smaller ones ---------------------------------------------------------------------------


@pytest.mark.parametrize("value, ok", [("1.5", False), ("2.5", False), ("0.5", True), ("2", True), ("0", True)])
def test_test_size_is_a_fraction_or_a_whole_count(tmp_path: Path, value: str, ok: bool) -> None:
    res = run("build-gsrm-data", "--limit", "4", "--test-size", value, "--out", str(tmp_path / "o"), NO_PROGRESS)
    if ok:
        assert res.exit_code == 0, res.output
    else:
        assert res.exit_code == EXIT_USAGE and "whole number" in res.output
        assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("fields, words", [
    (["problem=problem", "reasoning=reasoning", "problem=reasoning"], "given twice"),
    (["problem=problem", "reasoning=problem"], "both read column"),
])
def test_field_mappings_that_cannot_be_meant_are_refused(tmp_path: Path, fields: list[str], words: str) -> None:
    traces = write_rows(tmp_path / "t.jsonl", bundled(2))
    args = [a for f in fields for a in ("--field", f)]
    res = run("traces", "--traces", str(traces), *args, "--out", str(tmp_path / "o"))
    assert res.exit_code == EXIT_USAGE and words in res.stderr


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_products_are_written_with_the_modes_the_umask_gives(tmp_path: Path, umask, file_mode, dir_mode) -> None:
    out = tmp_path / "gsrm"
    proc = subprocess.run([cli_exe(), "build-gsrm-data", "--out", str(out), "--limit", "4", NO_PROGRESS],
                          capture_output=True, text=True, timeout=120, env=offline_env(), umask=umask)
    assert proc.returncode == 0, proc.stderr
    modes = {p.relative_to(out).as_posix(): p.stat().st_mode & 0o777 for p in out.rglob("*")}
    assert modes["manifest.json"] == modes["annotations.jsonl"] == modes["sft/train/state.json"] == file_mode
    assert modes["sft"] == modes["sft/train"] == dir_mode
    assert {m for p, m in modes.items() if (out / p).is_file()} == {file_mode}


@pytest.mark.parametrize("args", [
    ["build-gsrm-data", "--annotator", "openai:gpt-4o", NO_PROGRESS],
    ["build-rlkd-data", "--decomposer", "openai:gpt-4o", NO_PROGRESS],
    ["traces", "--generate", "--teacher", "openai:gpt-4o"],
])
def test_a_missing_api_key_stops_before_any_output_exists(tmp_path: Path, args: list[str]) -> None:
    problems = write_rows(tmp_path / "p.jsonl", [{"id": "p1", "problem": "What is 2+2?", "gold": "4",
                                                  "reasoning": "2+2=4. The answer is 4."}])
    out = tmp_path / "o"
    proc = subprocess.run([cli_exe(), *args, "--traces", str(problems), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, env=offline_env())
    assert proc.returncode == EXIT_USAGE and "OPENAI_API_KEY" in proc.stderr, proc.stderr
    assert not out.exists(), "no lock, no empty files"


def test_malformed_json_message_reads_once(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "problem": "unterminated\n')
    res = run("traces", "--traces", str(bad), "--out", str(tmp_path / "o"))
    assert res.exit_code == EXIT_DATA
    assert f"{bad}:1: malformed JSON (Unterminated string starting at column 24)" in res.stderr
    assert "at at" not in res.stderr


def test_rowlog_discard_keeps_appending_into_the_file_on_disk(tmp_path: Path) -> None:
    from rlkd_bench.products import RowLog

    path = write_rows(tmp_path / "rows.jsonl", [{"id": "a"}, {"id": "b"}, {"stage": "load", "id": "a", "line": 3}])
    log = RowLog(path, key=lambda r: f"load:{r['line']}" if r.get("stage") == "load" else r.get("id"),
                 keep=lambda r: r.get("stage") != "load")
    assert log.done == {"a", "b"}
    assert log.discard(["a", "zzz"]) == 1
    log.append({"id": "c"})
    log.close()
    assert jsonl(path) == [{"id": "b"}, {"id": "c"}]
