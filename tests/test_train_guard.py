"""Training keeps users' data: the recipes guard ``output_dir`` as the CLI guards ``--out``, lock it,
leave their input products byte for byte as they were, record every checkpoint file's sha256 (which
``publish`` checks), keep URL credentials out of the checkpoint, and ``make`` honours ``OUT``.

Every test runs the command a user runs: the recipe (or ``make``) in a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "configs"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
SFT_QUICK = ["max_steps=1", "per_device_train_batch_size=2", "max_length=256"]
RLKD_QUICK = ["max_steps=1", "per_device_train_batch_size=4", "max_completion_length=16"]
GSRM_QUICK = ["max_steps=1", "max_train_samples=4", "max_eval_samples=2", "per_device_train_batch_size=2"]


def _rlkd(config: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "recipes" / "train_rlkd.py"), "--config", str(CONFIGS / config), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=300)


def _gsrm(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "recipes" / "train_gsrm.py"), "--config", str(CONFIGS / "gsrm_tiny.yaml"),
           *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=300)


def _tree(path: Path) -> dict[str, str]:
    """Every file under ``path`` (hidden ones too) with its sha256."""
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _publish_dry_run(path: Path):
    from click.testing import CliRunner

    from rlkd_bench.cli import cli

    return CliRunner().invoke(cli, ["publish", str(path), "--repo", "you/x", "--dry-run"])


@pytest.fixture
def data_copy(rlkd_data, tmp_path) -> Path:
    """A private copy of the product: a test on today's code may destroy what it is given."""
    return Path(shutil.copytree(rlkd_data, tmp_path / "rlkd-data"))


@pytest.fixture(scope="module")
def sft_run(rlkd_data, tiny_model_dir, tmp_path_factory):
    """One step of the SFT arm (the recipe, in a subprocess) on a copy of the rlkd-data product:
    (product, its files before the run, the checkpoint)."""
    root = tmp_path_factory.mktemp("sft-run")
    data = Path(shutil.copytree(rlkd_data, root / "rlkd-data"))
    before = _tree(data)
    out = root / "sft"
    res = _rlkd("sft_tiny.yaml", f"dataset={data}", f"output_dir={out}", f"model_name_or_path={tiny_model_dir}",
                *SFT_QUICK)
    assert res.returncode == 0, res.stderr[-3000:]
    return data, before, out


# ---- item 1: output_dir that would lose data is refused, exit 2 ---------------------------------------


@pytest.mark.parametrize("recipe", ["rlkd", "gsrm"])
def test_non_empty_output_dir_is_refused_and_kept(recipe, data_copy, gsrm_data_dir, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    if recipe == "rlkd":
        res = _rlkd("sft_tiny.yaml", f"dataset={data_copy}", f"output_dir={out}", *SFT_QUICK)
        kind = "sft-checkpoint"
    else:
        res = _gsrm(f"data={gsrm_data_dir}", f"output_dir={out}", *GSRM_QUICK)
        kind = "gsrm-checkpoint"
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"error: output_dir {out} is not empty (notes.txt) and holds no {kind}" in res.stderr
    assert "overwrite_output_dir=true" in res.stderr and "Traceback" not in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "my notes\n"
    assert not (tmp_path / "mine.run").exists()  # refused before anything was made


def test_output_dir_on_an_input_product_is_refused(data_copy, tmp_path):
    before = _tree(data_copy)
    for out, says in [(data_copy, f"output_dir {data_copy} holds a 'rlkd-data' product, not 'sft-checkpoint'"),
                      (data_copy / "dataset", f"output_dir {data_copy / 'dataset'} is inside an input of this run"),
                      (tmp_path, f"output_dir {tmp_path} holds an input of this run ({data_copy})")]:
        res = _rlkd("sft_tiny.yaml", f"dataset={data_copy}", f"output_dir={out}", *SFT_QUICK)
        assert res.returncode == 2, (out, res.stderr[-2000:])
        assert says in res.stderr, res.stderr[-1000:]
    assert _tree(data_copy) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rlkd-data"]


def test_output_dir_on_the_base_model_is_refused(data_copy, tiny_model_dir, tmp_path):
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "student"))
    before = _tree(model)
    res = _rlkd("sft_tiny.yaml", f"dataset={data_copy}", f"model_name_or_path={model}", f"output_dir={model}",
                *SFT_QUICK)
    assert res.returncode == 2 and f"output_dir {model} is an input of this run" in res.stderr, res.stderr[-2000:]
    assert _tree(model) == before


