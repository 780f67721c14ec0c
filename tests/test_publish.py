"""publish: the plan, the card from the manifest, the staged repo layout; no network, no token leaks."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from click.testing import CliRunner

from rlkd_bench.cli import cli
from rlkd_bench.publish import plan_publish, publish, stage

SECRET = "hf_abcdefghijklmnopqrstuvwxyz123456"


@pytest.fixture(scope="module")
def rlkd_product(tmp_path_factory):
    out = tmp_path_factory.mktemp("pub") / "rlkd-data"
    res = CliRunner().invoke(cli, ["build-rlkd-data", "--limit", "12", "--test-size", "3", "--out", str(out),
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture
def hf_env(monkeypatch, tmp_path):
    """A token in the environment that must never show up; no stored login."""
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def test_dry_run_prints_the_dataset_plan_and_card(rlkd_product, hf_env):
    res = CliRunner().invoke(cli, ["publish", str(rlkd_product), "--repo", "someone/rlkd-data", "--dry-run"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "repo:    someone/rlkd-data (dataset, public)" in out
    assert "product: rlkd-data" in out
    for name in ("manifest.json", "rejects.jsonl", "data/train-00000-of-00001.parquet",
                 "data/test-00000-of-00001.parquet", "README.md"):
        assert f"  {name}" in out
    assert "9 rows" in out and "3 rows" in out  # train / test from the saved dataset
    assert "dataset/train/" not in out  # the arrow files go up as parquet instead
    assert "dry run: nothing was uploaded" in out
    assert SECRET not in out and "hf_" not in out.replace("hf auth", "")


def test_dataset_card_is_built_from_the_manifest(rlkd_product):
    plan = plan_publish(rlkd_product, "someone/rlkd-data")
    meta = _front_matter(plan.card)
    assert {"rlkd", "rlkd-data"} <= set(meta["tags"])
    assert meta["configs"] == [{"config_name": "default", "default": True, "data_files": [
        {"split": "train", "path": "data/train-00000-of-00001.parquet"},
        {"split": "test", "path": "data/test-00000-of-00001.parquet"}]}]
    manifest = json.loads((rlkd_product / "manifest.json").read_text())
    assert manifest["prompt_versions"]["rlkd_system"] in plan.card
    assert f"traces: {manifest['counts']['traces']}" in plan.card
    assert "## Columns" in plan.card


def test_staged_repo_loads_with_load_dataset(rlkd_product, tmp_path):
    import datasets

    plan = plan_publish(rlkd_product, "someone/rlkd-data")
    root = stage(plan, tmp_path / "repo")
    staged = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert staged == sorted(f.path_in_repo for f in plan.files)
    dd = datasets.load_dataset(str(root))  # what the Hub serves: the card's configs say where the data is
    assert dd["train"].num_rows == 9 and dd["test"].num_rows == 3
    assert dd["train"][0]["prompt"][0]["role"] == "system"
    assert dd["train"][0]["teacher_steps"]


def test_model_checkpoint_plan(tiny_model_dir, tmp_path, hf_env):
    ckpt = tmp_path / "gsrm"
    shutil.copytree(tiny_model_dir, ckpt)
    (ckpt / "manifest.json").write_text(json.dumps({
        "product": "gsrm-checkpoint", "inputs": {"base_model": {"source": "Qwen/Qwen2.5-7B-Instruct"},
                                                 "data": {"source": "someone/gsrm-sft"}},
        "prompt_versions": {"gsrm": "gsrm@abc"}, "counts": {"train_rows": 3},
        "command": ["python", "recipes/train_gsrm.py"], "created": "now", "wall_time_s": 1.0}))
    (ckpt / "training_args.bin").write_bytes(b"pickle")
    res = CliRunner().invoke(cli, ["publish", str(ckpt), "--repo", "someone/gsrm", "--private", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "someone/gsrm (model, private)" in res.output
    assert "model.safetensors" in res.output and "training_args.bin" not in res.output
    plan = plan_publish(ckpt, "someone/gsrm", private=True)
    meta = _front_matter(plan.card)
    assert meta["library_name"] == "transformers"
    assert meta["base_model"] == "Qwen/Qwen2.5-7B-Instruct" and meta["datasets"] == ["someone/gsrm-sft"]
    assert "gsrm@abc" in plan.card
    assert SECRET not in res.output


@pytest.mark.parametrize("setup, message", [
    ("missing", "no such directory"),
    ("no-manifest", "no manifest.json"),
    ("bad-repo", "expected a Hub repo id"),
])
def test_clear_errors(tmp_path, setup, message):
    target = tmp_path / "product"
    if setup != "missing":
        target.mkdir()
        (target / "data.jsonl").write_text("{}\n")
    if setup == "bad-repo":
        (target / "manifest.json").write_text("{}")
    repo = "not a repo" if setup == "bad-repo" else "someone/x"
    res = CliRunner().invoke(cli, ["publish", str(target), "--repo", repo, "--dry-run"])
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output


def test_upload_without_a_token_stops_before_any_network(rlkd_product, monkeypatch, tmp_path):
    from rlkd_bench.errors import ConfigError

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    with pytest.raises(ConfigError, match="no Hugging Face token"):
        publish(plan_publish(rlkd_product, "someone/rlkd-data"))
