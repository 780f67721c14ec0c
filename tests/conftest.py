"""Shared pytest fixtures. Everything runs offline: models are built with rlkd_bench.tiny."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own request cache unless it sets one itself."""
    monkeypatch.setenv("RLKD_CACHE_DIR", str(tmp_path_factory.mktemp("rlkd-cache")))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2 model + tokenizer (rlkd_bench.tiny), built once per session."""
    from rlkd_bench.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny")


@pytest.fixture(scope="session")
def tiny_server(tiny_model_dir):
    """``transformers serve --continuous-batching`` on the tiny model, behind a counting proxy.

    Yields ``(base_url, model_id, counter)``: point an engine at it with
    ``make_engine(f"openai:{model_id}", EngineOptions(base_url=base_url))`` (no key needed on
    loopback). ``counter`` is the ``FaultProxy`` from tests/faultproxy.py: ``counter.count`` is the number
    of chat requests that reached the server, ``counter.max_in_flight`` the most at once; call
    ``counter.reset()`` first (the server is shared by the session), ``counter.inject(Fault(...))``
    to make the next requests fail.
    """
    from servers import served_behind_proxy  # tests/ is on sys.path (rootdir conftest)

    with served_behind_proxy(tiny_model_dir) as served:
        yield served


@pytest.fixture
def server(tiny_server):
    """The session's ``tiny_server`` with its counter reset before and after the test."""
    base_url, model_id, counter = tiny_server
    counter.reset()
    yield base_url, model_id, counter
    counter.reset()


@pytest.fixture(scope="session")
def gsrm_data_dir(tmp_path_factory):
    """A gsrm-sft product made by the real command (offline annotator) from 16 synthetic traces,
    which are about half as long as the bundled ones: the tiny model trains 4x faster on them."""
    import json

    from click.testing import CliRunner

    from rlkd_bench.cli import cli
    from rlkd_bench.data.synthetic import generate

    root = tmp_path_factory.mktemp("gsrm-data")
    traces = root / "synthetic.jsonl"
    traces.write_text("".join(json.dumps(t.to_trace_row()) + "\n" for t in generate(16, seed=3)))
    out = root / "gsrm-data"
    res = CliRunner().invoke(cli, ["build-gsrm-data", "--traces", str(traces), "--out", str(out),
                                   "--test-size", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="session")
def gsrm_checkpoint(gsrm_data_dir, tiny_model_dir, tmp_path_factory):
    """A tiny GSRM checkpoint trained by the real recipe (recipes/train_gsrm.py, a few steps, CPU),
    starting from the session's tiny model."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path_factory.mktemp("gsrm-ckpt") / "gsrm"
    cmd = [sys.executable, str(root / "recipes" / "train_gsrm.py"), "--config",
           str(root / "recipes" / "configs" / "gsrm_tiny.yaml"), f"data={gsrm_data_dir}",
           f"output_dir={out}", f"model={tiny_model_dir}", "max_steps=3", "per_device_train_batch_size=2",
           "logging_steps=1", "max_eval_samples=2"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def memorizing_gsrm(tiny_model_dir, tmp_path_factory):
    """A tiny GSRM trained by the recipe until it has learned one short example by heart (80 steps
    on one 2-step trace: enough on CPU, deterministic; fewer steps were not), with
    the trace and the annotation it learned (the step text of the gsrm-sft row): the path where
    the model is right, from the recipe to parsed steps."""
    import json
    from pathlib import Path

    from click.testing import CliRunner

    from rlkd_bench.cli import cli
    from rlkd_bench.configs import GSRMTrainConfig, load_config
    from rlkd_bench.gsrm_sft import train
    from rlkd_bench.structure import Decomposition

    root = Path(__file__).resolve().parents[1]
    work = tmp_path_factory.mktemp("memorize")
    trace = {"id": "mem-1", "domain": "math", "problem": "Add 2 and 3, then multiply the sum by 4.",
             "reasoning": "Okay, so I need to add two numbers and then scale the sum.\n\n"
                          "First, I add 2 and 3: 2 + 3 = 5.\n\nNext, I multiply the sum by 4: 5 * 4 = 20."
                          "\n\nSo the answer is \\boxed{20}.",
             "answer": "\\boxed{20}", "gold": "20", "source": "test", "verified": True}
    (work / "t.jsonl").write_text(json.dumps(trace) + "\n")
    res = CliRunner().invoke(cli, ["build-gsrm-data", "--traces", str(work / "t.jsonl"), "--test-size", "0",
                                   "--out", str(work / "data"), "--no-progress"])
    assert res.exit_code == 0, res.output
    ann = json.loads((work / "data" / "annotations.jsonl").read_text().splitlines()[0])
    cfg = load_config(root / "recipes" / "configs" / "gsrm_tiny.yaml", GSRMTrainConfig, [
        f"data={work / 'data'}", f"output_dir={work / 'gsrm'}", f"model={tiny_model_dir}", "max_steps=80",
        "per_device_train_batch_size=1", "learning_rate=5e-3", "warmup_ratio=0", "logging_steps=40",
        "eval_split=null"])
    train(cfg, log=lambda *a: None)  # in process: the recipe's own subprocess run is tested elsewhere
    return work / "gsrm", trace, Decomposition.from_dict(ann)


@pytest.fixture(scope="module")
def rlkd_data(tmp_path_factory):
    """The rlkd-data product built by the real command from the bundled traces (heuristic steps)."""
    from click.testing import CliRunner

    from rlkd_bench.cli import cli

    out = tmp_path_factory.mktemp("rlkd-data") / "rlkd-data"
    res = CliRunner().invoke(cli, ["build-rlkd-data", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def gsrm_server(memorizing_gsrm):
    """``transformers serve`` on the GSRM that learned one trace by heart, behind a counting proxy:
    it decomposes that trace for real. Yields ``(base_url, model_id, proxy, trace)``."""
    ckpt, trace, _ = memorizing_gsrm
    from servers import served_behind_proxy  # tests/ is on sys.path (rootdir conftest)

    with served_behind_proxy(ckpt) as (base_url, model_id, proxy):
        yield base_url, model_id, proxy, trace
