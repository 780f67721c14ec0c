"""``rlkd-bench report --eval``: lm-eval results summarised per arm over seeds, with a bootstrap
interval over eval problems. Eval dirs are written by hand in lm-eval's format; no model runs."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from rlkd_bench.cli import cli
from rlkd_bench.errors import ConfigError, DataError
from rlkd_bench.report import (
    bootstrap_ci,
    choose_metrics,
    doc_means,
    eval_cell,
    eval_summary,
    leader_line,
    load_eval,
    load_evals,
    parse_arm_seed,
    seed_spread,
    write_report,
)
from rlkd_bench.stats import PairedDiff

STRUCTURE = ("structure_alignment", "accuracy", "undecomposable")


def _sample(i: int, values: dict[str, float | None], *, flt: str = "scored") -> dict:
    """One line of lm-eval's samples_<task>.jsonl, as `rlkd-bench eval --output-path` writes it."""
    return {"doc_id": i, "doc": {"id": f"synth-8008-{i}", "problem": f"What is {i} + {i}?", "gold": str(2 * i)},
            "target": str(2 * i), "arguments": [["prompt", {"max_gen_toks": 16}]], "resps": [["..."]],
            "filtered_resps": ["..."], "filter": flt, "metrics": list(values), "doc_hash": "a" * 64,
            "prompt_hash": "b" * 64, "target_hash": "c" * 64, **values}


def _eval_dir(root: Path, name: str, structure: list[float | None], accuracy: list[float] | None = None, *,
              results: bool = True) -> Path:
    """An eval dir with one task, rlkd_structure: per-doc structure alignment, accuracy and a
    lower-is-better metric, plus the matching results.json."""
    d = root / name
    d.mkdir(parents=True)
    accuracy = accuracy if accuracy is not None else [1.0] * len(structure)
    rows = [_sample(i, {"structure_alignment": s, "accuracy": a, "undecomposable": 0.0})
            for i, (s, a) in enumerate(zip(structure, accuracy, strict=True))]
    (d / "samples_rlkd_structure.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if results:
        scored = [s for s in structure if s is not None]
        figures = {"name": "rlkd_structure", "alias": "rlkd_structure", "sample_len": len(rows),
                   "structure_alignment,scored": statistics.fmean(scored) if scored else None,
                   "structure_alignment_stderr,scored": 0.01,
                   "accuracy,scored": statistics.fmean(accuracy), "accuracy_stderr,scored": 0.0,
                   "undecomposable,scored": 0.0, "undecomposable_stderr,scored": 0.0}
        (d / "results.json").write_text(json.dumps({
            "results": {"rlkd_structure": figures}, "group_subtasks": {},
            "higher_is_better": {"rlkd_structure": {"structure_alignment": True, "accuracy": True,
                                                    "undecomposable": False}},
            "n-samples": {"rlkd_structure": {"original": 40, "effective": len(rows)}},
            "rlkd": {"tasks": ["rlkd_structure"], "wall_s": 1.0}}, indent=2))
    return d


@pytest.fixture
def study(tmp_path: Path) -> list[Path]:
    """Two arms with two seeds each and a one-seed warmup; gsrm's seed 1 left doc 2 unscored."""
    root = tmp_path / "evals"
    return [
        _eval_dir(root, "rlkd-gsrm-seed1", [0.2, 0.4, None, 0.6], [1.0, 0.0, 1.0, 1.0]),
        _eval_dir(root, "rlkd-gsrm-seed2", [0.4, 0.6, 0.8, 0.8], [1.0, 1.0, 0.0, 1.0]),
        _eval_dir(root, "grpo-s1", [0.0, 0.1, 0.0, 0.1], [0.0, 0.0, 1.0, 0.0]),
        _eval_dir(root, "grpo-s2", [0.1, 0.0, 0.1, 0.0], [0.0, 1.0, 0.0, 0.0]),
        _eval_dir(root, "warmup", [0.3, 0.3, 0.3, 0.3]),
    ]


# ---- parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "arm", "seed"), [
    ("rlkd-gsrm-seed2", "rlkd-gsrm", 2), ("sft-s1", "sft", 1), ("rlkd-exact-seed10", "rlkd-exact", 10),
    ("grpo_seed3", "grpo", 3), ("warmup", "warmup", None), ("seed3", "seed3", None),
    ("rlkd-s1-seed2", "rlkd-s1", 2), ("model-v2", "model-v2", None),
])
def test_arm_and_seed_come_from_the_dir_name(name, arm, seed):
    assert parse_arm_seed(name) == (arm, seed)


