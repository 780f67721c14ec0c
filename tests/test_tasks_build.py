"""Every task YAML builds through lm-eval's TaskManager (the accuracy suite on small local copies in
the schemas of its Hub datasets, which are out of reach here); the structure tasks' data and
settings; their scoring functions on real teacher traces, through the reward's scorer."""

from __future__ import annotations

import json

import pytest

from rlkd_bench.data.synthetic import generate
from rlkd_bench.errors import ConfigError, DataError
from rlkd_bench.tasks import GROUP_NAMES, TASK_NAMES, evaldata, tasks_path, utils
from rlkd_bench.tasks.evaldata import EVAL_SEED, bundled_eval_path, read_jsonl_rows

BUNDLED_ROWS = read_jsonl_rows(bundled_eval_path())


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch):
    for name in (*evaldata.ENV.values(), *(s["env"] for s in evaldata.REASONING_SOURCES.values())):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def local_copies(tmp_path_factory):
    """AIME 2024 as jsonl, MATH-500 as parquet, GPQA-Diamond as a saved dataset: each in its Hub schema."""
    import datasets

    root = tmp_path_factory.mktemp("hub-copies")
    aime = root / "aime_2024.jsonl"
    aime.write_text("".join(json.dumps({"id": 60 + i, "problem": f"Find {i} + {i}.", "solution": "...",
                                        "answer": str(2 * i), "url": "https://example.org", "year": "2024"}) + "\n"
                            for i in range(1, 4)))
    math500 = root / "math500.parquet"
    datasets.Dataset.from_list([
        {"problem": f"Compute $\\frac{{{i}}}{{4}}$.", "solution": "...", "answer": f"\\frac{{{i}}}{{4}}",
         "subject": "Prealgebra", "level": 1, "unique_id": f"test/prealgebra/{i}.json"} for i in range(1, 4)
    ]).to_parquet(str(math500))
    gpqa = root / "gpqa_diamond"
    datasets.DatasetDict({"train": datasets.Dataset.from_list([
        {"Question": f"Which particle has charge {i}?", "Correct Answer": f"right {i}",
         "Incorrect Answer 1": "w1", "Incorrect Answer 2": "w2", "Incorrect Answer 3": "w3", "Record ID": f"rec{i}"}
        for i in range(1, 3)])}).save_to_disk(str(gpqa))
    return {"aime24_data": str(aime), "math500_data": str(math500), "gpqa_data": str(gpqa)}


def test_every_task_yaml_builds(local_copies):
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(tasks_path()), include_defaults=False, metadata=local_copies)
    assert set(TASK_NAMES) | set(GROUP_NAMES) <= set(tm.all_tasks)  # a YAML that fails to parse is missing
    loaded = tm.load(["rlkd_structure", "rlkd_diversity", "rlkd_reasoning"])
    assert set(loaded["tasks"]) == set(TASK_NAMES)
    assert loaded["group_map"] == {"rlkd_reasoning": ["rlkd_aime24", "rlkd_math500", "rlkd_gpqa_diamond"]}
    tasks = loaded["tasks"]
    assert len(tasks["rlkd_structure"].eval_docs) == len(BUNDLED_ROWS)
    assert [len(tasks[t].eval_docs) for t in ("rlkd_aime24", "rlkd_math500", "rlkd_gpqa_diamond")] == [3, 3, 2]
    for name, task in tasks.items():
        # utils.py's task class (lm-eval loads utils.py by path: a class of the same name, another module)
        assert "RlkdTask" in [c.__name__ for c in type(task).__mro__], name
        gk = task.config.generation_kwargs
        assert (gk["do_sample"], gk["temperature"], gk["top_p"], task.config.num_fewshot) == (True, 0.6, 0.95, 0)
        assert gk["until"] == []  # never stop at a blank line inside the reasoning
        if name != "rlkd_structure":
            assert task.config.repeats > 1 and task.config.filter_list[0]["name"] in ("all_samples", "scored")
    # the prompt: zero-shot; the RLKD system turn for the structure tasks, R1's instruction for the suite
    doc = tasks["rlkd_math500"].eval_docs[0]
    assert doc["gold"] == "\\frac{1}{4}" and doc["system"] == ""
    assert tasks["rlkd_math500"].doc_to_text(doc).endswith("put your final answer within \\boxed{}.")
    gdoc = tasks["rlkd_gpqa_diamond"].eval_docs[0]
    assert gdoc["choices"]["ABCD".index(gdoc["gold"])] == "right 1"
    sdoc = tasks["rlkd_structure"].eval_docs[0]
    assert "<think>" in sdoc["system"] and sdoc["teacher_steps"] and json.loads(sdoc["scorer"]) == {
        "decomposer": "heuristic", "matcher": "lexical", "eval_data": "bundled", "timeout_s": 300.0}


