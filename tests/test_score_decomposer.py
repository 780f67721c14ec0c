"""``rlkd-bench score-decomposer`` and rlkd_bench/decompose/score.py: a decomposer scored against the
reference sets, with the heuristic, the paragraph split and the oracle beside it."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from rlkd_bench.cli import cli
from rlkd_bench.decompose import DecomposeResult
from rlkd_bench.decompose import score as S
from rlkd_bench.errors import EXIT_USAGE
from rlkd_bench.reward.matchers import make_matcher
from rlkd_bench.structure import parse_steps


def _run(args: list[str]):
    return CliRunner().invoke(cli, ["score-decomposer", *args, "--no-progress"])


def test_heuristic_and_baselines_on_every_set(tmp_path):
    out = tmp_path / "scores"
    res = _run(["--decomposer", "heuristic", "--set", "all", "--n", "6", "--out", str(out)])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert list(results["decomposers"]) == ["heuristic", "paragraphs", "oracle", "oracle-located"]
    assert set(results["sets"]) == set(S.SETS)
    assert results["tolerance"] == S.TOLERANCE and results["matcher"]["kind"] == "lexical"
    oracle = results["decomposers"]["oracle"]["sets"]
    for set_name, s in oracle.items():  # the ceiling: 1.0 on every metric, every set and domain
        for scope in [s["overall"], *s["by_domain"].values()]:
            for m in ("parse_rate", "precision", "recall", "f1", "reward", "meta", "subproblem", "answer"):
                assert scope[m] == 1.0, (set_name, m, scope[m])
            assert scope["step_error"] == scope["abs_step_error"] == 0.0
    bench = results["decomposers"]["heuristic"]["sets"]["benchmark"]
    assert set(bench["by_domain"]) == {"math", "code", "science", "puzzle"}
    assert bench["overall"]["n"] == 40 and bench["overall"]["parse_rate"] == 1.0
    assert 0 < bench["overall"]["f1"] < 1
    # the in-sample numbers are the ones bench/bench_structure.py and tests/test_reference_steps.py report
    insample = results["decomposers"]["heuristic"]["sets"]["in-sample"]["overall"]
    assert insample["f1"] == pytest.approx(0.574, abs=0.002)
    assert set(results["decomposers"]["heuristic"]["sets"]["synthetic"]["by_domain"]) == {
        "math (r1 wording)", "math (unseen wording)"}
    table = (out / "table.md").read_text()
    assert "| oracle | benchmark | 40 | 1.000 |" in table and "| heuristic | world |" in table
    assert "| oracle | benchmark |" in res.output  # printed too
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 * sum(s["n"] for s in results["sets"].values())
    # the reference's own steps placed from their answers, as a GSRM's are: below 1, the ceiling for F1
    located = results["decomposers"]["oracle-located"]["sets"]["held-out"]["overall"]
    assert located["reward"] == 1.0 and 0.5 < located["f1"] < 1.0


def test_bad_options_are_usage_errors(tmp_path):
    res = _run(["--set", "benchmrk", "--out", str(tmp_path / "x")])
    assert res.exit_code == EXIT_USAGE and "unknown set benchmrk" in res.output
    res = _run(["--decomposer", "heuristic", "--estimate", "--out", str(tmp_path / "x")])
    assert res.exit_code == EXIT_USAGE and "--estimate needs an LLM annotator" in res.output
    res = _run(["--matcher", "fuzzy", "--out", str(tmp_path / "x")])
    assert res.exit_code == EXIT_USAGE and "unknown matcher" in res.output


def test_unscorable_and_invalid_samples_are_counted_never_zero():
    refs = S.load_set("held-out")[:3]
    good = DecomposeResult(decomposition=refs[0].truth, raw="")
    failed = DecomposeResult(decomposition=None, error="request failed: HTTP 503")
    invalid = DecomposeResult(decomposition=None, raw="no tags here", error="invalid reply: no steps found")
    rows = S.score_results(refs, [good, failed, invalid], make_matcher("exact"))
    assert [r["status"] for r in rows] == ["ok", "unscorable", "invalid"]
    agg = S.aggregate(rows)
    assert agg["unscorable"] == 1 and agg["invalid"] == 1
    assert agg["parse_rate"] == 0.5 and agg["n_parse_rate"] == 2  # the failed request is not a parse failure
    assert agg["f1"] == 1.0 and agg["n_f1"] == 1  # located from its answers, the reference finds itself
    empty = S.aggregate(rows[1:])
    assert math.isnan(empty["f1"]) and empty["n_f1"] == 0


def test_locate_and_boundary_scores():
    text = "Restating.\n\nFirst, 2 + 3 = 5.\n\nThen 5 × 4 = 20. Check: 20 / 4 = 5.\n\nSo 20."
    d = parse_steps("[Meta-reasoning 1]: a\n[Sub-problem 1]: b?\n[Answer 1]: 5\n"
                    "[Meta-reasoning 2]: c\n[Sub-problem 2]: d?\n[Answer 2]: 20\n"
                    "[Meta-reasoning 3]: e\n[Sub-problem 3]: f?\n[Answer 3]: 99\n")
    where = S.locate(d.steps, text)
    assert where[:2] == [text.index("First"), text.index("Then")] and where[2] is None
    p, r, f1 = S.boundary_scores(where, [text.index("First"), text.index("Then")])
    assert (p, r) == (pytest.approx(2 / 3), 1.0)  # the unlocated step counts as a miss


def test_a_gsrm_checkpoint_is_scored(gsrm_checkpoint, tmp_path):
    """A barely trained tiny GSRM: whatever it writes is parsed with the one step parser and scored;
    what cannot be scored is NaN with a count, not 0."""
    out = tmp_path / "gsrm-scores"
    res = _run(["--decomposer", f"gsrm:{gsrm_checkpoint}", "--set", "held-out", "--limit", "2",
                "--max-new-tokens", "24", "--no-baselines", "--out", str(out)])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    o = results["decomposers"][f"gsrm:{gsrm_checkpoint}"]["sets"]["held-out"]["overall"]
    assert o["n"] == 2 and o["n_parse_rate"] == 2
    assert o["n_f1"] == round(o["parse_rate"] * 2)
    if o["n_f1"] == 0:
        assert math.isnan(o["f1"])


def test_rlkd_decompose_scores_the_reference_reply_as_perfect():
    """The task's scoring on the reply a perfect GSRM would write (the reference, rendered)."""
    import importlib.util

    from rlkd_bench.structure import render_steps
    from rlkd_bench.tasks import tasks_path

    spec = importlib.util.spec_from_file_location("decompose_utils", tasks_path() / "decompose_utils.py")
    du = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(du)
    docs = du.load_docs(set="held-out", matcher="exact")["test"]
    doc = next(d for d in docs if d["domain"] == "code")
    assert "Reasoning trace:" in doc["user"] and doc["system"]
    assert json.loads(doc["scorer"]) == {"set": "held-out", "matcher": "exact"}
    ref = du._refs("held-out")[doc["id"]]
    out = du.process_results(doc, [render_steps(ref.truth)])
    assert all(out[m] == 1.0 for m in ("parse_rate", "f1", "reward", "meta", "subproblem", "answer", "f1_code"))
    assert out["f1_math"] is None and out["unscorable"] == 0.0
    bad = du.process_results(doc, ["I think there are three steps."])
    assert bad["parse_rate"] == 0.0 and bad["f1"] is None and bad["unscorable"] == 1.0


