"""``rlkd-bench eval``'s own logic, without a model: backend arguments, the unseeded API sampling,
the task metadata it records."""

from __future__ import annotations

import pytest

from rlkd_bench.errors import ConfigError
from rlkd_bench.evaluate import model_args_for, prepare_api_model, structure_metadata


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch):
    from rlkd_bench.tasks.evaldata import ENV

    for name in ENV.values():
        monkeypatch.delenv(name, raising=False)


def test_model_args_per_backend():
    assert model_args_for("hf", "out/student", extra="dtype=bfloat16") == {"pretrained": "out/student",
                                                                         "dtype": "bfloat16"}
    assert model_args_for("vllm", "m", extra="tensor_parallel_size=2")["tensor_parallel_size"] == 2
    api = model_args_for("local-completions", "m", base_url="http://localhost:8000/v1/", max_gen_toks=4096)
    assert api["base_url"] == "http://localhost:8000/v1/completions" and api["model"] == "m"
    assert api["max_gen_toks"] == 4096 and api["tokenized_requests"] is False
    with pytest.raises(ConfigError, match="needs --base-url"):
        model_args_for("local-completions", "m")
    with pytest.raises(ConfigError, match="unknown model backend"):
        model_args_for("openai", "m")


def test_sampled_api_requests_carry_no_fixed_seed():
    """lm-eval sends seed=1234 with every request: a server that honours it would return k equal samples."""
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    lm = prepare_api_model(LocalCompletionsAPI(model="m", base_url="http://127.0.0.1:9/v1/completions",
                                               tokenizer_backend=None))
    sampled = lm._create_payload(["2+2?"], generate=True, gen_kwargs={"temperature": 0.6, "top_p": 0.95,
                                                                        "until": [], "max_gen_toks": 8})
    assert "seed" not in sampled and sampled["temperature"] == 0.6 and sampled["top_p"] == 0.95
    greedy = lm._create_payload(["2+2?"], generate=True, gen_kwargs={"temperature": 0, "until": []})
    assert greedy["seed"] == 1234
    assert sampled["prompt"] == "2+2?"  # one prompt goes as a string (transformers serve takes no list)


def test_recorded_metadata_resolves_the_environment(monkeypatch):
    monkeypatch.setenv("RLKD_DECOMPOSER", "gsrm:http://localhost:8001/v1")
    meta = structure_metadata(None, "judge:http://localhost:8002/v1", None, None, {"math500_data": "m.jsonl"})
    assert meta == {"decomposer": "gsrm:http://localhost:8001/v1", "matcher": "judge:http://localhost:8002/v1",
                    "eval_data": "bundled", "timeout_s": 300.0, "math500_data": "m.jsonl"}
    assert structure_metadata(None, None, None, "r1")["prompt"] == "r1"


def test_a_completion_budget_beyond_the_context_is_a_clear_error():
    from types import SimpleNamespace

    from rlkd_bench.evaluate import check_context

    task = SimpleNamespace(config=SimpleNamespace(generation_kwargs={"max_gen_toks": 8192}))
    with pytest.raises(ConfigError, match="rlkd_structure asks for up to 8192 new tokens.*--max-gen-toks"):
        check_context({"rlkd_structure": task}, 4096, None)
    check_context({"rlkd_structure": task}, 4096, 1024)  # the option wins
    check_context({"rlkd_structure": task}, 131072, None)


def test_eval_refuses_data_without_gold_and_one_sample_diversity(tmp_path):
    """Through the command: both refused before a model loads (the model path does not exist)."""
    import json

    from click.testing import CliRunner

    from rlkd_bench.cli import cli
    from rlkd_bench.tasks.evaldata import bundled_eval_path, read_jsonl_rows

    rows = read_jsonl_rows(bundled_eval_path())[:3]
    rows[1]["gold"] = ""
    bad = tmp_path / "nogold.jsonl"
    bad.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "_line"}) + "\n" for r in rows))
    res = CliRunner().invoke(cli, ["eval", str(tmp_path / "no-model"), "--tasks", "rlkd_structure",
                                   "--eval-data", str(bad), "--device", "cpu"])
    assert res.exit_code == 65, res.output + repr(res.exception)
    assert f"{bad}:2: field 'gold': no gold answer in 1 of 3 rows (lines 2)" in res.output
    res = CliRunner().invoke(cli, ["eval", str(tmp_path / "no-model"), "--tasks", "rlkd_diversity",
                                   "--repeats", "1", "--device", "cpu"])
    assert res.exit_code == 2, res.output + repr(res.exception)
    assert "rlkd_diversity compares the samples of each problem and needs repeats >= 2 (got 1)" in res.output
