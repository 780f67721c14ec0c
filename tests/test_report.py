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


# ---- trouble is shown, not hidden -------------------------------------------------------------------


def test_a_non_finite_last_value_is_shown_as_such_with_a_warning(tmp_path):
    run = _state(tmp_path / "blown", [{"step": 1, "reward": 1.0, "loss": 0.5},
                                      {"step": 2, "reward": 2.0, "loss": 0.4},
                                      {"step": 3, "reward": math.inf, "loss": math.nan}])
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["report", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "blown: reward is inf at step 3 (its last logged value)" in res.output  # on the terminal too
    table = (out / "table.md").read_text().splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    col = dict(zip(header, [c.strip() for c in table[2].strip("|").split("|")], strict=True))
    assert col["reward"] == "inf" and col["loss"] == "nan"  # not 2 and 0.4, the last finite ones
    report = (out / "REPORT.md").read_text()
    assert "## Warnings" in report and "blown: loss is nan at step 3 (its last logged value)" in report
    assert "final reward inf" in report
    summary = json.loads((out / "summary.json").read_text())
    assert "blown: reward is inf at step 3 (its last logged value)." in summary["warnings"]


def test_a_metric_nan_throughout_is_shown_and_plotted_not_dropped(tmp_path):
    ok = _state(tmp_path / "ok", [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3)])
    bad = _state(tmp_path / "bad", [{"step": s, "loss": math.nan, "learning_rate": 1e-3} for s in (1, 2, 3)])
    out = tmp_path / "out"
    result = write_report([ok, bad], out)
    assert "loss.png" in result["plots"]
    assert result["final"]["bad"]["loss"] == "nan"  # not "–" (did not log)
    assert "bad: loss is nan at every logged step (3)." in result["warnings"]
    only_bad = write_report([bad], tmp_path / "out2")  # the only run: the panel is still drawn, marked
    assert only_bad["plots"] == ["loss.png"] and only_bad["final"]["bad"]["loss"] == "nan"
    with Image.open(tmp_path / "out2" / "loss.png") as im:
        im.load()
    run = load_run(bad)
    assert final(run, "loss") is not None and math.isnan(final(run, "loss")) and len(run.history) == 3


def test_a_run_that_stopped_early_is_marked(tmp_path):
    run = _state(tmp_path / "cut", [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.9}])
    state = json.loads((run / "trainer_state.json").read_text())
    (run / "trainer_state.json").write_text(json.dumps(dict(state, max_steps=10)))
    done = _state(tmp_path / "done", [{"step": 1, "loss": 1.0}])
    state = json.loads((done / "trainer_state.json").read_text())
    (done / "trainer_state.json").write_text(json.dumps(dict(state, max_steps=1)))
    result = write_report([run, done], tmp_path / "out")
    assert result["final"]["cut"]["steps"] == "stopped at step 2 of 10" and result["final"]["done"]["steps"] == "1"
    assert result["stopped"] == {"cut": {"global_step": 2, "max_steps": 10}}
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert "cut: stopped at step 2 of 10 (interrupted or failed)" in report and "**stopped at step 2 of 10**" in report


def test_the_same_run_given_twice_is_refused(runs, tmp_path):
    out = tmp_path / "o"
    for second in (str(runs[0]), f"{runs[0]}/", str(runs[0] / "trainer_state.json"),
                   f"{runs[0].parent}/../{runs[0].parent.name}/{runs[0].name}"):
        res = CliRunner().invoke(cli, ["report", str(runs[0]), str(runs[1]), second, "--out", str(out)])
        assert res.exit_code == 2, (second, res.output)
        assert "each run may be given once" in res.output and str(runs[0]) in res.output
    link = tmp_path / "link"
    link.symlink_to(runs[1])
    res = CliRunner().invoke(cli, ["report", str(runs[1]), str(link), "--out", str(out)])
    assert res.exit_code == 2 and "are the same run" in res.output
    assert not out.exists()


def test_report_out_into_a_checkpoint_is_refused(runs):
    before = sorted(p.name for p in runs[0].iterdir())  # rlkd-tiny: a checkpoint with its manifest
    res = CliRunner().invoke(cli, ["report", str(runs[1]), "--out", str(runs[0])])
    assert res.exit_code == 2, res.output
    assert f"--out {runs[0]} is a rlkd-checkpoint product" in res.output
    assert sorted(p.name for p in runs[0].iterdir()) == before
    res = CliRunner().invoke(cli, ["report", str(runs[2]), "--out", str(runs[2] / "report")])
    assert res.exit_code == 2 and "is inside" in res.output