def test_output_dir_that_is_a_file_is_refused_and_not_moved(data_copy, tmp_path):
    out = tmp_path / "result"
    out.write_text("keep me\n")
    res = _rlkd("sft_tiny.yaml", f"dataset={data_copy}", f"output_dir={out}", *SFT_QUICK)
    assert res.returncode == 2 and f"error: output_dir {out}: is a file, not a directory" in res.stderr
    assert out.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result", "rlkd-data"]  # no hidden .result.old.PID


def test_overwrite_output_dir_writes_among_the_users_files_and_a_rerun_keeps_them(data_copy, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    res = _rlkd("sft_tiny.yaml", f"dataset={data_copy}", f"output_dir={out}", "overwrite_output_dir=true",
                *SFT_QUICK)
    assert res.returncode == 0, res.stderr[-3000:]
    first = json.loads((out / "manifest.json").read_text())
    assert first["product"] == "sft-checkpoint" and "notes.txt" not in first["files"]
    # a checkpoint of the same kind is replaced without asking: only the files the toolkit made go
    res = _rlkd("sft_tiny.yaml", f"dataset={data_copy}", f"output_dir={out}", *SFT_QUICK, "seed=7")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "notes.txt").read_text() == "my notes\n"
    second = json.loads((out / "manifest.json").read_text())
    assert second["created"] >= first["created"] and second["params"]["config"]["seed"] == 7
    plan = _publish_dry_run(out)
    assert plan.exit_code == 0, plan.output
    assert "notes.txt" not in plan.output  # what the manifest does not list stays home


# ---- item 2: inputs are read-only -----------------------------------------------------------------------


def test_sft_arm_leaves_the_rlkd_data_product_unchanged(sft_run):
    data, before, _ = sft_run
    assert _tree(data) == before  # no cache-*.arrow beside the saved splits
    res = _publish_dry_run(data)
    assert res.exit_code == 0, res.output


def test_gsrm_training_leaves_the_gsrm_data_product_unchanged(gsrm_data_dir, tmp_path):
    data = Path(shutil.copytree(gsrm_data_dir, tmp_path / "gsrm-data"))
    before = _tree(data)
    res = _gsrm(f"data={data}", f"output_dir={tmp_path / 'gsrm'}", *GSRM_QUICK)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _tree(data) == before
    assert _publish_dry_run(data).exit_code == 0


# ---- item 3: one run per output_dir ---------------------------------------------------------------------


@pytest.mark.parametrize("recipe", ["rlkd", "gsrm"])
def test_a_second_run_into_the_same_output_dir_is_refused(recipe, data_copy, gsrm_data_dir, tmp_path):
    from rlkd_bench.products import run_lock

    out = tmp_path / "ckpt"
    with run_lock(tmp_path / "ckpt.run"):  # stands in for a run in progress (flock is per open file)
        if recipe == "rlkd":
            res = _rlkd("sft_tiny.yaml", f"dataset={data_copy}", f"output_dir={out}", *SFT_QUICK)
        else:
            res = _gsrm(f"data={gsrm_data_dir}", f"output_dir={out}", *GSRM_QUICK)
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"error: another run is writing to {out}; wait for it or use another output_dir" in res.stderr
    assert "checkpoint written" not in res.stdout and not out.exists()


# ---- item 5: checkpoints carry per-file checksums that publish checks -----------------------------------


def test_checkpoint_manifest_records_every_file_and_publish_refuses_replaced_weights(sft_run, tmp_path):
    _, _, out = sft_run
    manifest = json.loads((out / "manifest.json").read_text())
    files = {p.name for p in out.iterdir()}
    assert set(manifest["files"]) == files
    assert set(manifest["checksums"]) == files - {"manifest.json"}
    assert manifest["checksums"]["model.safetensors"] == hashlib.sha256(
        (out / "model.safetensors").read_bytes()).hexdigest()
    ckpt = Path(shutil.copytree(out, tmp_path / "ckpt"))
    assert _publish_dry_run(ckpt).exit_code == 0
    with open(ckpt / "model.safetensors", "r+b") as f:  # same size, one byte different
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    res = _publish_dry_run(ckpt)
    assert res.exit_code == 2
    assert "model.safetensors changed since manifest.json was written" in res.output


# ---- item 6: no secret of a decomposer URL in the checkpoint or in publish's output ---------------------


