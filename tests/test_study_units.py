"""The mini study's parts that need no model: fingerprints and reuse, failure reporting, the
config checks, the world's figures from an eval log, and the wording of comparisons."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rlkd_bench.configs import StudyConfig, load_config, load_study_config
from rlkd_bench.data import world
from rlkd_bench.errors import ConfigError
from rlkd_bench.study import (
    Runner,
    Stage,
    StudyError,
    comparisons,
    fingerprint,
    headline,
    plan,
    verdict,
    world_truth,
)

ROOT = Path(__file__).resolve().parent.parent


def test_fingerprint_follows_what_a_stage_runs_and_reads():
    a = Stage("a", Path("x"), cmd=["echo", "1"])
    b = Stage("b", Path("y"), cmd=["echo", "2"], after=("a",))
    fa = fingerprint(a, {})
    assert fingerprint(Stage("a", Path("x"), cmd=["echo", "1"]), {}) == fa
    assert fingerprint(Stage("a", Path("x"), cmd=["echo", "9"]), {}) != fa
    assert fingerprint(Stage("a", Path("x"), fn=print, params={"n": 1}), {}) != \
        fingerprint(Stage("a", Path("x"), fn=print, params={"n": 2}), {})
    assert fingerprint(b, {"a": "1"}) != fingerprint(b, {"a": "2"})  # upstream changed: rebuild


def test_runner_reuses_rebuilds_and_reports_a_failure(tmp_path):
    out = tmp_path / "study"
    calls = []

    def make(n: int) -> list[Stage]:
        target = out / "made.txt"
        return [Stage("made", target, fn=lambda: (calls.append(n), target.write_text(str(n))), params={"n": n}),
                Stage("copy", out / "copy.txt", after=("made",),
                      cmd=[sys.executable, "-c", f"import shutil; shutil.copy('{target}', '{out / 'copy.txt'}')"])]

    out.mkdir()
    logs: list[str] = []
    Runner(out, log=logs.append).run(make(1))
    assert (out / "copy.txt").read_text() == "1" and calls == [1]
    Runner(out, log=logs.append).run(make(1))  # a new process: the state file says both are built
    assert calls == [1] and any("reuse  copy" in line for line in logs)
    Runner(out, log=logs.append).run(make(2))  # changed input: both rebuild
    assert calls == [1, 2] and (out / "copy.txt").read_text() == "2"
    (out / "copy.txt").unlink()  # an output gone: that stage alone runs again
    Runner(out, log=logs.append).run(make(2))
    assert calls == [1, 2] and (out / "copy.txt").read_text() == "2"

    bad = Stage("bad", out / "never", cmd=[sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
    with pytest.raises(StudyError) as e:
        Runner(out, log=logs.append).run([bad])
    msg = str(e.value)
    assert "stage bad failed (exit 3)" in msg and "boom" in msg and str(out / "logs" / "bad.log") in msg
    assert "bad" not in json.loads((out / "stages.json").read_text())
    ok = Stage("ok", out / "ok.txt", cmd=[sys.executable, "-c", f"open('{out / 'ok.txt'}', 'w').write('1')"])
    with pytest.raises(StudyError):  # a wave with a failure still keeps what finished in it
        Runner(out, log=logs.append).run([ok, bad])
    assert "ok" in json.loads((out / "stages.json").read_text())
    quiet = Stage("quiet", out / "missing", cmd=[sys.executable, "-c", "pass"])
    with pytest.raises(StudyError, match="wrote no"):
        Runner(out, log=logs.append).run([quiet])


def test_study_config_checks_and_quick_sizes(tmp_path):
    cfg = load_config(ROOT / "recipes" / "configs" / "mini_study.yaml", StudyConfig)
    assert len(cfg.seeds) >= 3 and cfg.world_seed != cfg.eval_world_seed
    quick = load_study_config(ROOT / "recipes" / "configs" / "mini_study.yaml", ["quick=true"])
    assert quick.seeds == [1] and quick.arm_steps < cfg.arm_steps
    assert load_study_config(ROOT / "recipes" / "configs" / "mini_study.yaml", ["quick=true", "arm_steps=7"]).arm_steps == 7
    for bad, match in (("eval_repeats=3", "eval_repeats"), ("eval_world_seed=1", "held out"),
                       ("arms=[sft,ppo]", "arms"), ("seeds=[1,1]", "seeds")):
        with pytest.raises(ConfigError, match=match):
            load_config(ROOT / "recipes" / "configs" / "mini_study.yaml", StudyConfig, [bad])


def test_plan_chains_the_toolkit_commands(tmp_path):
    cfg = StudyConfig(out=str(tmp_path), seeds=[1, 2])
    waves = plan(cfg, ROOT)
    stages = {s.name: s for w in waves for s in w}
    names = [s.name for w in waves for s in w]
    for seed in (1, 2):
        for arm in cfg.arms:
            assert f"{arm}-seed{seed}" in stages and f"eval-{arm}-seed{seed}" in stages
    assert " ".join(stages["traces-train"].cmd).count("--teacher world:teacher")
    assert "train-gsrm" in stages["gsrm"].cmd and "train-rlkd" in stages["warmup"].cmd
    gsrm_arm = " ".join(stages["rlkd-gsrm-seed1"].cmd)
    assert f"structure_decomposer=gsrm:{tmp_path}/models/gsrm" in gsrm_arm and "seed=1" in gsrm_arm
    assert "structure_decomposer=world" in " ".join(stages["rlkd-exact-seed2"].cmd)
    seen: set[str] = set()
    for w in waves:  # a stage only reads stages of earlier waves
        for s in w:
            assert set(s.after) <= seen, (s.name, s.after)
        seen |= {s.name for s in w}
    assert names[-1] == "report"


def test_world_truth_reads_the_diversity_log(tmp_path):
    p = world.problems(1, 3)[0]
    good = world.teach(p, 0).completion()
    rec = {"doc_id": 0, "doc": {"id": p.id, "problem": p.text()}, "resps": [[good, "<think>nothing</think>"]]}
    (tmp_path / "samples_rlkd_diversity.jsonl").write_text(json.dumps(rec) + "\n")
    out = world_truth(tmp_path)
    row = json.loads(out.read_text().splitlines()[0])
    assert row["true_structure"] == 0.5 and row["metrics"] == ["true_structure", "true_steps"]
    assert row["doc"]["id"] == p.id
    with pytest.raises(StudyError, match="samples_rlkd_diversity"):
        world_truth(tmp_path / "nowhere")


def _row(a: str, b: str, metric: str, diff: float, supported: bool, mde: float = 0.05) -> dict:
    return {"a": a, "b": b, "metric": metric, "diff": diff, "ci": [diff - 0.04, diff + 0.04], "p": 0.01 if supported else 0.3,
            "mde": mde, "supported": supported, "n_problems": 64, "n_seeds": [3, 3], "n_unscored": [0, 0]}


def test_the_reading_follows_the_paired_test_not_the_means():
    """A bigger mean is no verdict: only what the paired test supports is said."""
    cfg = StudyConfig(arms=["grpo", "rlkd-exact"])
    assert comparisons(["warmup", "grpo", "rlkd-exact"], cfg) == [("rlkd-exact", "grpo"), ("grpo", "warmup"),
                                                                  ("rlkd-exact", "warmup")]
    figs = [("acc", "pass@1"), ("struct", "structure")]
    ev = {"warmup": {"acc": {"mean": 0.5}}, "grpo": {"acc": {"mean": 0.55}}, "rlkd-exact": {"acc": {"mean": 0.62}}}
    diffs = [_row("rlkd-exact", "grpo", "acc", 0.07, False, mde=0.09), _row("rlkd-exact", "grpo", "struct", 0.2, True),
             _row("grpo", "warmup", "acc", -0.08, True), {"a": "rlkd-exact", "b": "warmup", "metric": "acc",
                                                          "untested": "no per-problem values"}]
    assert [verdict(r) for r in diffs] == [0, 1, -1, 0] and verdict(None) == 0
    text = "\n".join(headline(diffs, figs, ev))
    assert "- `rlkd-exact` vs `grpo`: higher on structure." in text  # not on pass@1: +0.07 is not supported
    assert "detects with 80% power is about 0.090" in text
    assert "- Below the warm start on pass@1: `grpo`" in text and "Above the warm start" not in text
    assert "RLKD beats both baselines on accuracy here (paired test): **no**." in text


def test_the_rlkd_config_caps_what_a_gsrm_may_write(tiny_model_dir):
    """A GSRM that never stops would generate 4096 tokens per completion at every reward call."""
    from rlkd_bench.reward.scorer import StructureScorer
    from rlkd_bench.rl import parse_config

    cfg = parse_config(["--config", str(ROOT / "recipes" / "configs" / "mini" / "rlkd.yaml"),
                        f"structure_decomposer=gsrm:{tiny_model_dir}", "structure_gsrm_max_new_tokens=48"])
    structure = cfg.script.structure()
    assert structure["gsrm_max_new_tokens"] == 48
    assert StructureScorer(**structure).decomposer.max_new_tokens == 48


def test_every_stage_runs_with_the_configured_torch_threads(tmp_path):
    """Float sums depend on torch's thread count: a stage alone in its wave (or on a bigger machine)
    must not get more threads than the same stage beside another one, nor a world step in-process."""
    import torch

    seen: dict[str, int] = {}
    made = tmp_path / "made.txt"
    env_file = tmp_path / "env.txt"
    fn = Stage("fn", made, fn=lambda: (seen.setdefault("fn", torch.get_num_threads()), made.write_text("x")))
    cmd = Stage("cmd", env_file, cmd=[sys.executable, "-c", f"import os; open(r'{env_file}', 'w').write("
                                      "os.environ.get('OMP_NUM_THREADS', 'unset'))"])
    before = torch.get_num_threads()
    Runner(tmp_path, jobs=1, threads=1, log=lambda *_: None).run([fn, cmd])
    assert seen["fn"] == 1 and env_file.read_text() == "1"
    assert torch.get_num_threads() == before  # restored for the rest of the process
    assert fingerprint(cmd, {}, threads=1) != fingerprint(cmd, {}, threads=2)  # other threads: rebuilt