def test_the_hub_default_says_how_to_use_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("RLKD_MATH500_DATA", raising=False)
    with pytest.raises(ConfigError, match="math500_data.*RLKD_MATH500_DATA"):
        evaldata.math_docs("rlkd_math500", {})
    with pytest.raises(ConfigError, match="no such file"):
        evaldata.math_docs("rlkd_math500", {"math500_data": "/nonexistent/math500.jsonl"})


def test_bundled_eval_set_is_held_out():
    from rlkd_bench.sources import bundled_traces_path

    assert len(BUNDLED_ROWS) == 40 and all(r["id"].startswith(f"synth-{EVAL_SEED}-") for r in BUNDLED_ROWS)
    regenerated = {t.id: t for t in generate(40, seed=EVAL_SEED)}
    for r in BUNDLED_ROWS:  # the generator's seed says where every row comes from
        t = regenerated[r["id"]]
        assert (r["problem"], r["gold"], r["teacher_reasoning"]) == (t.problem, t.gold, t.reasoning)
        assert r["n_teacher_steps"] == len(r["teacher_steps"]) >= 2
    bundled_problems = {json.loads(x)["problem"] for x in bundled_traces_path().read_text().splitlines() if x}
    assert not bundled_problems & {r["problem"] for r in BUNDLED_ROWS}


def test_settings_metadata_then_environment_then_default(monkeypatch):
    monkeypatch.setenv("RLKD_MATCHER", "exact")
    assert evaldata.scorer_settings({})["matcher"] == "exact"
    assert evaldata.scorer_settings({"matcher": "lexical:0.8"})["matcher"] == "lexical:0.8"
    monkeypatch.delenv("RLKD_MATCHER")
    assert evaldata.scorer_settings({})["matcher"] == "lexical"
    with pytest.raises(ConfigError, match="unknown prompt style"):
        evaldata.structure_docs({"prompt": "chatty"})


def test_endpoint_credentials_stay_out_of_the_docs(monkeypatch):
    monkeypatch.delenv("RLKD_DECOMPOSER", raising=False)
    settings = evaldata.scorer_settings({"matcher": "judge:http://me:s3cret-key@judge.local:8000/v1?key=abc123"})
    stamp = evaldata.stamp_settings(settings)
    assert "s3cret" not in stamp and "abc123" not in stamp and "judge:http://judge.local:8000/v1" in stamp
    assert evaldata.settings_of(stamp)["matcher"] == settings["matcher"]  # the scorer still gets the real one
    from rlkd_bench.llm.redact import scrub

    assert "s3cret-key" not in json.dumps(scrub({"m": settings["matcher"]}))