def test_decomposer_url_credentials_reach_no_file_of_the_checkpoint(data_copy, tiny_model_dir, server, tmp_path):
    """The GSRM is the session's real tiny server (``transformers serve``) behind the counting proxy;
    its replies need not parse: the preflight counts any answer."""
    _, _, proxy = server
    port = proxy.port
    password, key, other = "pw-Secret-1", "qk-Secret-2", "vl-Secret-3"
    url = f"http://user:{password}@127.0.0.1:{port}/v1?api_key={key}"
    out = tmp_path / "rlkd"
    before = _tree(data_copy)
    res = _rlkd("rlkd_tiny.yaml", f"dataset={data_copy}", f"output_dir={out}", f"model_name_or_path={tiny_model_dir}",
                f"structure_decomposer=gsrm:{url}", "structure_timeout_s=30",
                # recorded in the config, never contacted (use_vllm is off)
                f"vllm_server_base_url=http://admin:{other}@127.0.0.1:9/x", *RLKD_QUICK)
    assert res.returncode == 0, res.stderr[-3000:]
    # the tiny student's noise has no thinking to decompose, so only the check that the GSRM is up
    # before the first step is sure to ask it: that check found it answering
    assert proxy.count >= 1, "the preflight asked the GSRM"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"]["structure"]["decomposer"].startswith("gsrm:http://***@127.0.0.1")
    card = (out / "README.md").read_text()
    assert "Structure reward: decomposer `gsrm:http://***@127.0.0.1" in card
    for where in (out, out.with_name("rlkd.run")):
        for p in where.rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                for secret in (password, key, other):
                    assert secret.encode() not in data, (p, secret)
    for stream in (res.stdout, res.stderr):
        assert not any(s in stream for s in (password, key, other))
    plan = _publish_dry_run(out)
    assert plan.exit_code == 0, plan.output
    assert not any(s in plan.output for s in (password, key, other))
    assert _tree(data_copy) == before  # the GRPO side leaves its input as it was, too


def test_model_card_masks_credentials_in_config_and_decomposer():
    """The card writer on its own: the same masking for every arm's card."""
    from rlkd_bench.products import Manifest
    from rlkd_bench.rl import model_card, parse_config

    url = "http://u:pw-Secret-9@gsrm.example:8000/v1?api_key=qk-Secret-8"
    cfg = parse_config(["--config", str(CONFIGS / "rlkd_tiny.yaml"), f"structure_decomposer=gsrm:{url}"])
    m = Manifest(product="rlkd-checkpoint")
    m.params = {"mode": "rlkd", "config": cfg.raw, "config_file": cfg.source}
    m.counts = {"steps": 1}
    card = model_card(m, cfg, [{"step": 1, "loss": 0.5}], "rlkd")
    assert "pw-Secret-9" not in card and "qk-Secret-8" not in card
    assert "gsrm:http://***@gsrm.example:8000/v1?api_key=***" in card


# ---- item 11: make honours OUT and says the command's own exit code -------------------------------------


def _make(*args: str) -> subprocess.CompletedProcess:
    venv = sys.prefix  # the venv running the tests; -o: never reinstall it from here
    return subprocess.run(["make", "-s", "-o", f"{venv}/.installed", *args, f"VENV={venv}"], cwd=ROOT,
                          capture_output=True, text=True, env=ENV, timeout=300)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_train_rlkd_writes_the_checkpoint_under_out(data_copy, tmp_path):
    repo_ckpt = ROOT / "outputs" / "sft-tiny" / "manifest.json"
    before = repo_ckpt.read_bytes() if repo_ckpt.exists() else None
    res = _make("train-rlkd", f"OUT={tmp_path / 'o'}", "CONFIG=recipes/configs/sft_tiny.yaml", f"DATA={data_copy}",
                f"TRAIN_ARGS={' '.join(SFT_QUICK)}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((tmp_path / "o" / "sft-tiny" / "manifest.json").read_text())["product"] == "sft-checkpoint"
    assert (repo_ckpt.read_bytes() if repo_ckpt.exists() else None) == before


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_names_the_commands_own_exit_code(rlkd_data, tmp_path):
    from rlkd_bench.rlkd_data import load_rlkd_data

    bad = tmp_path / "no-teacher.jsonl"
    load_rlkd_data(str(rlkd_data)).remove_columns("teacher_reasoning").to_json(bad)
    res = _make("train-rlkd", f"OUT={tmp_path / 'o'}", "CONFIG=recipes/configs/sft_tiny.yaml", f"DATA={bad}")
    assert "'teacher_reasoning'" in res.stderr
    # make exits 2 for any failed target; its "Error N" line carries the recipe's code (65: data)
    assert res.returncode == 2 and "Error 65" in res.stderr, res.stderr[-2000:]