def test_a_dir_reads_per_doc_values_and_counts_none_as_unscored(study):
    run = load_eval(study[0])
    assert (run.arm, run.seed) == ("rlkd-gsrm", 1)
    docs = run.docs["rlkd_structure/structure_alignment"]
    assert {k: v for k, v in docs.items() if not math.isnan(v)} == {"0|synth-8008-0": 0.2, "1|synth-8008-1": 0.4,
                                                                     "3|synth-8008-3": 0.6}
    assert math.isnan(docs["2|synth-8008-2"]) and run.unscored("rlkd_structure/structure_alignment") == 1
    assert run.value("rlkd_structure/structure_alignment") == pytest.approx(0.4)  # None is not a 0
    assert run.aggregates == {}  # results.json adds nothing the samples already have
    assert run.higher_is_better["rlkd_structure/undecomposable"] is False


# ---- statistics on plain lists ------------------------------------------------------------------------


def test_seed_spread_is_mean_and_sample_sd():
    mean, sd = seed_spread([0.4, 0.5, 0.6])
    assert mean == pytest.approx(0.5) and sd == pytest.approx(0.1)
    assert seed_spread([0.7]) == (0.7, None)
    with pytest.raises(ValueError):
        seed_spread([])


def test_doc_means_average_each_doc_over_the_seeds_that_scored_it():
    assert doc_means([{"a": 0.2, "b": 1.0}, {"a": 0.4, "c": 0.5}]) == pytest.approx([0.3, 1.0, 0.5])


def test_bootstrap_ci_on_known_data():
    assert bootstrap_ci([0.1] * 30) == (0.1, 0.1)  # no spread: a zero-width interval at that value
    narrow = [0.4, 0.6] * 20
    wide = [0.0, 1.0] * 20
    lo, hi = bootstrap_ci(narrow)
    wlo, whi = bootstrap_ci(wide)
    assert lo < 0.5 < hi and wlo < 0.5 < whi
    assert whi - wlo > 3 * (hi - lo)
    assert bootstrap_ci(wide) == (wlo, whi)  # a fixed seed: the same report every time
    uneven = [(i * 0.37) % 1 for i in range(25)]
    assert bootstrap_ci(uneven, seed=1) != bootstrap_ci(uneven)  # the seed is what fixes it
    lo50, hi50 = bootstrap_ci(wide, level=0.5)
    assert wlo < lo50 < hi50 < whi
    # the normal approximation: mean ± 1.96 * sd / sqrt(n) = 0.5 ± 0.155 for 40 fair coins
    assert wlo == pytest.approx(0.345, abs=0.04) and whi == pytest.approx(0.655, abs=0.04)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_bootstrap_ci_of_one_doc_and_of_many():
    assert bootstrap_ci([0.25]) == (0.25, 0.25)
    values = [i % 7 / 7 for i in range(5000)]
    lo, hi = bootstrap_ci(values, n=500)
    assert lo < statistics.fmean(values) < hi and hi - lo < 0.02


# ---- the summary ---------------------------------------------------------------------------------------