def test_prompts_without_chat_template_and_metadata_as_written(local_copies):
    """Plain lm-eval (no --apply_chat_template): the system text, a blank line, the problem; with the
    template the system turn is the training prompt, unchanged. The metadata lm-eval writes into its
    results keeps no password or query value of a URL the tasks read."""
    from lm_eval.tasks import TaskManager

    secret = {"matcher": "judge:http://me:pw-s3cret@judge.local:8000/v1?api_key=qk-123456",
              "base_url": "http://u:pw-base9@api.local/v1/completions"}  # lm_eval merges --model_args
    tm = TaskManager(include_path=str(tasks_path()), include_defaults=False, metadata={**local_copies, **secret})
    tasks = tm.load(["rlkd_structure", "rlkd_diversity", "rlkd_reasoning"])["tasks"]
    doc = tasks["rlkd_structure"].eval_docs[0]
    plain = tasks["rlkd_structure"].fewshot_context(doc, 0)
    assert plain == doc["system"] + "\n\n" + doc["prompt"] and "</answer>.\n\nA " in plain
    seen = []
    tasks["rlkd_structure"].fewshot_context(doc, 0, apply_chat_template=True,
                                            chat_template=lambda m, **kw: seen.append(m) or "")
    assert seen[0] == [{"role": "system", "content": doc["system"]}, {"role": "user", "content": doc["prompt"]}]
    math_doc = tasks["rlkd_math500"].eval_docs[0]  # the r1 prompt has no system text: unchanged
    assert tasks["rlkd_math500"].fewshot_context(math_doc, 0) == math_doc["prompt"]
    for name, task in tasks.items():
        written = json.dumps(task.dump_config(), default=str)
        assert not any(x in written for x in ("pw-s3cret", "qk-123456", "pw-base9")), name
        assert task.config.metadata["matcher"] == "judge:http://***@judge.local:8000/v1?api_key=***"
    assert evaldata.settings_of(doc["scorer"])["matcher"] == secret["matcher"]  # the scorer still has it
    from rlkd_bench.reward.scorer import StudentOutcome  # an endpoint's error, as the per-sample log keeps it

    rec = utils._record("c", StudentOutcome(alignment=None, error="judge failed: http://me:pw-s3cret@judge.local"
                                                                  ":8000/v1?api_key=qk-123456 refused"))
    assert "pw-s3cret" not in json.dumps(rec) and "qk-123456" not in json.dumps(rec)


