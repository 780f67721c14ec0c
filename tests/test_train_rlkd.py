"""``make train-rlkd`` through the real TRL trainers on CPU: RLKD (GRPO + the four rewards), the GRPO
and SFT baselines, the checkpoint each writes, and clear errors for bad configs and data."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "configs"
REWARDS = ("accuracy", "format", "tag_count", "structure")
# a couple of steps of 1 prompt x 4 completions of up to 16 tokens: seconds, not minutes
QUICK = ["max_steps=2", "per_device_train_batch_size=4", "max_completion_length=16"]


def _recipe_main():
    return runpy.run_path(str(ROOT / "recipes" / "train_rlkd.py"), run_name="recipe")["main"]


@pytest.fixture(scope="module")
def default_run(rlkd_data, tmp_path_factory):
    """The default recipe (rlkd_tiny.yaml: the tiny model built offline, heuristic decomposer,
    lexical matcher) run as `make train-rlkd` runs it, in a subprocess, shortened to 2 steps."""
    out = tmp_path_factory.mktemp("runs") / "rlkd-tiny"
    cmd = [sys.executable, str(ROOT / "recipes" / "train_rlkd.py"), "--config", str(CONFIGS / "rlkd_tiny.yaml"),
           f"dataset={rlkd_data}", f"output_dir={out}", *QUICK]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=540)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return out, res


def _steps(ckpt: Path) -> list[dict]:
    state = json.loads((ckpt / "trainer_state.json").read_text())
    return [h for h in state["log_history"] if "train_runtime" not in h]


def test_default_run_logs_every_reward_component(default_run):
    out, res = default_run
    steps = _steps(out)
    assert [h["step"] for h in steps] == [1, 2]
    for h in steps:
        for name in REWARDS:
            assert f"rewards/{name}/mean" in h, (name, sorted(h))
        for name in ("format", "tag_count"):  # these score any completion
            assert isinstance(h[f"rewards/{name}/mean"], (int, float))
        # accuracy is None (left out, not 0) only for a row whose gold does not parse as math
        assert h["rewards/accuracy/mean"] is None or 0.0 <= h["rewards/accuracy/mean"] <= 1.0
        # the structure reward ran on every completion: scored, or counted as failed (never a silent 0)
        assert 0.0 <= h["structure/failed"] <= 1.0
        assert h["completions/mean_length"] <= 16
    assert "checkpoint written to" in res.stdout


def test_default_run_writes_a_checkpoint_that_loads(default_run, rlkd_data):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = default_run
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "trainer_state.json", "README.md",
            "manifest.json"} <= names
    assert "training_args.bin" not in names
    assert not (out.parent / "rlkd-tiny.run" / "final").exists()  # staged, then renamed into place
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok.apply_chat_template([{"role": "user", "content": "1+1?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] > ids.shape[1]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["product"] == "rlkd-checkpoint" and manifest["params"]["mode"] == "rlkd"
    assert manifest["params"]["reward_funcs"] == list(REWARDS)
    assert manifest["params"]["reward_weights"] == [15.0, 10.0, 10.0, 15.0]
    assert manifest["params"]["structure"]["decomposer"] == "heuristic"
    assert manifest["params"]["config"]["max_steps"] == 2
    assert manifest["inputs"]["data"]["source"] == str(rlkd_data) and manifest["inputs"]["data"]["sha256"]
    assert manifest["counts"]["steps"] == 2
    # the structure reward's own account: 2 steps x 4 completions, each scored or counted as failed
    assert manifest["counts"]["structure_completions"] == 8
    assert 0 <= manifest["counts"]["structure_failed"] <= 8
    assert manifest["prompt_versions"]["structure_decomposer"] == "heuristic-v3"
    assert manifest["params"]["structure_scorer"]["matcher"]["kind"] == "lexical"
    card = (out / "README.md").read_text()
    assert "# RLKD student" in card and "rewards/structure/mean" in card and "`structure` × 15" in card


@pytest.fixture(scope="module")
def baseline_runs(rlkd_data, tiny_model_dir, tmp_path_factory):
    """One step of each baseline, in process (the recipe's main), from the session's tiny model."""
    main = _recipe_main()
    root = tmp_path_factory.mktemp("baselines")
    runs = {}
    for name in ("grpo", "sft"):
        out = root / f"{name}-tiny"
        quick = QUICK if name == "grpo" else ["max_steps=1", "per_device_train_batch_size=2", "max_length=256"]
        code = main(["--config", str(CONFIGS / f"{name}_tiny.yaml"), f"dataset={rlkd_data}",
                     f"output_dir={out}", f"model_name_or_path={tiny_model_dir}", *quick])
        assert code == 0
        runs[name] = out
    return runs


def test_grpo_baseline_has_accuracy_and_format_only(baseline_runs):
    steps = _steps(baseline_runs["grpo"])
    assert steps and all("rewards/accuracy/mean" in h and "rewards/format/mean" in h for h in steps)
    assert not any(k.startswith(("rewards/structure", "rewards/tag_count", "structure/")) for h in steps for k in h)
    assert json.loads((baseline_runs["grpo"] / "manifest.json").read_text())["product"] == "grpo-checkpoint"


def test_sft_baseline_trains_on_the_teacher_traces(baseline_runs, rlkd_data):
    from transformers import AutoModelForCausalLM

    from rlkd_bench.rl import to_sft_rows
    from rlkd_bench.rlkd_data import load_rlkd_data

    steps = _steps(baseline_runs["sft"])
    assert steps and isinstance(steps[0]["loss"], float)
    AutoModelForCausalLM.from_pretrained(baseline_runs["sft"])
    data = load_rlkd_data(str(rlkd_data))
    row = to_sft_rows(data.select(range(1)))[0]
    text = row["completion"][0]["content"]
    assert row["prompt"] == data[0]["prompt"]
    assert text.startswith("<think>\n" + data[0]["teacher_reasoning"].strip()[:100])
    assert text.endswith("</answer>") and "</think>\n<answer>" in text and "\\boxed{" in text


def test_sft_target_does_not_open_think_twice(tiny_model_dir):
    """R1-distilled templates end the generation prompt with <think>: the target starts inside it."""
    from transformers import AutoTokenizer

    from rlkd_bench.rl import opens_think, teacher_completion

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert not opens_think(tok)
    generation_prompt = "{{- '<|im_start|>assistant\n' }}{%- endif %}"
    assert generation_prompt in tok.chat_template
    tok.chat_template = tok.chat_template.replace(generation_prompt,
                                                  "{{- '<|im_start|>assistant\n<think>\n' }}{%- endif %}")
    assert opens_think(tok)
    row = {"teacher_reasoning": " Add them. ", "teacher_final_answer": "\\boxed{4}", "gold": "4"}
    assert teacher_completion(row) == "<think>\nAdd them.\n</think>\n<answer>\nThe final answer is \\boxed{4}.\n</answer>"
    assert teacher_completion(row, think_in_prompt=True).startswith("Add them.\n</think>")


def test_report_plots_the_real_runs(default_run, baseline_runs, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from rlkd_bench.cli import cli

    runs = [str(default_run[0]), str(baseline_runs["grpo"]), str(baseline_runs["sft"])]
    res = CliRunner().invoke(cli, ["report", *runs, "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    for png in ("rewards.png", "completion_length.png", "structure.png", "loss.png"):
        with Image.open(tmp_path / "rep" / png) as im:
            assert im.format == "PNG" and im.size[0] > 200
    table = (tmp_path / "rep" / "table.md").read_text()
    for name in ("rlkd-tiny", "grpo-tiny", "sft-tiny", "rewards/structure/mean", "rewards/tag_count/mean"):
        assert name in table


# ---- bad input: clear errors before any model loads ---------------------------------------------


def test_bad_config_key_is_a_clear_error_naming_file_and_key(tmp_path, rlkd_data):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "rlkd_tiny.yaml").read_text() + "learning_rat: 1.0e-4\n")
    res = subprocess.run([sys.executable, str(ROOT / "recipes" / "train_rlkd.py"), "--config", str(bad),
                          f"dataset={rlkd_data}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert f"error: {bad}: unknown key 'learning_rat' (did you mean 'learning_rate'?)" in res.stderr
    assert "Traceback" not in res.stderr


def _save_without(rlkd_data: Path, column: str, dest: Path) -> Path:
    from rlkd_bench.rlkd_data import load_rlkd_data

    data = load_rlkd_data(str(rlkd_data)).remove_columns(column)
    data.to_json(dest / f"no-{column}.jsonl")
    return dest / f"no-{column}.jsonl"


@pytest.mark.parametrize("config, column", [("rlkd_tiny.yaml", "teacher_steps"), ("grpo_tiny.yaml", "gold"),
                                            ("sft_tiny.yaml", "teacher_reasoning")])
def test_data_without_a_needed_column_names_it(rlkd_data, tmp_path, capsys, config, column):
    path = _save_without(rlkd_data, column, tmp_path)
    code = _recipe_main()(["--config", str(CONFIGS / config), f"dataset={path}", f"output_dir={tmp_path / 'o'}"])
    err = capsys.readouterr().err
    assert code == 65, err
    assert f"'{column}'" in err and "rlkd-bench build-rlkd-data" in err and str(path) in err
    assert not (tmp_path / "o").exists()


def test_unknown_matcher_or_missing_gsrm_checkpoint_stop_before_training(rlkd_data, tmp_path, capsys):
    main = _recipe_main()
    base = ["--config", str(CONFIGS / "rlkd_tiny.yaml"), f"dataset={rlkd_data}", f"output_dir={tmp_path / 'o'}"]
    assert main([*base, "structure_matcher=fuzzy"]) == 2
    err = capsys.readouterr().err
    assert "rlkd_tiny.yaml: keys reward_funcs / structure_*" in err and "'fuzzy'" in err
    assert main([*base, f"structure_decomposer=gsrm:{tmp_path / 'no-ckpt'}"]) == 2
    assert "no-ckpt" in capsys.readouterr().err
    assert not (tmp_path / "o.run").exists()  # nothing was built


def test_missing_dataset_says_how_to_make_it(tmp_path, capsys):
    code = _recipe_main()(["--config", str(CONFIGS / "rlkd_tiny.yaml"), f"dataset={tmp_path / 'none'}",
                           f"output_dir={tmp_path / 'o'}"])
    err = capsys.readouterr().err
    assert code == 2 and f"dataset not found: {tmp_path / 'none'}" in err and "build-rlkd-data" in err
