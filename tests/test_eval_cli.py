"""The real lm_eval CLI, as a subprocess, on the tiny offline model: rlkd_structure and
rlkd_diversity found through ``--include_path "$(rlkd-bench tasks-path)"``, every metric in the
results and within its range, and the per-sample log showing k samples scored per problem. Then
``rlkd-bench eval`` (lm_eval.simple_evaluate in process) with its overrides."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

K = 8  # rlkd_diversity's repeats as shipped
STRUCTURE_RANGES = {"structure_alignment": (0, 1), "matched_prefix": (0, 10), "step_ratio": (0, 10),
                    "undecomposable": (0, 1), "unscored": (0, 1), "accuracy": (0, 1)}
DIVERSITY_RANGES = {"distinct_structures": (0, K), "structural_divergence": (0, 1), "surface_divergence": (0, 1),
                    "distinct_2": (0, 1), "undecomposable": (0, 1), "n_samples": (K, K),
                    "structure_alignment": (0, 1), "matched_prefix": (0, 10), "step_ratio": (0, 10),
                    "unscored": (0, 1),
                    **{f"pass_at_{k}": (0, 1) for k in (1, 2, 4, 8)}}


def offline_env() -> dict[str, str]:
    """Offline, and no RLKD_* setting inherited from the shell running the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLKD_") or k == "RLKD_CACHE_DIR"}
    return {**env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


ALIGNMENT = ("structure_alignment", "matched_prefix", "step_ratio")  # measured on the scored samples only


def check_ranges(metrics: dict, ranges: dict, filter_key: str) -> None:
    """Every metric a float in its range; the alignment figures NaN exactly when no sample was
    scored (the tiny model rarely closes its thinking), never a 0 that measured nothing."""
    nothing_scored = metrics[f"unscored,{filter_key}"] == 1.0
    for name, (lo, hi) in ranges.items():
        value = metrics[f"{name},{filter_key}"]
        assert isinstance(value, float), (name, value)
        if name in ALIGNMENT:
            assert math.isnan(value) == nothing_scored, (name, value)
            if nothing_scored:
                continue
        assert lo <= value <= hi, (name, value)


def test_lm_eval_cli_runs_the_structure_tasks(tiny_model_dir, tmp_path):
    env = offline_env()
    path = subprocess.run([sys.executable, "-m", "rlkd_bench.cli", "tasks-path"], capture_output=True, text=True,
                          env=env, check=True).stdout.strip()
    assert (Path(path) / "rlkd_structure.yaml").is_file()
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args", f"pretrained={tiny_model_dir}",
           "--tasks", "rlkd_structure,rlkd_diversity", "--include_path", path, "--limit", "2",
           "--gen_kwargs", "max_gen_toks=16", "--apply_chat_template", "--device", "cpu", "--batch_size", "16",
           "--log_samples", "--output_path", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=360, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    results = json.loads(next(out.rglob("results_*.json")).read_text())
    check_ranges(results["results"]["rlkd_structure"], STRUCTURE_RANGES, "scored")
    div = results["results"]["rlkd_diversity"]
    check_ranges(div, DIVERSITY_RANGES, "scored")
    passes = [div[f"pass_at_{k},scored"] for k in (1, 2, 4, 8)]
    assert passes == sorted(passes)  # more tries never pass less often
    assert results["n-samples"]["rlkd_diversity"] == {"original": 40, "effective": 2}

    rows = [json.loads(x) for x in next(out.rglob("samples_rlkd_diversity_*.jsonl")).read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:  # k samples generated, all k kept and scored by the filter, all k in the metrics
        scored = json.loads(row["filtered_resps"][0])["samples"]
        assert len(row["resps"][0]) == len(scored) == K and row["n_samples"] == K
        assert [s["completion"] for s in scored] == row["resps"][0]
        assert all(s["steps"] is not None or s["error"] for s in scored)  # a decomposition or the reason
        assert json.loads(row["doc"]["scorer"])["decomposer"] == "heuristic"
    rows = [json.loads(x) for x in next(out.rglob("samples_rlkd_structure_*.jsonl")).read_text().splitlines()]
    assert len(rows) == 2 and all(len(r["filtered_resps"][0]) == 1 and "structure_alignment" in r for r in rows)
    rec = json.loads(rows[0]["filtered_resps"][0][0])  # the scorer's record: a decomposition or the reason
    assert rec["completion"] == rows[0]["resps"][0][0] and (rec["steps"] is not None or rec["error"])


def test_plain_lm_eval_without_chat_template_and_with_credentials(tiny_model_dir, tmp_path):
    """Plain `lm_eval` as the task card allows it: no --apply_chat_template (the system text and the
    problem a blank line apart), and a judge URL with a password and an api_key in --metadata, which
    no file lm_eval writes may hold. Unscored samples log null, not 0."""
    env = offline_env()
    path = subprocess.run([sys.executable, "-m", "rlkd_bench.cli", "tasks-path"], capture_output=True, text=True,
                          env=env, check=True).stdout.strip()
    judge = "judge:http://me:pw-s3cret@127.0.0.1:9/v1?api_key=qk-123456"  # nothing listens there
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args", f"pretrained={tiny_model_dir}",
           "--tasks", "rlkd_structure", "--include_path", path, "--limit", "2", "--gen_kwargs", "max_gen_toks=8",
           "--device", "cpu", "--batch_size", "4", "--log_samples", "--output_path", str(out),
           "--metadata", json.dumps({"matcher": judge, "timeout_s": 20})]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=360, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    files = [f for f in out.rglob("*") if f.is_file()]
    assert {f.name.split("_")[0] for f in files} >= {"results", "samples"}
    for f in files:
        text = f.read_text(encoding="utf-8")
        assert "pw-s3cret" not in text and "qk-123456" not in text, f
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    assert results["configs"]["rlkd_structure"]["metadata"]["matcher"] == \
        "judge:http://***@127.0.0.1:9/v1?api_key=***"
    check_ranges(results["results"]["rlkd_structure"], STRUCTURE_RANGES, "scored")

    rows = [json.loads(x) for x in next(out.rglob("samples_rlkd_structure_*.jsonl")).read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        doc = row["doc"]
        prompt = row["arguments"]["gen_args_0"]["arg_0"]
        assert prompt == doc["system"] + "\n\n" + doc["prompt"]  # "...</answer>.\n\nA guitar costs ..."
        rec = json.loads(row["filtered_resps"][0][0])  # one completion, its scorer record
        if rec["alignment"] is None:
            assert row["unscored"] == 1.0 and row["structure_alignment"] is None


def test_rlkd_bench_eval_wraps_simple_evaluate(tiny_model_dir, tmp_path, monkeypatch):
    """The diversity task and the accuracy group in one run, the suite on local copies in its Hub
    datasets' schemas (--metadata), with --repeats: settings recorded, k samples each, group mean."""
    from click.testing import CliRunner

    from rlkd_bench.cli import cli

    for k, v in offline_env().items():
        monkeypatch.setenv(k, v)
    for k in [k for k in os.environ if k.startswith("RLKD_") and k != "RLKD_CACHE_DIR"]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("RLKD_MATCHER", "exact")  # the environment setting is what gets used and recorded
    copies = {"aime24_data": {"id": 1, "problem": "Find 2 + 3.", "solution": ".", "answer": "5", "url": "u",
                              "year": "2024"},
              "math500_data": {"problem": "Compute $1/2$.", "solution": ".", "answer": "\\frac{1}{2}",
                               "subject": "Algebra", "level": 1, "unique_id": "test/algebra/1.json"},
              "gpqa_data": {"Question": "Which?", "Correct Answer": "this", "Incorrect Answer 1": "a",
                            "Incorrect Answer 2": "b", "Incorrect Answer 3": "c"}}
    metadata = {}
    for key, row in copies.items():
        (tmp_path / f"{key}.jsonl").write_text(json.dumps(row) + "\n")
        metadata[key] = str(tmp_path / f"{key}.jsonl")
    out = tmp_path / "eval"
    res = CliRunner().invoke(cli, ["eval", str(tiny_model_dir), "--tasks", "rlkd_diversity,rlkd_reasoning",
                                   "--limit", "1", "--repeats", "3", "--max-gen-toks", "8", "--device", "cpu",
                                   "--batch-size", "12", "--metadata", json.dumps(metadata),
                                   "--output-path", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    results = json.loads((out / "results.json").read_text())
    assert results["rlkd"]["metadata"]["matcher"] == "exact"
    assert results["configs"]["rlkd_diversity"]["metadata"]["matcher"] == "exact"
    assert results["rlkd"]["scorer"]["matcher"]["kind"] == "exact"
    assert results["rlkd"]["repeats"] == dict.fromkeys(
        ["rlkd_diversity", "rlkd_aime24", "rlkd_math500", "rlkd_gpqa_diamond"], 3)
    assert results["results"]["rlkd_diversity"]["n_samples,scored"] == 3.0
    for task in ("rlkd_aime24", "rlkd_math500", "rlkd_gpqa_diamond"):
        assert results["results"][task]["n_samples,all_samples"] == 3.0
        assert 0.0 <= results["results"][task]["pass_at_1,all_samples"] <= 1.0
    assert 0.0 <= results["results"]["rlkd_reasoning"]["pass_at_1,all_samples"] <= 1.0
    rows = [json.loads(x) for x in (out / "samples_rlkd_diversity.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and len(json.loads(rows[0]["filtered_resps"][0])["samples"]) == 3
    # --max-gen-toks 8 holds although the tiny checkpoint's generation_config says max_new_tokens 64
    # (re-tokenising decoded text can give a few more tokens than were generated, never 8 -> 64)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = [t for r in rows[0]["resps"] for t in (r if isinstance(r, list) else [r])]
    assert len(texts) == 3 and max(len(tok(t)["input_ids"]) for t in texts) <= 20, texts
    rows = [json.loads(x) for x in (out / "samples_rlkd_math500.jsonl").read_text().splitlines()]
    assert rows[0]["doc"]["gold"] == "\\frac{1}{2}" and len(rows[0]["filtered_resps"][0]) == 3


def test_rlkd_bench_eval_through_a_completions_server(tiny_server, tmp_path, monkeypatch):
    """--model-backend local-completions against a real `transformers serve`: the chat template is
    rendered locally (the same prompt as the hf backend) and every one of the k samples is a request."""
    from click.testing import CliRunner

    from rlkd_bench.cli import cli

    base_url, model_id, proxy = tiny_server
    for k, v in offline_env().items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "eval"
    res = CliRunner().invoke(cli, ["eval", model_id, "--model-backend", "local-completions", "--base-url", base_url,
                                   "--tasks", "rlkd_diversity", "--limit", "1", "--repeats", "2",
                                   "--max-gen-toks", "4", "--output-path", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    rows = [json.loads(x) for x in (out / "samples_rlkd_diversity.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and len(json.loads(rows[0]["filtered_resps"][0])["samples"]) == 2
    assert rows[0]["n_samples"] == 2
    prompt = rows[0]["arguments"][0][0]
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["model_backend"] == "local-completions"