def test_eval_data_from_an_rlkd_data_product_and_from_raw_traces(tmp_path):
    import datasets
    from click.testing import CliRunner

    from rlkd_bench.cli import cli

    out = tmp_path / "rlkd-data"
    res = CliRunner().invoke(cli, ["build-rlkd-data", "--out", str(out), "--test-size", "3", "--limit", "12",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    rows = evaldata.load_structure_rows(str(out))
    test = datasets.load_from_disk(str(out / "dataset"))["test"]
    assert [r["id"] for r in rows] == test["id"] and [r["teacher_steps"] for r in rows] == test["teacher_steps"]

    traces = tmp_path / "traces.jsonl"  # no teacher steps: decomposed once, at load, by the decomposer
    traces.write_text("".join(json.dumps(t.to_trace_row()) + "\n" for t in generate(2, seed=EVAL_SEED + 1)))
    rows = evaldata.load_structure_rows(str(traces))
    assert len(rows) == 2 and all(len(r["teacher_steps"]) >= 2 for r in rows)

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "problem": "2+2?", "gold": "4"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'teacher_steps'"):
        evaldata.load_structure_rows(str(bad))
    bad.write_text(json.dumps({"id": "x", "problem": "2+2?", "gold": "4", "teacher_steps": ["add"]}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'teacher_steps': step 1 is a str"):
        evaldata.load_structure_rows(str(bad))


# -- scoring, through the reward's scorer -------------------------------------------------------------


def _doc(row: dict, **meta) -> dict:
    docs = evaldata.structure_docs(meta)
    return next(d for d in docs if d["id"] == row["id"])


def structure(doc: dict, completion: str) -> dict:
    """What lm-eval does: the task's filter (batched scoring), then process_results."""
    return utils.process_structure(doc, [utils.score_against_teacher([[completion]], [doc])[0]])


def diversity(doc: dict, samples: list[str]) -> dict:
    return utils.process_diversity(doc, [utils.score_samples([samples], [doc])[0]])


def _completion(row: dict, answer: str | None = None) -> str:
    return (f"<think>\n{row['teacher_reasoning']}\n</think>\n"
            f"<answer>So the answer is \\boxed{{{answer or row['gold']}}}.</answer>")


def test_structure_of_the_teacher_trace_itself_is_perfect():
    row = BUNDLED_ROWS[0]
    got = structure(_doc(row), _completion(row))
    assert got == {"structure_alignment": 1.0, "matched_prefix": float(row["n_teacher_steps"]), "step_ratio": 1.0,
                   "undecomposable": 0.0, "unscored": 0.0, "accuracy": 1.0}
    other = BUNDLED_ROWS[1]  # another problem's reasoning: a different structure, a wrong answer
    got = structure(_doc(row), _completion(other))
    assert got["structure_alignment"] < 0.5 and got["accuracy"] == 0.0 and got["undecomposable"] == 0.0
    got = structure(_doc(row), "I will not think in tags. \\boxed{1}")
    assert got["undecomposable"] == 1.0 and got["unscored"] == 1.0  # nothing measured: None, not 0
    assert got["structure_alignment"] is None and got["matched_prefix"] is None and got["step_ratio"] is None


def test_diversity_of_copies_and_of_different_paths():
    row, other = BUNDLED_ROWS[0], BUNDLED_ROWS[1]
    doc = _doc(row)
    same = diversity(doc, [_completion(row)] * 3)
    assert same["distinct_structures"] == 1.0 and same["structural_divergence"] == 0.0
    assert same["surface_divergence"] == 0.0 and same["pass_at_1"] == 1.0 and same["n_samples"] == 3.0
    mixed = diversity(doc, [_completion(row), _completion(other), _completion(row, "-1")])
    assert mixed["distinct_structures"] == 2.0 and 0.0 < mixed["structural_divergence"] <= 1.0
    assert mixed["surface_divergence"] > 0.3 and mixed["undecomposable"] == 0.0
    assert mixed["pass_at_1"] == pytest.approx(1 / 3) and mixed["pass_at_2"] == pytest.approx(2 / 3)
    assert set(mixed) >= {"distinct_2", "pass_at_1", "pass_at_2"} and "pass_at_4" not in mixed
    assert same["structure_alignment"] == 1.0 and same["unscored"] == 0.0  # k copies of the teacher's trace


def test_diversity_scores_the_structure_of_all_k_samples():
    """structure_alignment over all k samples: each sample as rlkd_structure scores it, the mean over
    the scored ones; the unscored share beside it; a problem with none scored is None."""
    row, other = BUNDLED_ROWS[0], BUNDLED_ROWS[1]
    doc = _doc(row)
    samples = [_completion(row), _completion(other), "no tags at all", _completion(row, "-1")]
    one_by_one = [structure(doc, c) for c in samples]
    got = diversity(doc, samples)
    scored = [g["structure_alignment"] for g in one_by_one if g["structure_alignment"] is not None]
    assert len(scored) == 3 and got["structure_alignment"] == pytest.approx(sum(scored) / 3)
    assert 0.0 < got["structure_alignment"] < 1.0 and got["unscored"] == pytest.approx(1 / 4)
    assert got["matched_prefix"] == pytest.approx(sum(g["matched_prefix"] for g in one_by_one
                                                      if g["matched_prefix"] is not None) / 3)
    none = diversity(doc, ["no tags", "still none"])
    assert none["structure_alignment"] is None and none["unscored"] == 1.0 and none["structural_divergence"] == 0.0
    # mean over samples, then over problems: lm-eval's aggregation of the per-problem values
    agg = utils.nanmean([got["structure_alignment"], none["structure_alignment"], 1.0])
    assert agg == pytest.approx((got["structure_alignment"] + 1.0) / 2)


def test_nothing_measured_aggregates_to_nan_never_zero(local_copies):
    """What lm-eval does with the per-problem values: the task's own aggregation from its YAML."""
    import math

    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(tasks_path()), include_defaults=False, metadata=local_copies)
    tasks = tm.load(["rlkd_structure", "rlkd_diversity"])["tasks"]
    for name in ("rlkd_structure", "rlkd_diversity"):
        agg = tasks[name].aggregation()
        for metric in ("structure_alignment", "matched_prefix", "step_ratio"):
            assert math.isnan(agg[metric]([None, None, None])), (name, metric)
            assert agg[metric]([None, 0.5, 1.0]) == 0.75  # one unscored problem does not make it NaN
        assert agg["unscored"]([1.0, 0.0]) == 0.5
    doc = _doc(BUNDLED_ROWS[0])
    rows = [structure(doc, "no thinking in tags"), structure(doc, "<think>cut off")]
    assert math.isnan(tasks["rlkd_structure"].aggregation()["structure_alignment"](
        [r["structure_alignment"] for r in rows]))


def test_diversity_refuses_fewer_than_two_samples():
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(tasks_path()), include_defaults=False)
    task = tm.load(["rlkd_diversity"])["tasks"]["rlkd_diversity"]
    task.config.repeats = 1
    with pytest.raises(ConfigError, match=r"rlkd_diversity .*needs repeats >= 2 \(got 1\).*--repeats"):
        task.build_all_requests(limit=1)  # what lm-eval calls before it generates anything
    task.config.repeats = 2
    task.check_repeats()
    one = tm.load(["rlkd_structure"])["tasks"]["rlkd_structure"]  # one sample per problem, as named
    assert one.config.repeats == 1 and "one sample per problem" in one.config.task_alias
    one.check_repeats()


def test_eval_data_without_gold_is_refused_at_load(tmp_path):
    from lm_eval.tasks import TaskManager

    bad = tmp_path / "nogold.jsonl"
    rows = [dict(BUNDLED_ROWS[0]), {**BUNDLED_ROWS[1], "gold": ""}, {**BUNDLED_ROWS[2], "gold": None}]
    rows[0].pop("gold")
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"nogold.jsonl: field 'gold': no gold answer in 3 of 3 rows \(lines 1, 2, 3\)"):
        evaldata.load_structure_rows(str(bad))
    tm = TaskManager(include_path=str(tasks_path()), include_defaults=False, metadata={"eval_data": str(bad)})
    with pytest.raises(DataError, match="nogold.jsonl.*no gold answer"):  # plain lm-eval: the loader refuses
        tm.load(["rlkd_structure"])


def test_accuracy_suite_errors_name_the_local_copy(tmp_path, local_copies):
    import datasets

    aime = tmp_path / "aime.jsonl"
    aime.write_text(json.dumps({"problem": "Find 1 + 1.", "answer": "2"}) + "\n" + json.dumps({"problem": "x"}) + "\n")
    with pytest.raises(DataError, match=rf"^{aime}:2: row has no problem/answer \(has problem; the schema of "
                                        r"HuggingFaceH4/aime_2024\)"):
        evaldata.math_docs("rlkd_aime24", {"aime24_data": str(aime)})
    gpqa = tmp_path / "gpqa"
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"Question": "Q?", "Correct Answer": "a"}])}
                         ).save_to_disk(str(gpqa))
    with pytest.raises(DataError, match=rf"^{gpqa}:1: row lacks Question"):
        evaldata.gpqa_docs({"gpqa_data": str(gpqa)})


