"""The two training recipes refuse bad settings and bad data before any model loads, stop when the
structure reward is dead, exit 130 on Ctrl-C, and count what ``max_length`` cuts (issue 15).

Most cases run the recipe's own ``main(argv)`` in this process (the recipe file, run with runpy: the
same code path as ``python recipes/train_rlkd.py``, without paying TRL's import once per case);
one case per exit code also runs as the subprocess a user starts.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "configs"
RLKD = ROOT / "recipes" / "train_rlkd.py"
GSRM = ROOT / "recipes" / "train_gsrm.py"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _main(recipe: Path):
    return runpy.run_path(str(recipe), run_name="recipe")["main"]


@pytest.fixture(scope="module")
def bad_inputs(rlkd_data, tiny_model_dir, tmp_path_factory):
    """Files a user may point the recipes at: empty and malformed jsonl, a saved DatasetDict whose
    train split has no rows, a model dir without its tokenizer."""
    import datasets

    from rlkd_bench.rlkd_data import load_rlkd_data

    root = tmp_path_factory.mktemp("bad-inputs")
    (root / "empty.jsonl").write_text("")
    rows = load_rlkd_data(str(rlkd_data)).select(range(3))
    rows.to_json(root / "good.jsonl")
    lines = (root / "good.jsonl").read_text().splitlines()
    (root / "malformed.jsonl").write_text(lines[0] + "\n" + lines[1][:40] + "\n" + lines[2] + "\n")
    datasets.DatasetDict({"train": rows.select([]), "test": rows}).save_to_disk(str(root / "empty-train"))
    (root / "no-tokenizer").mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(Path(tiny_model_dir) / name, root / "no-tokenizer" / name)
    return root


# (overrides, exit code, what the message must say); {data} and {bad} are filled in
RLKD_CASES = [
    (["max_steps=0"], 2, "key 'max_steps': 0 trains nothing"),
    (["max_steps=-1"], 2, "key 'max_steps': -1 trains by epochs: set num_train_epochs explicitly"),
    (["max_steps=-2"], 2, "key 'max_steps': -2 trains nothing"),
    (["max_steps=-1", "num_train_epochs=0"], 2, "key 'num_train_epochs': 0 trains nothing"),
    (["max_train_samples=0"], 2, "key 'max_train_samples': 0 must be >= 1"),
    (["max_train_samples=-3"], 2, "key 'max_train_samples': -3 must be >= 1"),
    (["reward_funcs=[]"], 2, "key 'reward_funcs': empty"),
    (["reward_funcs=[accuracy,accuracy,structure]", "reward_weights=[1,1,1]"], 2,
     "key 'reward_funcs': 'accuracy' is listed more than once"),
    (["learning_rate=-1"], 2, "key 'learning_rate': -1"),
    (["output_dir="], 2, "key 'output_dir': not set"),
    (["structure_max_failed_steps=0"], 2, "key 'structure_max_failed_steps': 0 must be >= 1"),
    (["resume_from_checkpoint={bad}/no-such-checkpoint"], 2,
     "key 'resume_from_checkpoint': {bad}/no-such-checkpoint: no such directory"),
    (["model_name_or_path={bad}/no-such-model"], 2,
     "key 'model_name_or_path': model not found: {bad}/no-such-model"),
    (["model_name_or_path={bad}/no-tokenizer"], 2,
     "key 'model_name_or_path': {bad}/no-tokenizer: the model dir has no tokenizer"),
    (["dataset={bad}/empty.jsonl"], 65, "{bad}/empty.jsonl: the file is empty: no rows"),
    (["dataset={bad}/malformed.jsonl"], 65, "{bad}/malformed.jsonl:2: malformed JSON"),
    (["dataset={bad}/empty-train"], 65, "{bad}/empty-train: field 'train': the 'train' split has 0 rows"),
    # an output_dir that cannot be made (what a read-only one is to a user who is not root)
    (["output_dir={bad}/good.jsonl/ckpt"], 2, "good.jsonl is a file, so no directory can be made below it"),
]


@pytest.mark.parametrize("overrides, code, message", RLKD_CASES,
                         ids=[" ".join(c[0]).replace("{bad}/", "") for c in RLKD_CASES])
def test_train_rlkd_refuses_bad_settings_before_training(rlkd_data, bad_inputs, tmp_path, capsys,
                                                        overrides, code, message):
    out = tmp_path / "out"
    args = ["--config", str(CONFIGS / "rlkd_tiny.yaml"), f"dataset={rlkd_data}", f"output_dir={out}",
            *(o.format(bad=bad_inputs) for o in overrides)]
    assert _main(RLKD)(args) == code
    err = capsys.readouterr().err
    assert message.format(bad=bad_inputs) in err, err
    assert not out.exists() and not (tmp_path / "out.run").exists()  # refused before anything was built


def test_a_read_only_output_dir_is_refused_before_training(rlkd_data, tmp_path):
    """A 0555 folder for a normal user; for root (who writes there anyway) a read-only mount."""
    from test_hardening_stages import read_only_runner  # tests/ is on sys.path (rootdir conftest)

    parent = tmp_path / "ro"
    parent.mkdir()
    wrap = read_only_runner(parent)
    assert wrap is not None, "no way to make a read-only folder here (unshare and mount as root)"
    try:
        res = subprocess.run(wrap([sys.executable, str(RLKD), "--config", str(CONFIGS / "rlkd_tiny.yaml"),
                                   f"dataset={rlkd_data}", f"output_dir={parent / 'ckpt'}"]),
                             cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=300)
    finally:
        parent.chmod(0o755)
    assert res.returncode == 2 and "is not writable" in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr


def test_max_steps_minus_one_trains_by_epochs_when_they_are_set():
    """-1 is TRL's "train num_train_epochs epochs": accepted once the epochs are chosen explicitly."""
    from rlkd_bench.rl import parse_config

    cfg = parse_config(["--config", str(CONFIGS / "rlkd_tiny.yaml"), "max_steps=-1", "num_train_epochs=0.5"])
    assert (cfg.training.max_steps, cfg.training.num_train_epochs) == (-1, 0.5)
    cfg = parse_config(["--config", str(CONFIGS / "rlkd_r1distill7b.yaml"), "use_cpu=true"])  # epochs in the file
    assert (cfg.training.max_steps, cfg.training.num_train_epochs) == (-1, 1.0)