def test_summary_numbers_are_the_hand_computed_ones(study):
    summary = eval_summary(study)
    assert list(summary) == ["rlkd-gsrm", "grpo", "warmup"]
    gsrm = summary["rlkd-gsrm"]["rlkd_structure/structure_alignment"]
    # seed 1: (0.2 + 0.4 + 0.6) / 3 (doc 2 unscored, not 0); seed 2: (0.4 + 0.6 + 0.8 + 0.8) / 4
    assert gsrm["per_seed"] == {1: pytest.approx(0.4), 2: pytest.approx(0.65)}
    assert gsrm["mean"] == pytest.approx(0.525)
    assert gsrm["sd"] == pytest.approx(statistics.stdev([0.4, 0.65]))
    assert gsrm["n_seeds"] == 2 and gsrm["n_docs"] == 4 and gsrm["n_unscored"] == 1
    lo, hi = gsrm["ci"]
    assert 0.3 <= lo < statistics.fmean([0.3, 0.5, 0.8, 0.7]) < hi <= 0.8  # docs averaged over seeds
    warm = summary["warmup"]["rlkd_structure/structure_alignment"]
    assert warm == {"mean": pytest.approx(0.3), "sd": None, "ci": [pytest.approx(0.3), pytest.approx(0.3)],
                    "n_seeds": 1, "n_docs": 4, "n_unscored": 0, "per_seed": {None: pytest.approx(0.3)}}
    assert summary["grpo"]["rlkd_structure/accuracy"]["mean"] == pytest.approx(0.25)


def test_metrics_choose_and_order_the_columns(study):
    evals = load_evals(study)
    assert choose_metrics(evals) == ["rlkd_structure/structure_alignment", "rlkd_structure/accuracy",
                                     "rlkd_structure/undecomposable"]
    assert choose_metrics(evals, ["accuracy", "rlkd_structure/structure_alignment"]) == [
        "rlkd_structure/accuracy", "rlkd_structure/structure_alignment"]
    with pytest.raises(ConfigError, match="'pass_at_1' is not in any eval dir; choose from: rlkd_structure/"):
        choose_metrics(evals, ["pass_at_1"])
    assert list(eval_summary(study, metrics=["accuracy"])["grpo"]) == ["rlkd_structure/accuracy"]


def test_extra_samples_files_are_tasks_too(study):
    rows = [{"doc_id": i, "doc": {"id": f"synth-8008-{i}"}, "filter": "none", "metrics": ["true_structure"],
             "true_structure": v} for i, v in enumerate([1.0, 0.0, None, 1.0])]
    (study[0] / "samples_world_truth.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (study[0] / "samples_rlkd_diversity_2025-01-31T12-00-00.123456.jsonl").write_text(
        json.dumps({"doc_id": 0, "metrics": ["pass_at_1"], "pass_at_1": 0.5}) + "\n")
    summary = eval_summary(study)
    truth = summary["rlkd-gsrm"]["world_truth/true_structure"]
    assert truth["mean"] == pytest.approx(2 / 3) and truth["n_docs"] == 3 and truth["n_seeds"] == 1
    assert summary["rlkd-gsrm"]["rlkd_diversity/pass_at_1"]["mean"] == 0.5
    assert "world_truth/true_structure" not in summary["grpo"]


def test_results_json_alone_gives_seed_figures_without_an_interval(tmp_path):
    dirs = []
    for seed, value in ((1, 0.4), (2, 0.6)):
        d = tmp_path / f"sft-seed{seed}"
        d.mkdir()
        (d / "results.json").write_text(json.dumps({"results": {"gsm8k": {
            "alias": "gsm8k", "exact_match,strict-match": value, "exact_match_stderr,strict-match": 0.01,
            "exact_match,flexible-extract": value + 0.1, "exact_match_stderr,flexible-extract": 0.01}}}))
        dirs.append(d)
    figures = eval_summary(dirs)["sft"]
    strict = figures["gsm8k/exact_match,strict-match"]
    assert strict["mean"] == pytest.approx(0.5) and strict["ci"] is None and strict["n_docs"] is None
    assert figures["gsm8k/exact_match,flexible-extract"]["mean"] == pytest.approx(0.6)
    assert eval_cell(strict) == "0.500 ± 0.141"