def test_the_filters_score_every_problem_of_the_task_in_one_batch():
    rows = BUNDLED_ROWS[:3]
    docs = [_doc(r) for r in rows]
    scorer = utils.scorer_for(docs[0])
    calls = scorer.stats.calls
    recs = utils.score_against_teacher([[_completion(r)] for r in rows], docs)
    assert scorer.stats.calls == calls + 1 and [len(r) for r in recs] == [1, 1, 1]
    recs = [json.loads(r[0]) for r in recs]  # JSON strings: lm-eval's sample log keeps them readable
    assert all(r["alignment"]["normalized"] == 1.0 and r["error"] is None for r in recs)
    out = [json.loads(o) for o in utils.score_samples([[_completion(r), _completion(r)] for r in rows], docs)]
    assert scorer.stats.calls == calls + 2  # k samples of 3 problems, decomposed together
    assert [len(o["samples"]) for o in out] == [2, 2, 2]
    assert all(smp["alignment"]["normalized"] == 1.0 for o in out for smp in o["samples"])  # vs the teacher
    assert all(sorted(p[:2] for p in o["pairs"]) == [[0, 1], [1, 0]] and all(p[3] for p in o["pairs"])
               for o in out)


def test_accuracy_suite_scoring():
    mdoc = {"gold": "\\frac{1}{4}"}
    got = utils.process_math(mdoc, [["</think>\\boxed{0.25}", "<think>\\boxed{1/4}", "</think>\\boxed{1/4}",
                                     "</think>3"]])
    assert got == {"pass_at_1": 0.5, "pass_at_2": pytest.approx(5 / 6), "pass_at_4": 1.0, "n_samples": 4.0}
    got = utils.process_gpqa({"gold": "C"}, [["</think>Answer: C", "</think>Answer: A"]])
    assert got["pass_at_1"] == 0.5 and got["n_samples"] == 2.0
