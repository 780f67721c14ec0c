"""``rlkd-bench report``: plots and a table from trainer logs, tolerant of what a run did not log."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from rlkd_bench.cli import cli
from rlkd_bench.errors import ConfigError, DataError
from rlkd_bench.report import final, load_run, load_runs, reward_keys, structure_keys, write_report


def _state(path: Path, rows: list[dict], *, mode: str | None = None, runtime: float = 12.5) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    history = [dict(r, epoch=0.1 * r["step"]) for r in rows]
    history.append({"step": rows[-1]["step"], "train_runtime": runtime, "train_loss": 0.5})
    (path / "trainer_state.json").write_text(json.dumps({"global_step": rows[-1]["step"],
                                                         "log_history": history}))
    if mode:
        (path / "manifest.json").write_text(json.dumps({"product": f"{mode}-checkpoint", "params": {"mode": mode}}))
    return path


def _rlkd_rows(n: int, structure_scale: float) -> list[dict]:
    rows = []
    for s in range(1, n + 1):
        rows.append({
            "step": s, "loss": 0.1 / s, "reward": 10.0 + s,
            "rewards/accuracy/mean": 0.1 * s, "rewards/format/mean": 0.5, "rewards/tag_count/mean": 0.75,
            "rewards/structure/mean": structure_scale * s if s != 2 else float("nan"),  # a step where all failed
            "rewards/structure/std": 0.1, "structure/failed": 0.25, "structure/matched_prefix": 1.5,
            "completions/mean_length": 100.0 + 10 * s, "completions/clipped_ratio": 0.0,
        })
    return rows


@pytest.fixture
def runs(tmp_path):
    rlkd = _state(tmp_path / "rlkd-tiny", _rlkd_rows(4, 0.5), mode="rlkd")
    grpo = _state(tmp_path / "grpo-tiny",
                  [{k: v for k, v in r.items() if "structure" not in k and "tag_count" not in k}
                   for r in _rlkd_rows(3, 0.0)], mode="grpo")
    sft = _state(tmp_path / "sft-tiny", [{"step": s, "loss": 2.0 / s, "mean_token_accuracy": 0.1 * s}
                                         for s in (1, 2, 3)])  # no manifest: mode unknown
    return [rlkd, grpo, sft]


def test_report_writes_pngs_that_open_and_a_table(runs, tmp_path):
    out = tmp_path / "report"
    res = CliRunner().invoke(cli, ["report", *map(str, runs), "--out", str(out)])
    assert res.exit_code == 0, res.output
    for png in ("rewards.png", "completion_length.png", "structure.png", "loss.png"):
        with Image.open(out / png) as im:
            im.load()
            assert im.format == "PNG" and im.size[0] >= 500 and im.size[1] >= 300
    table = (out / "table.md").read_text().splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[:4] == ["run", "mode", "steps", "train time (s)"]
    assert header[4:9] == ["rewards/accuracy/mean", "rewards/format/mean", "rewards/tag_count/mean",
                           "rewards/structure/mean", "reward"]
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")] for r in table[2:]}
    assert set(rows) == {"rlkd-tiny", "grpo-tiny", "sft-tiny"}
    col = dict(zip(header, rows["rlkd-tiny"], strict=True))
    assert col["mode"] == "rlkd" and col["steps"] == "4" and col["rewards/structure/mean"] == "2"
    assert col["rewards/accuracy/mean"] == "0.4" and col["structure/matched_prefix"] == "1.5"
    sft = dict(zip(header, rows["sft-tiny"], strict=True))
    assert sft["mode"] == "–" and sft["rewards/structure/mean"] == "–" and sft["loss"] == "0.6667"
    report = (out / "REPORT.md").read_text()
    assert "![Reward components](rewards.png)" in report and "Highest final accuracy reward: rlkd-tiny (0.4)" in report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["plots"] == ["completion_length.png", "loss.png", "rewards.png", "structure.png"]


def test_series_skip_nan_and_missing_keys(runs):
    rlkd, grpo, sft = load_runs(runs)
    assert final(rlkd, "rewards/structure/mean") == 2.0
    assert final(sft, "reward") is None and final(grpo, "rewards/structure/mean") is None
    assert len(rlkd.history) == 4  # the trainer's closing summary row is not a step
    assert rlkd.runtime_s == 12.5
    assert reward_keys([grpo, sft]) == ["rewards/accuracy/mean", "rewards/format/mean", "reward"]
    assert structure_keys([rlkd]) == ["rewards/structure/mean", "structure/failed", "structure/matched_prefix"]


def test_only_what_was_logged_is_plotted(tmp_path):
    run = _state(tmp_path / "sft", [{"step": 1, "loss": 1.0}, {"step": 2, "loss": math.inf}])
    result = write_report([run], tmp_path / "out")
    assert result["plots"] == ["loss.png"]
    assert "Not plotted (no run logged them): Reward components, Completion length" in (
        tmp_path / "out" / "REPORT.md").read_text()


def test_a_tie_is_reported_as_a_tie(tmp_path):
    a = _state(tmp_path / "a", [{"step": 1, "rewards/accuracy/mean": 0.0}])
    b = _state(tmp_path / "b", [{"step": 1, "rewards/accuracy/mean": 0.0}])
    write_report([a, b], tmp_path / "out")
    text = (tmp_path / "out" / "REPORT.md").read_text()
    assert "Final accuracy reward: a, b tie at 0." in text and "Highest" not in text


def test_a_run_named_twice_is_told_apart(tmp_path):
    a = _state(tmp_path / "a" / "run", [{"step": 1, "loss": 1.0}])
    b = _state(tmp_path / "b" / "run", [{"step": 1, "loss": 2.0}])
    assert [r.name for r in load_runs([a, b])] == ["a/run", "b/run"]


def test_a_run_dir_with_only_checkpoints_reads_the_latest(tmp_path):
    _state(tmp_path / "r.run" / "checkpoint-2", [{"step": 2, "loss": 1.0}])
    _state(tmp_path / "r.run" / "checkpoint-10", [{"step": 10, "loss": 0.5}])
    assert final(load_run(tmp_path / "r.run"), "loss") == 0.5


def test_missing_trainer_state_is_a_clear_error(tmp_path, runs):
    empty = tmp_path / "empty-run"
    empty.mkdir()
    res = CliRunner().invoke(cli, ["report", str(runs[0]), str(empty), "--out", str(tmp_path / "o")])
    assert res.exit_code == 65
    assert f"{empty}: no trainer_state.json here" in res.output and "make train-rlkd" in res.output
    assert not (tmp_path / "o").exists()  # nothing half-written
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and f"{tmp_path / 'nope'}: no such run directory" in res.output
    with pytest.raises(ConfigError):
        load_runs([])


def test_a_broken_trainer_state_names_the_file_and_line(tmp_path):
    run = tmp_path / "broken"
    run.mkdir()
    (run / "trainer_state.json").write_text('{"log_history": [\n{"step": 1,\n')
    with pytest.raises(DataError, match=r"broken/trainer_state.json:3: not valid JSON"):
        load_run(run)
    (run / "trainer_state.json").write_text('{"global_step": 3}')
    with pytest.raises(DataError, match="no 'log_history' list"):
        load_run(run)
