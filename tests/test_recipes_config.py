"""Recipe configs: the shipped YAMLs, clear errors for bad ones, the Makefile and launch configs."""

from __future__ import annotations

import runpy
import subprocess
from pathlib import Path

import pytest
import yaml

from rlkd_bench.configs import GSRMTrainConfig, load_config
from rlkd_bench.errors import ConfigError
from rlkd_bench.gsrm_sft import resolve_data_source

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "configs"


def _recipe_main():
    return runpy.run_path(str(ROOT / "recipes" / "train_gsrm.py"), run_name="recipe")["main"]


def test_paper_config_has_the_papers_settings():
    cfg = load_config(CONFIGS / "gsrm_qwen7b.yaml", GSRMTrainConfig)
    assert cfg.model == "Qwen/Qwen2.5-7B-Instruct"
    assert (cfg.learning_rate, cfg.lr_scheduler_type, cfg.warmup_ratio) == (5e-5, "linear", 0.1)
    assert (cfg.num_train_epochs, cfg.max_length) == (1.0, 25000)
    assert cfg.bf16 and cfg.gradient_checkpointing and cfg.dtype == "bfloat16"


def test_tiny_config_runs_offline_on_cpu():
    cfg = load_config(CONFIGS / "gsrm_tiny.yaml", GSRMTrainConfig)
    assert cfg.model == "tiny" and cfg.use_cpu and not cfg.bf16


def test_overrides_reach_nested_keys_and_yaml_floats_without_a_dot(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 5e-5\n")  # PyYAML reads this as a string
    cfg = load_config(path, GSRMTrainConfig, ["tiny.layers=3", "eval_split=null", "max_steps=7"])
    assert cfg.learning_rate == 5e-5 and cfg.tiny.layers == 3 and cfg.eval_split is None
    assert cfg.max_steps == 7


@pytest.mark.parametrize("text, overrides, message", [
    ("learning_rat: 1e-4\n", [], "unknown key 'learning_rat' (did you mean 'learning_rate'?)"),
    ("tiny:\n  layerz: 2\n", [], "unknown key 'tiny.layerz'"),
    ("max_steps: ten\n", [], "key 'max_steps': expected integer, got str 'ten'"),
    ("bf16: 'yes'\n", [], "key 'bf16': expected true/false"),
    ("loss: everything\n", [], "key 'loss': 'everything' is not one of"),
    ("warmup_ratio: 1.5\n", [], "warmup_ratio: 1.5 is not in [0, 1)"),
    ("- a\n- b\n", [], "the top level must be a mapping"),
    ("model: [unclosed\n", [], "not valid YAML"),
    ("", ["per_device_train_batch_size=0"], "per_device_train_batch_size: 0 must be >= 1"),
    ("", ["nonsense"], "expected key=value"),
    ("", ["max_step=3"], "with overrides max_step=3: unknown key 'max_step' (did you mean 'max_steps'?)"),
])
def test_bad_configs_name_the_file_and_the_key(tmp_path, text, overrides, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path, GSRMTrainConfig, overrides)
    assert message in str(e.value)
    if "expected key=value" not in message:
        assert str(path) in str(e.value)


def test_recipe_reports_a_bad_config_without_a_traceback(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("modle: tiny\n")
    assert _recipe_main()(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown key 'modle'" in err and "Traceback" not in err


def test_recipe_reports_a_missing_data_dir(tmp_path, capsys):
    missing = tmp_path / "no-such-data"
    code = _recipe_main()(["--config", str(CONFIGS / "gsrm_tiny.yaml"), f"data={missing}",
                           f"output_dir={tmp_path / 'out'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"data directory not found: {missing}" in err and "build-gsrm-data" in err
    assert not (tmp_path / "out").exists()


def test_data_sources_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_data_source("someone/gsrm-sft") == ("hub", "someone/gsrm-sft")
    (tmp_path / "outputs").mkdir()
    with pytest.raises(ConfigError, match="data directory not found"):  # a path, not a Hub id
        resolve_data_source("outputs/gsrm-data")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a gsrm-sft dataset"):
        resolve_data_source("empty")
    with pytest.raises(ConfigError, match="no data given"):
        resolve_data_source(None)


def test_a_product_with_an_empty_test_split_loads(tmp_path):
    from click.testing import CliRunner

    from rlkd_bench.cli import cli
    from rlkd_bench.gsrm_sft import load_sft_data

    out = tmp_path / "gsrm-data"
    res = CliRunner().invoke(cli, ["build-gsrm-data", "--limit", "3", "--test-size", "0", "--out", str(out),
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    data = load_sft_data(GSRMTrainConfig(data=str(out)))
    assert len(data.train) == 3 and data.eval is None
    assert data.system_prompt_version.startswith("gsrm@") and data.manifest["product"] == "gsrm-data"


def test_accelerate_configs_and_make_target():
    zero3 = yaml.safe_load((ROOT / "recipes" / "accelerate" / "zero3.yaml").read_text())
    assert zero3["distributed_type"] == "DEEPSPEED" and zero3["deepspeed_config"]["zero_stage"] == 3
    assert zero3["mixed_precision"] == "bf16"
    out = subprocess.run(
        ["make", "-n", "train-gsrm", "CONFIG=recipes/configs/gsrm_qwen7b.yaml", "NUM_GPUS=8", "DATA=d"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert ("accelerate launch --config_file recipes/accelerate/zero3.yaml --num_processes 8" in out)
    assert "recipes/train_gsrm.py --config recipes/configs/gsrm_qwen7b.yaml" in out


def test_gpu_check_script_is_valid_bash():
    script = ROOT / "bench" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