GSRM_CASES = [
    (["max_steps=0"], 2, "max_steps: 0 trains nothing"),
    (["max_steps=-4"], 2, "max_steps: -4 trains nothing"),
    (["max_train_samples=0"], 2, "max_train_samples: 0 must be >= 1"),
    (["learning_rate=-1"], 2, "learning_rate: -1.0 must be > 0"),
    (["output_dir="], 2, "key 'output_dir'"),
    (["output_dir=''"], 2, "output_dir: empty"),
    (["model={bad}/no-such-model"], 2, "key 'model': model not found: {bad}/no-such-model"),
    (["model={bad}/no-tokenizer"], 2, "key 'model': {bad}/no-tokenizer: the model dir has no tokenizer"),
    (["data={bad}/empty.jsonl"], 65, "{bad}/empty.jsonl: the file is empty: no rows"),
    (["data={bad}/malformed.jsonl"], 65, "{bad}/malformed.jsonl:2: malformed JSON"),
    (["data={bad}/empty-train"], 65, "{bad}/empty-train: field 'train': the 'train' split has 0 rows"),
]


@pytest.mark.parametrize("overrides, code, message", GSRM_CASES,
                         ids=[" ".join(c[0]).replace("{bad}/", "") for c in GSRM_CASES])
def test_train_gsrm_refuses_bad_settings_before_training(gsrm_data_dir, bad_inputs, tmp_path, capsys,
                                                        overrides, code, message):
    out = tmp_path / "out"
    args = ["--config", str(CONFIGS / "gsrm_tiny.yaml"), f"data={gsrm_data_dir}", f"output_dir={out}",
            *(o.format(bad=bad_inputs) for o in overrides)]
    assert _main(GSRM)(args) == code
    err = capsys.readouterr().err
    assert message.format(bad=bad_inputs) in err, err
    assert not out.exists()