def test_lm_eval_cli_runs_rlkd_decompose(tiny_model_dir, tmp_path):
    """The real lm_eval CLI on the tiny offline model: the task builds, generates and aggregates;
    a model that writes no steps gets parse rate 0 and NaN (not 0) for what needs steps."""
    import subprocess
    import sys

    from test_eval_cli import offline_env  # tests/ is on sys.path (rootdir conftest)

    env = offline_env()
    path = subprocess.run([sys.executable, "-m", "rlkd_bench.cli", "tasks-path"], capture_output=True, text=True,
                          env=env, check=True).stdout.strip()
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args", f"pretrained={tiny_model_dir}",
           "--tasks", "rlkd_decompose", "--include_path", path, "--limit", "2", "--gen_kwargs", "max_gen_toks=16",
           "--apply_chat_template", "--device", "cpu", "--batch_size", "4", "--log_samples", "--output_path", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=360, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["rlkd_decompose"]
    assert results["parse_rate,none"] == 0.0 and results["unscorable,none"] == 1.0
    assert math.isnan(results["f1,none"]) and math.isnan(results["f1_code,none"])
    rows = [json.loads(x) for x in next(out.rglob("samples_rlkd_decompose_*.jsonl")).read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["doc"]["id"].startswith("bench-")


def test_task_docs_keep_a_judge_password_out_of_the_log():
    import importlib.util

    from rlkd_bench.tasks import tasks_path

    spec = importlib.util.spec_from_file_location("decompose_utils", tasks_path() / "decompose_utils.py")
    du = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(du)
    docs = du.load_docs(set="held-out", matcher="judge:http://user:s3cret@127.0.0.1:9/v1")["test"]
    assert len(docs) == 18 and not any("s3cret" in json.dumps(d) for d in docs)


def test_estimate_for_a_paid_annotator_calls_nothing(tmp_path):
    res = _run(["--decomposer", "openai:gpt-4o", "--set", "benchmark", "--estimate", "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    assert "expected cost" in res.output and "40" in res.output
    assert not (tmp_path / "e").exists()


def test_a_gsrm_endpoint_with_the_engine_options_cache_and_usage(server, tmp_path):
    """``gsrm:<url>`` through a real OpenAI-compatible server: the engine options of the other
    commands apply, tokens are counted, and a rerun is answered from the request cache."""
    base_url, model_id, counter = server
    out = tmp_path / "gsrm-url"
    args = ["--decomposer", f"gsrm:{base_url}", "--gsrm-model", model_id, "--max-new-tokens", "12",
            "--set", "held-out", "--limit", "2", "--no-baselines", "--concurrency", "2", "--out", str(out)]
    res = _run(args)
    assert res.exit_code == 0, res.output
    assert counter.count == 2
    first = json.loads((out / "results.json").read_text())["decomposers"][f"gsrm:{base_url}"]
    assert first["usage"]["prompt_tokens"] > 0 and first["cached"] == 0
    o = first["sets"]["held-out"]["overall"]
    assert o["n_parse_rate"] == 2 and o["unscorable"] == 0  # the server answered: a reply, valid or not
    res = _run(args)
    assert res.exit_code == 0, res.output
    assert counter.count == 2  # nothing sent again
    again = json.loads((out / "results.json").read_text())["decomposers"][f"gsrm:{base_url}"]
    assert again["cached"] == 2 and again["sets"] == first["sets"]


def test_credentials_in_a_spec_reach_no_file(tmp_path):
    """A judge URL with a password: the oracle's comparisons are identical texts, so nothing is
    sent; the password is in no output file and not on screen."""
    out = tmp_path / "s"
    res = _run(["--decomposer", "oracle", "--no-baselines", "--set", "held-out", "--limit", "2", "--matcher",
                "judge:http://user:s3cret@127.0.0.1:9/v1", "--max-retries", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "s3cret" not in res.output
    for f in out.iterdir():
        assert "s3cret" not in f.read_text(), f.name
    assert json.loads((out / "results.json").read_text())["decomposers"]["oracle"]["sets"]["held-out"][
        "overall"]["reward"] == 1.0
