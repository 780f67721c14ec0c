"""The RLKD recipe's configs: every shipped YAML through the recipe's own parser (TRL's TrlParser
plus our key and type checks), the paper's numbers, clear errors for bad configs, the make target."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rlkd_bench.errors import ConfigError
from rlkd_bench.rl import parse_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "configs"
# the RL recipe's configs: the top-level ones and the mini study's arms (not the GSRM's, not the study's own)
RLKD_CONFIGS = sorted(p for p in [*CONFIGS.glob("*.yaml"), *CONFIGS.glob("mini/*.yaml")]
                      if not p.name.startswith(("gsrm", "mini_study")))
PAPER = {"rlkd_r1distill7b.yaml": ("rlkd", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"),
         "rlkd_zero_qwenmath7b.yaml": ("rlkd", "Qwen/Qwen2.5-Math-7B"),
         "grpo_7b.yaml": ("grpo", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"),
         "sft_distill_7b.yaml": ("sft", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")}


def _load(path: Path, *overrides: str):
    """The GPU configs set bf16, which TrainingArguments refuses on a machine without a GPU unless
    use_cpu is set; the override changes nothing else that is checked here."""
    extra = ["use_cpu=true"] if "bf16: true" in path.read_text() else []
    return parse_config(["--config", str(path), *extra, *overrides])


def test_every_config_is_shipped_and_loads():
    names = {p.name for p in RLKD_CONFIGS}
    assert {"rlkd_tiny.yaml", "grpo_tiny.yaml", "sft_tiny.yaml", *PAPER} <= names
    for path in RLKD_CONFIGS:
        cfg = _load(path)
        assert type(cfg.training).__name__ == ("SFTConfig" if cfg.script.mode == "sft" else "GRPOConfig")


@pytest.mark.parametrize("name", ["rlkd_r1distill7b.yaml", "rlkd_zero_qwenmath7b.yaml", "grpo_7b.yaml"])
def test_paper_rl_configs_have_the_papers_settings(name):
    mode, model = PAPER[name]
    cfg = _load(CONFIGS / name)
    t, s = cfg.training, cfg.script
    assert (s.mode, cfg.model.model_name_or_path) == (mode, model)
    assert t.learning_rate == 5e-5 and str(t.lr_scheduler_type.value) == "constant_with_warmup"
    assert (t.num_generations, t.max_completion_length, t.temperature, t.max_grad_norm) == (4, 4096, 0.7, 0.2)
    assert t.use_vllm and t.vllm_mode == "server" and t.vllm_server_base_url == "http://localhost:8000"
    assert t.bf16 and cfg.model.dtype == "bfloat16"
    assert s.dataset == "outputs/rlkd-data-openr1"
    if mode == "rlkd":
        assert s.rewards == ["accuracy", "format", "tag_count", "structure"]
        assert t.reward_weights == [15.0, 10.0, 10.0, 15.0]
        assert s.structure_decomposer == "gsrm:http://localhost:8001/v1"
        assert s.structure_matcher == "judge:http://localhost:8002/v1"
        assert s.structure_normalize is False  # the paper's code sums the step rewards
    else:  # the GRPO baseline: accuracy and format only, no servers beyond generation
        assert s.rewards == ["accuracy", "format"] and t.reward_weights == [15.0, 10.0]


@pytest.mark.parametrize("name", ["rlkd_r1distill7b.yaml", "rlkd_zero_qwenmath7b.yaml", "rlkd_tiny.yaml"])
def test_the_structure_reward_of_each_rlkd_config_builds_offline(name):
    """The reward registry accepts every structure setting of the file (endpoints are reached only
    at the first reward call, so nothing here needs a server)."""
    from rlkd_bench.rl import reward_functions

    cfg = _load(CONFIGS / name)
    funcs = reward_functions(cfg.script)
    assert [f.__name__ for f in funcs] == ["accuracy", "format", "tag_count", "structure"]
    described = funcs[-1].scorer.describe()
    if name != "rlkd_tiny.yaml":
        assert described["matcher"]["base_url"] == "http://localhost:8002/v1"
        assert described["decomposer"]["target"] == "http://localhost:8001/v1"


def test_sft_baseline_trains_the_same_student_on_the_same_data():
    sft, rlkd = _load(CONFIGS / "sft_distill_7b.yaml"), _load(CONFIGS / "rlkd_r1distill7b.yaml")
    assert sft.script.mode == "sft" and type(sft.training).__name__ == "SFTConfig"
    assert sft.model.model_name_or_path == rlkd.model.model_name_or_path
    assert sft.script.dataset == rlkd.script.dataset
    assert sft.training.bf16 and sft.training.learning_rate == 5e-5


@pytest.mark.parametrize("name", ["rlkd_tiny.yaml", "grpo_tiny.yaml", "sft_tiny.yaml"])
def test_tiny_configs_run_offline_on_cpu(name):
    cfg = _load(CONFIGS / name)
    assert cfg.model.model_name_or_path == "tiny" and cfg.training.use_cpu and not cfg.training.bf16
    assert cfg.script.dataset == "outputs/rlkd-data"
    assert not getattr(cfg.training, "use_vllm", False)
    if cfg.script.mode == "rlkd":
        assert (cfg.script.structure_decomposer, cfg.script.structure_matcher) == ("heuristic", "lexical")


def test_overrides_in_both_forms_and_yaml_values():
    cfg = _load(CONFIGS / "rlkd_tiny.yaml", "max_steps=3", "--learning_rate", "2e-4",
                "structure_engine_options={concurrency: 4}", "reward_weights=[1, 1, 1, 2]")
    assert cfg.training.max_steps == 3 and cfg.training.learning_rate == 2e-4
    assert cfg.script.structure()["engine_options"] == {"concurrency": 4}
    assert cfg.training.reward_weights == [1.0, 1.0, 1.0, 2.0]
    assert cfg.raw["max_steps"] == 3  # what the manifest records


@pytest.mark.parametrize("text, args, message", [
    ("learning_rat: 1e-4\n", [], "bad.yaml: unknown key 'learning_rat' (did you mean 'learning_rate'?)"),
    ("max_steps: ten\n", [], "bad.yaml: key 'max_steps': expected integer, got str 'ten'"),
    ("use_vllm: [1]\n", [], "bad.yaml: key 'use_vllm': expected true/false"),
    ("mode: sft\nnum_generations: 4\n", [], "bad.yaml: key 'num_generations' is a GRPOConfig field; mode 'sft'"),
    ("mode: distill\n", [], "bad.yaml: key 'mode': 'distill' is not one of rlkd, grpo, sft"),
    ("reward_funcs: [accuracy, structur]\n", [], "bad.yaml: key 'reward_funcs': unknown reward 'structur'"),
    ("mode: grpo\nreward_funcs: [accuracy, structure]\n", [], "grpo baseline has no structure reward"),
    ("reward_weights: [1.0, 2.0]\n", [], "key 'reward_weights': 2 weights for 4 rewards"),
    ("- a\n", [], "bad.yaml: the top level must be a mapping"),
    ("output_dir: [unclosed\n", [], "bad.yaml:4: not valid YAML"),  # the line where YAML gave up
    ("", ["max_step=3"], "with override max_step=3: unknown key 'max_step' (did you mean 'max_steps'?)"),
    ("", ["--max_step", "3"], "command line: unknown option(s) --max_step 3 (did you mean '--max_steps'?)"),
    ("", ["--max_steps", "x"], "argument --max_steps/--max-steps: invalid int value: 'x'"),
    ("", ["num_generations=3"],  # TRL's own check, wrapped with the file and the override
     "bad.yaml with overrides num_generations=3: the config does not make a valid GRPOConfig: "
     "generation_batch_size (8) must be divisible by num_generations (3)"),
])
def test_bad_configs_name_the_file_and_the_key(tmp_path, text, args, message):
    path = tmp_path / "bad.yaml"
    path.write_text("model_name_or_path: tiny\nuse_cpu: true\n" + text if not text.startswith("- ") else text)
    with pytest.raises(ConfigError) as err:
        parse_config(["--config", str(path), *args])
    assert message in str(err.value)
    assert "bad.yaml" in str(err.value) or "command line" in str(err.value)
    assert err.value.exit_code == 2


def test_missing_config_file_is_named():
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        parse_config(["--config", "nope.yaml"])


def _make(*args: str, cwd: Path = ROOT) -> str:
    """``make train-rlkd`` with the install step taken as done (-o) and extra variables."""
    return subprocess.run(["make", "-o", ".venv/.installed", "train-rlkd", *args], cwd=cwd,
                          capture_output=True, text=True, check=True).stdout


def test_make_target_launches_with_accelerate_on_several_gpus():
    out = _make("-n", "CONFIG=recipes/configs/rlkd_r1distill7b.yaml", "NUM_GPUS=5", "TRAIN_ARGS=max_steps=9")
    assert "accelerate launch --config_file recipes/accelerate/zero3.yaml --num_processes 5" in out
    assert 'recipes/train_rlkd.py "$@" max_steps=9' in out


def test_make_target_builds_the_bundled_data_only_for_configs_that_read_it(tmp_path):
    # PY=echo: the make logic runs for real (the data is built), the trainer line is only printed
    out = _make(f"OUT={tmp_path}", "PY=echo")
    assert (tmp_path / "rlkd-data" / "dataset" / "dataset_dict.json").is_file()
    assert f"recipes/train_rlkd.py --config recipes/configs/rlkd_tiny.yaml dataset={tmp_path}/rlkd-data" in out
    out = _make(f"OUT={tmp_path / 'other'}", "PY=echo", "CONFIG=recipes/configs/rlkd_r1distill7b.yaml")
    assert "recipes/train_rlkd.py --config recipes/configs/rlkd_r1distill7b.yaml" in out
    assert "dataset=" not in out and not (tmp_path / "other").exists()