@pytest.mark.parametrize("recipe, config, overrides, code, message", [
    (RLKD, "rlkd_tiny.yaml", ["max_steps=0"], 2, "key 'max_steps': 0 trains nothing"),
    (RLKD, "rlkd_tiny.yaml", ["dataset={bad}/malformed.jsonl"], 65, "{bad}/malformed.jsonl:2: malformed JSON"),
    (GSRM, "gsrm_tiny.yaml", ["data={bad}/empty.jsonl"], 65, "{bad}/empty.jsonl: the file is empty"),
], ids=["rlkd-config", "rlkd-data", "gsrm-data"])
def test_the_recipe_process_exits_with_the_documented_code(rlkd_data, bad_inputs, tmp_path, recipe, config,
                                                          overrides, code, message):
    """The same refusals through the command a user runs: the code, one line, no traceback."""
    cmd = [sys.executable, str(recipe), "--config", str(CONFIGS / config), f"output_dir={tmp_path / 'out'}",
           *(o.format(bad=bad_inputs) for o in overrides)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == code, res.stderr[-3000:]
    assert message.format(bad=bad_inputs) in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


# ---- Ctrl-C: exit 130, one line, nothing half-written, resume works ------------------------------

# The recipe as a user starts it, except that SIGINT is set back to Python's KeyboardInterrupt: a
# process started with SIGINT ignored (a test run in the background of a non-interactive shell, some
# CI runners) passes SIG_IGN on to its children and the Ctrl-C below would be lost.
_WITH_SIGINT = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                "sys.argv.pop(0); runpy.run_path(sys.argv[0], run_name='__main__')")