def test_several_filters_are_named(tmp_path):
    d = tmp_path / "arm"
    d.mkdir()
    rows = [_sample(0, {"exact_match": 1.0}, flt="strict"), _sample(0, {"exact_match": 0.0}, flt="flexible")]
    (d / "samples_gsm8k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert set(eval_summary([d])["arm"]) == {"gsm8k/exact_match,strict", "gsm8k/exact_match,flexible"}


# ---- the table, plot and words ---------------------------------------------------------------------------


def test_table_cell_format():
    stats = {"mean": 0.4123, "sd": 0.0314, "ci": [0.3521, 0.4689]}
    assert eval_cell(stats) == "0.412 ± 0.031 [0.35, 0.47]"
    assert eval_cell({"mean": 0.5, "sd": None, "ci": [0.25, 0.75]}) == "0.500 [0.25, 0.75]"
    assert eval_cell(None) == "–"


def _paired(diff: float, ci: tuple[float, float], p: float, mde: float) -> PairedDiff:
    return PairedDiff(diff=diff, ci=ci, p=p, se=mde / 2.8, mde=mde, n_problems=40, n_seeds=(2, 2), n_unscored=(0, 0),
                      n_boot=2000)


def test_leader_line_says_who_leads_and_what_the_paired_test_supports():
    a = {"mean": 0.6, "ci": [0.5, 0.7]}
    b = {"mean": 0.4, "ci": [0.3, 0.55]}
    c = {"mean": 0.1, "ci": [0.0, 0.2]}
    calls = []

    def paired(x, y):
        calls.append((x, y))
        return _paired(0.2, (0.05, 0.35), 0.012, 0.15)

    assert leader_line("m", {"b": b, "a": a}, paired=paired) == (
        "- `m`: a has the highest mean (0.600); runner-up b (0.400). "
        "Paired difference +0.200 [+0.050, +0.350], p = 0.012, MDE 0.150: the paired test supports it.")
    assert calls == [("a", "b")]  # leader minus runner-up
    weak = leader_line("m", {"a": a, "c": c}, paired=lambda x, y: _paired(0.05, (-0.02, 0.12), 0.2, 0.1))
    assert weak.endswith("p = 0.200, MDE 0.100: the paired test does not support it (the gap is below the MDE).")
    assert leader_line("m", {"a": a, "c": c}, higher=False).startswith(
        "- `m`: c has the lowest (lower is better) mean (0.100); runner-up a")
    assert leader_line("m", {"a": a, "b": dict(b, mean=0.6)}) == "- `m`: a, b tie at 0.600."
    assert leader_line("m", {"a": a}) == "- `m`: only a has a value (0.600)."
    assert leader_line("m", {"a": a, "b": b}).endswith("No paired test (no per-problem values).")
    assert leader_line("m", {"a": a, "b": b, "n": dict(b, mean=math.nan)}).endswith("Nothing scored (nan): n.")


def test_report_with_eval_dirs_only(study, tmp_path):
    out = tmp_path / "report"
    result = write_report([], out, eval_dirs=study, metrics=["structure_alignment", "accuracy"])
    assert result["plots"] == ["eval.png"] and result["runs"] == [] and result["table"] is None
    with Image.open(out / "eval.png") as im:
        im.load()
        assert im.format == "PNG" and im.size[0] >= 500 and im.size[1] >= 300
    assert not (out / "table.md").exists()
    table = (out / "eval_table.md").read_text()
    assert table.startswith("Each cell: mean ± sd over seeds [95% bootstrap interval over eval problems")
    assert "Seeds per arm: rlkd-gsrm 2, grpo 2, warmup 1. Eval problems per metric: 4." in table
    lines = table.splitlines()
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == ["arm", "seeds", "rlkd_structure/structure_alignment", "rlkd_structure/accuracy"]
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")] for r in lines[4:]}
    assert list(rows) == ["rlkd-gsrm", "grpo", "warmup"]
    assert rows["rlkd-gsrm"][2].startswith("0.525 ± 0.177 [")
    assert rows["warmup"][2] == "0.300 [0.30, 0.30]"
    report = (out / "REPORT.md").read_text()
    assert report.startswith("# Evaluation report\n\n## Evaluation\n") and "Training" not in report
    assert "![Evaluation](eval.png)" in report and table in report
    assert "- `rlkd_structure/structure_alignment`: rlkd-gsrm has the highest mean (0.525); runner-up warmup" in report
    assert "### Differences between arms" in report and "not corrected for the 6 made here" in report
    diffs = {(r["a"], r["b"], r["metric"].split("/")[1]): r for r in result["differences"]}
    assert len(diffs) == 6  # every arm minus each arm given after it, on each metric
    gsrm_grpo = diffs[("rlkd-gsrm", "grpo", "structure_alignment")]
    # per problem, gsrm over its seeds (0.3, 0.5, 0.8, 0.7) minus grpo's (0.05 each): 0.525
    assert gsrm_grpo["diff"] == pytest.approx(0.525) and gsrm_grpo["supported"]
    assert gsrm_grpo["n_problems"] == 4 and gsrm_grpo["n_seeds"] == [2, 2] and gsrm_grpo["n_unscored"] == [1, 0]
    assert "| rlkd-gsrm − grpo | rlkd_structure/structure_alignment | **+0.525** | [" in report
    assert "| 4 × 2/2 (1 unscored) |" in report
    acc = diffs[("rlkd-gsrm", "grpo", "accuracy")]
    assert not acc["supported"] and acc["p"] > 0.05
    assert f"| rlkd-gsrm − grpo | rlkd_structure/accuracy | {acc['diff']:+.3f} | [" in report  # not bold
    summary = json.loads((out / "summary.json").read_text())
    gsrm = summary["eval"]["rlkd-gsrm"]["rlkd_structure/structure_alignment"]
    assert gsrm["mean"] == pytest.approx((0.4 + 0.65) / 2) and gsrm["per_seed"] == {"1": pytest.approx(0.4),
                                                                                     "2": pytest.approx(0.65)}
    assert summary["eval"]["warmup"]["rlkd_structure/accuracy"]["per_seed"] == {"null": 1.0}
    assert summary["eval_table"] == "eval_table.md"


def test_cli_report_with_eval_and_run_dirs(study, tmp_path):
    out = tmp_path / "o"
    args = ["report", *[a for d in study[:2] for a in ("--eval", str(d))], "--out", str(out)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert (out / "eval.png").is_file() and (out / "eval_table.md").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["eval"]) == ["rlkd-gsrm"]
    assert list(summary["eval"]["rlkd-gsrm"]) == ["rlkd_structure/structure_alignment", "rlkd_structure/accuracy",
                                                  "rlkd_structure/undecomposable"]
    assert "- `rlkd_structure/structure_alignment`: only rlkd-gsrm has a value (0.525)." in (
        out / "REPORT.md").read_text()

    run = tmp_path / "rlkd-run"
    run.mkdir()
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 1, "log_history": [
        {"step": 1, "loss": 1.0, "rewards/accuracy/mean": 0.5}]}))
    res = CliRunner().invoke(cli, ["report", str(run), "--eval", str(study[2]), "--eval", str(study[3]),
                                   "--metric", "accuracy", "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = (out / "REPORT.md").read_text()
    assert report.startswith("# Training report") and "\n\n## Evaluation\n\n" in report
    assert (out / "table.md").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["plots"] == ["eval.png", "loss.png", "rewards.png"]
    assert list(summary["eval"]["grpo"]) == ["rlkd_structure/accuracy"]


# ---- bad input ------------------------------------------------------------------------------------------


def test_neither_run_dirs_nor_eval_is_an_error(tmp_path):
    res = CliRunner().invoke(cli, ["report", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "give at least one RUN_DIR or --eval DIR" in res.output
    with pytest.raises(ConfigError):
        write_report([], tmp_path / "o")


def test_a_dir_without_results_is_a_data_error(study, tmp_path):
    empty = tmp_path / "sft-seed1"
    empty.mkdir()
    with pytest.raises(DataError, match=rf"{empty}: no results.json and no samples_<task>.jsonl here"):
        load_eval(empty)
    res = CliRunner().invoke(cli, ["report", "--eval", str(study[0]), "--eval", str(empty),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 65 and str(empty) in res.output
    assert not (tmp_path / "o").exists()  # nothing half-written
    res = CliRunner().invoke(cli, ["report", "--eval", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no such eval directory" in res.output


def test_a_malformed_line_names_the_file_and_line(study):
    path = study[0] / "samples_rlkd_structure.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1][:40], *lines[2:]]) + "\n")
    with pytest.raises(DataError, match=r"samples_rlkd_structure.jsonl:2: not valid JSON"):
        load_eval(study[0])
    path.write_text("\n".join([lines[0], "[1, 2]"]) + "\n")
    with pytest.raises(DataError, match=r"samples_rlkd_structure.jsonl:2: not a JSON object"):
        load_eval(study[0])
    path.write_text(json.dumps({"filter": "none", "metrics": ["x"], "x": 1.0}) + "\n")
    with pytest.raises(DataError, match=r"samples_rlkd_structure.jsonl:1: field 'doc_id': no doc_id"):
        load_eval(study[0])
    (study[1] / "results.json").write_text('{"results": {\n"a": ,\n')
    with pytest.raises(DataError, match=r"results.json:2: not valid JSON"):
        load_eval(study[1])


def test_the_same_arm_and_seed_twice_names_both_dirs(tmp_path):
    a = _eval_dir(tmp_path / "a", "sft-seed1", [0.5])
    b = _eval_dir(tmp_path / "b", "sft-s1", [0.6])
    with pytest.raises(ConfigError, match=rf"{a} and {b} are both arm 'sft', seed 1"):
        load_evals([a, b])
    c = _eval_dir(tmp_path / "c", "warmup", [0.5])
    d = _eval_dir(tmp_path / "d", "warmup", [0.5])
    with pytest.raises(ConfigError, match="both arm 'warmup', no seed"):
        eval_summary([c, d])


# ---- unscored values, the paired test, duplicates, where the report goes ---------------------------------


def test_nan_per_sample_values_are_unscored_never_zero(tmp_path):
    """A task whose metric scored nothing writes NaN per sample (and NaN in results.json): the
    report shows nan and counts the unscored samples; a partly scored seed averages what was scored."""
    root = tmp_path / "evals"
    nothing = _eval_dir(root, "a-seed1", [None, None, None])
    for path in (nothing / "samples_rlkd_structure.jsonl", nothing / "results.json"):
        path.write_text(path.read_text().replace("null", "NaN"))
    some = _eval_dir(root, "b-seed1", [0.5, None, 1.0])
    (some / "samples_rlkd_structure.jsonl").write_text(
        (some / "samples_rlkd_structure.jsonl").read_text().replace("null", "NaN"))
    out = tmp_path / "report"
    res = CliRunner().invoke(cli, ["report", "--eval", str(nothing), "--eval", str(some), "--metric",
                                   "structure_alignment", "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: c)
    a, b = summary["eval"]["a"]["rlkd_structure/structure_alignment"], summary["eval"]["b"][
        "rlkd_structure/structure_alignment"]
    assert a["mean"] == "NaN" and a["n_unscored"] == 3 and a["n_docs"] == 0
    assert b["mean"] == pytest.approx(0.75) and b["n_unscored"] == 1  # not (0.5 + 0 + 1) / 3
    table = (out / "eval_table.md").read_text()
    assert "| a | 1 | nan (nothing scored) (3 unscored) |" in table and "(1 unscored)" in table
    report = (out / "REPORT.md").read_text()
    assert "only b has a value (0.750). Nothing scored (nan): a." in report
    assert "| a − b | rlkd_structure/structure_alignment | – | no test: no problem is scored in both arms |" in report


def _spread_arm(root: Path, name: str, shift: float, noise: list[float]) -> Path:
    """40 problems of very different difficulty; the arm adds ``shift`` to each (with a little noise)."""
    base = [(i * 0.6180339) % 0.8 for i in range(40)]
    return _eval_dir(root, name, [b + shift + n for b, n in zip(base, noise, strict=True)])


def test_the_paired_test_sees_a_difference_that_overlapping_intervals_hide(tmp_path):
    """Each problem is 0.06 higher under A: the two unpaired intervals overlap (the old rule said
    "no difference"); the paired test, which differences problem by problem, calls it real."""
    noise = [0.01 * ((i * 7) % 5 - 2) for i in range(40)]
    a = _spread_arm(tmp_path, "a-seed1", 0.06, noise)
    b = _spread_arm(tmp_path, "b-seed1", 0.0, noise[::-1])
    out = tmp_path / "r"
    res = CliRunner().invoke(cli, ["report", "--eval", str(a), "--eval", str(b), "--metric", "structure_alignment",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    fa, fb = (summary["eval"][arm]["rlkd_structure/structure_alignment"]["ci"] for arm in ("a", "b"))
    assert fa[0] < fb[1]  # the intervals overlap
    (d,) = summary["differences"]
    assert d["supported"] and d["diff"] == pytest.approx(0.06, abs=0.01) and d["ci"][0] > 0 and d["p"] < 0.01
    assert d["mde"] < 0.02 and d["test"].startswith("hierarchical paired bootstrap")
    assert "| a − b | rlkd_structure/structure_alignment | **+0.060** |" in (out / "REPORT.md").read_text()


def test_arms_on_different_problems_are_not_compared(tmp_path):
    a = _eval_dir(tmp_path, "a-seed1", [0.5, 0.6, 0.7])
    b = _eval_dir(tmp_path, "b-seed1", [0.5, 0.6])
    result = write_report([], tmp_path / "r", eval_dirs=[a, b], metrics=["structure_alignment"])
    (d,) = result["differences"]
    assert d["untested"].startswith("the arms are not scored on the same problems: 3 vs 2, 2 shared")


def test_an_eval_dir_given_twice_is_refused(study, tmp_path):
    for second in (str(study[0]), f"{study[0]}/../{study[0].name}", str(study[0] / "results.json")):
        res = CliRunner().invoke(cli, ["report", "--eval", str(study[0]), "--eval", second,
                                       "--out", str(tmp_path / "o")])
        assert res.exit_code == 2, res.output
        assert "each eval dir may be given once" in res.output and str(study[0]) in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["checkpoint", "data", "model", "inside", "input"])
def test_report_out_into_a_product_or_an_input_is_refused(study, tmp_path, kind):
    target = tmp_path / "target"
    target.mkdir()
    if kind == "checkpoint":
        (target / "manifest.json").write_text(json.dumps({"product": "rlkd-checkpoint"}))
    elif kind == "data":
        (target / "manifest.json").write_text(json.dumps({"product": "rlkd-data"}))
    elif kind == "model":
        (target / "config.json").write_text("{}")
        (target / "model.safetensors").write_bytes(b"x")
    elif kind == "inside":
        (target / "manifest.json").write_text(json.dumps({"product": "gsrm-checkpoint"}))
        target = target / "report"
    else:
        target = study[1]
    before = sorted(p.name for p in target.parent.rglob("*"))
    res = CliRunner().invoke(cli, ["report", "--eval", str(study[0]), "--eval", str(study[1]), "--out", str(target)])
    assert res.exit_code == 2, res.output
    assert f"--out {target}" in res.output and "use another --out" in res.output
    assert sorted(p.name for p in target.parent.rglob("*")) == before  # nothing written


# ---- `rlkd-bench eval` into a folder that holds an eval ------------------------------------------------


def _earlier_eval(d: Path, model: str, tasks: list[str], *, listed: bool = True) -> Path:
    """What an earlier `rlkd-bench eval MODEL --output-path d` left: results.json naming the model
    and its files, and one samples file per task."""
    d.mkdir(parents=True, exist_ok=True)
    files = ["results.json", *(f"samples_{t}.jsonl" for t in tasks)]
    rlkd = {"tasks": tasks, "wall_s": 1.0, **({"files": files} if listed else {})}
    (d / "results.json").write_text(json.dumps({"results": {}, "config": {"model": model}, "rlkd": rlkd}))
    for t in tasks:
        (d / f"samples_{t}.jsonl").write_text(json.dumps(_sample(0, {"structure_alignment": 0.9})) + "\n")
    return d


def test_eval_refuses_a_folder_with_another_models_eval_or_files_it_did_not_write(tmp_path):
    d = _earlier_eval(tmp_path / "eval", "models/old", ["rlkd_structure"])
    before = {p.name: p.read_text() for p in d.iterdir()}
    res = CliRunner().invoke(cli, ["eval", "models/new", "--tasks", "rlkd_structure", "--output-path", str(d)])
    assert res.exit_code == 2, res.output
    assert f"--output-path {d} holds the eval of another model (models/old)" in res.output
    assert "--overwrite" in res.output
    assert {p.name: p.read_text() for p in d.iterdir()} == before  # refused before anything ran
    (d / "samples_gsm8k_2025-01-31T12-00-00.jsonl").write_text("{}\n")  # e.g. left by the lm_eval CLI
    for extra in ([], ["--overwrite"]):
        res = CliRunner().invoke(cli, ["eval", "models/new", "--tasks", "rlkd_structure", "--output-path", str(d),
                                       *extra])
        assert res.exit_code == 2, res.output
        assert "did not write there (samples_gsm8k_2025-01-31T12-00-00.jsonl)" in res.output
    lm_eval_dir = tmp_path / "lm-eval-out"  # a results.json without our section: not ours either
    lm_eval_dir.mkdir()
    (lm_eval_dir / "results.json").write_text(json.dumps({"results": {}}))
    res = CliRunner().invoke(cli, ["eval", "m", "--tasks", "rlkd_structure", "--output-path", str(lm_eval_dir)])
    assert res.exit_code == 2 and "did not write there (results.json)" in res.output
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "manifest.json").write_text(json.dumps({"product": "rlkd-checkpoint"}))
    res = CliRunner().invoke(cli, ["eval", "m", "--tasks", "rlkd_structure", "--output-path", str(ckpt)])
    assert res.exit_code == 2 and f"--output-path {ckpt} is a product or model dir" in res.output


@pytest.mark.slow
def test_eval_overwrite_replaces_only_the_files_the_earlier_eval_wrote(tiny_model_dir, tmp_path, monkeypatch):
    """The old model's samples_rlkd_structure.jsonl would be read by `report --eval` as the new
    model's: --overwrite removes it (the new eval does not write that task); a user's file stays."""
    for k in [k for k in __import__("os").environ if k.startswith("RLKD_") and k != "RLKD_CACHE_DIR"]:
        monkeypatch.delenv(k)
    for k, v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}.items():
        monkeypatch.setenv(k, v)
    d = _earlier_eval(tmp_path / "eval", "models/old", ["rlkd_structure", "rlkd_diversity"], listed=False)
    (d / "notes.txt").write_text("mine")
    args = ["eval", str(tiny_model_dir), "--tasks", "rlkd_diversity", "--limit", "1", "--repeats", "2",
            "--max-gen-toks", "4", "--device", "cpu", "--seed", "3", "--output-path", str(d)]
    assert CliRunner().invoke(cli, args).exit_code == 2
    res = CliRunner().invoke(cli, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt", "results.json", "samples_rlkd_diversity.jsonl"]
    results = json.loads((d / "results.json").read_text())
    assert results["config"]["model"] == str(tiny_model_dir)
    assert results["rlkd"]["files"] == ["results.json", "samples_rlkd_diversity.jsonl"]
    import torch

    runtime = results["rlkd"]["runtime"]
    assert runtime["torch"] == torch.__version__ and runtime["seeds"] == {"seed": 3}
    assert {"torch_threads", "torch_interop_threads", "deterministic_algorithms", "cpu_capability"} <= set(runtime)
    again = CliRunner().invoke(cli, args)  # the same model again: its own files are replaced, no flag needed
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt", "results.json", "samples_rlkd_diversity.jsonl"]
    figures = eval_summary([d])["eval"]  # the arm is the dir's name
    assert figures and all(m.startswith("rlkd_diversity/") for m in figures)
