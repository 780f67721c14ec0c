"""``make mini-study QUICK=1``'s recipe, for real: every stage (the world teacher through
``rlkd-bench traces``, GSRM data, ``make train-gsrm``, rlkd-data, the warm start and the arms
through ``make train-rlkd``, ``rlkd-bench eval`` with the lm-eval tasks, ``rlkd-bench report``)
runs as a subprocess; every figure of every arm must be present and in range; a second study
of the same config in another folder gives a byte-identical summary.json. A rerun reuses
every stage; a changed step count rebuilds the arms and what reads them, nothing upstream; a
broken arm config stops the study naming the stage, its command and its log."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlkd_bench.configs import STUDY_ARMS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "mini_study.py"
CONFIG = ROOT / "recipes" / "configs" / "mini_study.yaml"


def study(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLKD_") or k == "RLKD_CACHE_DIR"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, str(RECIPE), "--config", str(CONFIG), f"out={out}", "quick=true",
                           *overrides], capture_output=True, text=True, env=env, cwd=ROOT, timeout=840)


def ran(res: subprocess.CompletedProcess) -> set[str]:
    return {line.split()[1] for line in res.stdout.splitlines() if line.strip().startswith("run ")}


def test_quick_mini_study_runs_the_chain_and_resumes(tmp_path):
    out = tmp_path / "mini"
    res = study(out)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]

    summary = json.loads((out / "summary.json").read_text())
    k = summary["config"]["eval_repeats"]
    ranges = {"accuracy (pass@1)": (0, 1), f"pass@{k}": (0, 1), "structure alignment to the teacher": (0, 1),
              "distinct structures among k": (1, k), "agreement with the true structure": (0, 1)}
    assert set(summary["figures"]) == {"warmup", *STUDY_ARMS}
    for arm, figs in summary["figures"].items():
        assert set(figs) == set(ranges), arm
        for label, (lo, hi) in ranges.items():
            f = figs[label]
            if math.isnan(f["mean"]):  # a metric that scored nothing says so (QUICK's students are noise)
                assert f["n_docs"] == 0 and f["ci"] is None, (arm, label, f)
                assert f["n_unscored"] == summary["config"]["eval_problems"], (arm, label, f)
                continue
            assert lo <= f["mean"] <= hi, (arm, label, f)
            assert f["n_docs"] == summary["config"]["eval_problems"], (arm, label, f)
            ci_lo, ci_hi = f["ci"]
            assert lo <= ci_lo <= ci_hi <= hi, (arm, label, f)
    diffs = {(d["a"], d["b"], d["label"]): d for d in summary["differences"]}
    assert ("rlkd-exact", "grpo", "accuracy (pass@1)") in diffs and ("sft", "warmup", "pass@2") in diffs
    for d in diffs.values():  # the paired test on every comparison the reading makes
        assert "untested" in d or ({"diff", "ci", "p", "mde", "supported"} <= set(d) and d["n_problems"] > 0), d
    runtime = summary["runtime"]
    assert runtime["stage_torch_threads"] == summary["config"]["threads"] == 1 and runtime["torch"]
    assert json.loads((out / "timings.json").read_text())["stages"]  # times live apart from the figures
    q = summary["gsrm_quality"]
    assert q["traces"] == summary["config"]["eval_problems"]
    assert all(0 <= q[key] <= 1 for key in ("decomposed", "identical", "structure_score", "valid_plan"))
    assert summary["teacher"]["valid_plan"] == 1.0  # the exact parser reads the teacher's truth back

    report = (out / "REPORT.md").read_text()
    for text in ("## The tiny GSRM", "## Figures per arm", "## Reading", "QUICK mode", "rlkd-exact − grpo",
                 "Paired test: both arms on the same eval problems", "| MDE (80%) |"):
        assert text in report
    assert (out / "report" / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for arm in STUDY_ARMS:  # every arm: a checkpoint with its manifest, an lm-eval result, the world's figures
        assert (out / "models" / f"{arm}-seed1" / "manifest.json").is_file()
        assert (out / "evals" / f"{arm}-seed1" / "results.json").is_file()
        assert (out / "evals" / f"{arm}-seed1" / "samples_world_truth.jsonl").is_file()
    rlkd = json.loads((out / "models" / "rlkd-gsrm-seed1" / "manifest.json").read_text())
    assert rlkd["params"]["structure"]["decomposer"].startswith("gsrm:")
    for product in ("traces-train", "traces-eval", "gsrm-data", "rlkd-data-exact"):
        assert json.loads((out / "products" / product / "manifest.json").read_text())["counts"]
    results = json.loads((out / "evals" / "sft-seed1" / "results.json").read_text())
    assert results["rlkd"]["runtime"]["torch_threads"] == 1  # what the study pinned, recorded by the eval

    twin = study(tmp_path / "twin")  # the same config, from scratch, elsewhere: the same figures
    assert twin.returncode == 0, twin.stdout[-4000:] + twin.stderr[-4000:]
    first, second = (out / "summary.json").read_text(), (tmp_path / "twin" / "summary.json").read_text()
    if first != second:
        a, b = json.loads(first), json.loads(second)
        differ = {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
        pytest.fail(f"two runs of one config differ: {json.dumps(differ)[:3000]}")

    again = study(out)  # everything reused
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert ran(again) == set(), again.stdout

    # the arms and what reads them rebuild; nothing upstream does (one step: QUICK's students never
    # write a step the structure reward can score, and three such steps in a row stop an RLKD run)
    more = study(out, "arm_steps=1")
    assert more.returncode == 0, more.stdout[-3000:] + more.stderr[-3000:]
    rebuilt = ran(more)
    assert {f"{a}-seed1" for a in STUDY_ARMS} <= rebuilt
    assert not rebuilt & {"traces-train", "traces-eval", "gsrm-data", "rlkd-data-exact", "gsrm", "warmup",
                          "eval-warmup"}
    assert json.loads((out / "models" / "sft-seed1" / "manifest.json").read_text())["counts"]["steps"] == 1

    broken = tmp_path / "configs"  # an arm config with a typo: the study stops at that stage
    broken.mkdir()
    for f in (ROOT / "recipes" / "configs" / "mini").glob("*.yaml"):
        (broken / f.name).write_text(f.read_text())
    (broken / "grpo.yaml").write_text((broken / "grpo.yaml").read_text() + "max_stepz: 3\n")
    bad = study(out, "arm_steps=1", f"configs={broken}")
    assert bad.returncode != 0
    assert "stage grpo-seed1 failed" in bad.stderr and "max_stepz" in bad.stderr
    assert "command: make" in bad.stderr and str(out / "logs" / "grpo-seed1.log") in bad.stderr