def _interrupt_then_resume(recipe: Path, args: list[str], out: Path, resume: str, tmp_path: Path) -> None:
    """Start ``recipe`` saving a checkpoint every step, send SIGINT once one is saved (never by
    timing: the run has hundreds of steps to go), then resume from the last whole checkpoint."""
    import signal
    import time

    run_dir = out.with_name(out.name + ".run")
    log = tmp_path / "first.out"
    with open(log, "w") as stdout:
        proc = subprocess.Popen([sys.executable, "-c", _WITH_SIGINT, str(recipe), *args, resume],
                                cwd=ROOT, env=ENV, stdout=stdout, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while not (run_dir / "checkpoint-1" / "trainer_state.json").is_file() and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint saved within 240 s"
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read()[-3000:]  # still training
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert "interrupted: no checkpoint was written" in err
    assert "no checkpoint to resume" in log.read_text()  # the first run said it started fresh
    assert not out.exists()  # nothing half-written where the checkpoint goes
    from rlkd_bench.gsrm_sft import last_checkpoint

    last = last_checkpoint(run_dir)
    step = int(last.name.split("-")[1])
    again = [a for a in args if not a.startswith("max_steps=")] + [f"max_steps={step + 1}", resume]
    res = subprocess.run([sys.executable, str(recipe), *again], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming from {last}" in res.stdout
    assert json.loads((out / "manifest.json").read_text())["counts"]["steps"] == step + 1


@pytest.mark.slow
def test_ctrl_c_during_train_rlkd_exits_130_and_the_run_resumes(rlkd_data, tmp_path):
    out = tmp_path / "rlkd"
    args = ["--config", str(CONFIGS / "rlkd_tiny.yaml"), f"dataset={rlkd_data}", f"output_dir={out}",
            "max_steps=400", "per_device_train_batch_size=4", "max_completion_length=8", "save_strategy=steps",
            "save_steps=1"]
    _interrupt_then_resume(RLKD, args, out, "resume_from_checkpoint=last", tmp_path)


@pytest.mark.slow
def test_ctrl_c_during_train_gsrm_exits_130_and_the_run_resumes(gsrm_data_dir, tmp_path):
    out = tmp_path / "gsrm"
    args = ["--config", str(CONFIGS / "gsrm_tiny.yaml"), f"data={gsrm_data_dir}", f"output_dir={out}",
            "max_steps=400", "per_device_train_batch_size=2", "save_strategy=steps", "save_steps=1",
            "eval_split=null"]
    _interrupt_then_resume(GSRM, args, out, "resume_from_checkpoint=true", tmp_path)


# ---- the structure reward's GSRM and judge answer before the first step ---------------------------


def _closed_port() -> int:
    """A loopback port nothing listens on: bound, read, closed."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_model_server(server):
    """The session's real tiny server behind its proxy, which adds a second id, ``gsrm-b``, to the
    server's own ``/v1/models`` list (as a vLLM serving a base model and a LoRA lists two); yields
    ``(base_url, model_id)``."""
    base_url, model_id, proxy = server
    proxy.extra_models = ("gsrm-b",)
    return base_url, model_id


NO_RETRIES = 'structure_engine_options={"max_retries": 0}'


@pytest.mark.parametrize("setting, says", [
    ("structure_decomposer=gsrm:http://user:s3cretpw@127.0.0.1:{port}/v1?api_key=k3y-in-query",
     "cannot list the models of http://127.0.0.1:{port}/v1"),
    ("structure_decomposer=gsrm:http://127.0.0.1:{port}/v1 structure_gsrm_model=gsrm",
     "the GSRM at http://127.0.0.1:{port}/v1 did not answer a test decomposition before training"),
    ("structure_matcher=judge:http://user:s3cretpw@127.0.0.1:{port}/v1?api_key=k3y-in-query",
     "cannot list the models of http://127.0.0.1:{port}/v1"),
    ("structure_matcher=judge:http://127.0.0.1:{port}/v1 structure_judge_model=judge",
     "the judge at http://127.0.0.1:{port}/v1 did not answer a test comparison before training"),
], ids=["gsrm-url", "gsrm-url-named-model", "judge-url", "judge-url-named-model"])
def test_an_unreachable_gsrm_or_judge_stops_train_rlkd_before_training(rlkd_data, tmp_path, capsys, setting, says):
    port = _closed_port()
    out = tmp_path / "out"
    args = ["--config", str(CONFIGS / "rlkd_tiny.yaml"), f"dataset={rlkd_data}", f"output_dir={out}", NO_RETRIES,
            *setting.format(port=port).split()]
    assert _main(RLKD)(args) == 70
    err = capsys.readouterr().err
    assert says.format(port=port) in err, err
    assert "s3cretpw" not in err and "k3y-in-query" not in err
    assert not out.exists()


@pytest.mark.parametrize("setting, key", [("structure_decomposer=gsrm:{url}", "structure_gsrm_model"),
                                          ("structure_matcher=judge:{url}", "structure_judge_model")])
def test_a_server_with_several_models_asks_for_the_config_key_that_names_one(rlkd_data, two_model_server, tmp_path,
                                                                            capsys, setting, key):
    base_url, model_id = two_model_server
    args = ["--config", str(CONFIGS / "rlkd_tiny.yaml"), f"dataset={rlkd_data}", f"output_dir={tmp_path / 'o'}",
            setting.format(url=base_url)]
    assert _main(RLKD)(args) == 2
    err = capsys.readouterr().err
    assert f"lists 2 models ({model_id}, gsrm-b)" in err and f"name one with the config key {key}" in err, err
    assert "--gsrm-model" not in err  # an option the recipe does not have


# ---- rows longer than max_length are counted and reported ------------------------------------------


def _conversation_tokens(tokenizer, messages) -> int:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    return len(ids)


@pytest.mark.slow
def test_the_sft_arm_counts_the_rows_it_truncates(rlkd_data, tiny_model_dir, tmp_path):
    """max_length between the shortest and the longest teacher trace: the recipe says how many rows
    TRL cuts and records it as truncated_rows (before, they were cut without a word)."""
    from transformers import AutoTokenizer

    from rlkd_bench.rl import teacher_completion
    from rlkd_bench.rlkd_data import load_rlkd_data

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = load_rlkd_data(str(rlkd_data))
    lengths = sorted(_conversation_tokens(tok, list(r["prompt"]) + [{"role": "assistant",
                                                                     "content": teacher_completion(r)}])
                     for r in rows)
    max_length = lengths[len(lengths) // 2]
    expected = sum(n > max_length for n in lengths)
    assert 0 < expected < len(lengths)
    out = tmp_path / "sft"
    res = subprocess.run([sys.executable, str(RLKD), "--config", str(CONFIGS / "sft_tiny.yaml"), f"dataset={rlkd_data}",
                          f"output_dir={out}", f"model_name_or_path={tiny_model_dir}", f"max_length={max_length}",
                          "max_steps=1", "per_device_train_batch_size=2"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"max_length {max_length}: {expected} of {len(lengths)} rows are longer and are cut to it" in res.stdout
    assert json.loads((out / "manifest.json").read_text())["counts"]["truncated_rows"] == expected


@pytest.mark.slow
def test_the_gsrm_recipe_counts_the_train_and_eval_rows_it_leaves_out(gsrm_data_dir, tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from rlkd_bench.gsrm_sft import load_saved_dict

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    dd = load_saved_dict(Path(gsrm_data_dir) / "sft")
    train = sorted(_conversation_tokens(tok, r["messages"]) for r in dd["train"])
    test = [_conversation_tokens(tok, r["messages"]) for r in dd["test"]]
    max_length = train[len(train) // 2]
    expected = (sum(n > max_length for n in train), sum(n > max_length for n in test))
    assert expected[0] > 0
    out = tmp_path / "gsrm"
    res = subprocess.run([sys.executable, str(GSRM), "--config", str(CONFIGS / "gsrm_tiny.yaml"),
                          f"data={gsrm_data_dir}", f"output_dir={out}", f"model={tiny_model_dir}",
                          f"max_length={max_length}", "max_steps=1", "per_device_train_batch_size=2"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (f"max_length {max_length}: {expected[0]} of {len(train)} train rows and {expected[1]} eval rows "
            "are longer and were left out") in res.stdout
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert (counts["dropped_too_long"], counts["eval_dropped_too_long"]) == expected


# ---- one default for the structure reward: the sum ---------------------------------------------------


def test_the_structure_reward_is_the_sum_unless_normalize_is_asked_for():
    """The README's call (no ``normalize`` key) gives the sum of step rewards, as README and align.py
    say and the paper's code does; before, the scorer's own default (True) divided it by n_teacher."""
    import asyncio

    from rlkd_bench.decompose import get_decomposer
    from rlkd_bench.reward.rewards import get_reward_funcs
    from rlkd_bench.reward.scorer import StructureScorer

    problem = "Add 2 and 3, then multiply the sum by 4."
    reasoning = "First, I add 2 and 3: 2 + 3 = 5.\n\nNext, I multiply the sum by 4: 5 * 4 = 20."
    [res] = get_decomposer("heuristic").decompose([{"id": "x", "problem": problem, "reasoning": reasoning,
                                                    "answer": "\\boxed{20}"}])
    teacher = res.decomposition.to_dict()["steps"]
    assert len(teacher) == 2
    completion = f"<think>\n{reasoning}\n</think>\n<answer>\nThe final answer is \\boxed{{20}}.\n</answer>"

    def score(structure: dict) -> float:
        [func] = get_reward_funcs(["structure"], structure=structure)
        return asyncio.run(func([[]], [completion], problem=[problem], teacher_steps=[teacher]))[0]

    assert score({"decomposer": "heuristic", "matcher": "lexical", "timeout_s": 60}) == 2.0
    assert score({"decomposer": "heuristic", "matcher": "lexical", "normalize": True}) == 1.0
    assert StructureScorer().normalize is False
    [outcome] = StructureScorer().score([problem], [completion], [teacher])
    assert outcome.reward() == 2.0 and outcome.reward(normalize=True) == 1.0


def test_the_installed_transformers_reads_a_float_warmup_steps_as_a_ratio(tmp_path):
    """What the pyproject floor (transformers>=5.0) is for: every config gives warmup_steps as a
    ratio; a transformers that took 0.1 as 0.1 steps would train without warm-up, silently."""
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), warmup_steps=0.1, use_cpu=True, report_to="none")
    assert args.get_warmup_steps(200) == 20


def test_rlkd_bench_eval_names_the_served_gsrm_and_judge(tiny_model_dir, two_model_server, tmp_path, monkeypatch):
    """``rlkd-bench eval --gsrm-model/--judge-model``: the model the structure scorer asks at a server
    that lists several (before, eval had no way to name one and the message pointed at an option
    it lacked)."""
    from click.testing import CliRunner

    from rlkd_bench.cli import cli
    from rlkd_bench.tasks import evaldata, utils

    for k in [k for k in os.environ if k.startswith("RLKD_") and k != "RLKD_CACHE_DIR"]:
        monkeypatch.delenv(k)
    base_url, model_id = two_model_server
    out = tmp_path / "eval"
    res = CliRunner().invoke(cli, ["eval", str(tiny_model_dir), "--tasks", "rlkd_structure", "--limit", "1",
                                   "--max-gen-toks", "8", "--device", "cpu", "--output-path", str(out),
                                   "--decomposer", f"gsrm:{base_url}", "--gsrm-model", "gsrm-b",
                                   "--matcher", f"judge:{base_url}", "--judge-model", model_id])
    assert res.exit_code == 0, res.output + repr(res.exception)
    meta = json.loads((out / "results.json").read_text())["rlkd"]["metadata"]
    assert (meta["gsrm_model"], meta["judge_model"]) == ("gsrm-b", model_id)
    scorer = utils.scorer_for({"scorer": evaldata.stamp_settings(evaldata.scorer_settings(meta))})
    assert scorer.decomposer.model == "gsrm-b" and scorer.matcher.engine_spec == f"openai:{model_id}"
