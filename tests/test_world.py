"""The mini study's world: seeded problems with several valid orders, a teacher whose traces the
exact parser reads back into their true steps, the true-structure check, and the world teacher
and decomposer through the toolkit's own commands (``traces --generate``, ``build-gsrm-data``)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rlkd_bench.cli import cli
from rlkd_bench.data import world
from rlkd_bench.decompose import get_decomposer
from rlkd_bench.llm import make_engine
from rlkd_bench.llm.base import ChatRequest
from rlkd_bench.products import write_jsonl
from rlkd_bench.structure import Decomposition, Step, parse_steps
from rlkd_bench.teacher import teacher_messages


def test_problems_are_seeded_per_index_and_branch():
    assert world.problems(10, 3)[:4] == world.problems(4, 3)
    assert world.problems(4, 3) != world.problems(4, 4)
    ps = world.problems(300, 5)
    assert {len(p.valid_orders()) for p in ps} == {2, 6, 8}  # pair, triple, chain
    for p in ps:
        assert world.read_problem(p.text(), p.id) == p
        assert p.gold >= 0 and all(world.respects(p, o) for o in p.valid_orders())


def test_the_exact_parser_reads_every_teacher_trace_back_into_its_truth():
    seen_orders: dict[str, set] = {}
    correct = 0
    for p in world.problems(400, 6):
        for seed in range(3):
            t = world.teach(p, seed)
            assert world.parse(p.text(), t.reasoning) == t.truth, (p.text(), t.reasoning)
            assert world.true_structure(p, t.truth) == {"valid_plan": 1.0, "steps_right": 1.0}
            assert t.order in p.valid_orders()
            correct += t.correct
            seen_orders.setdefault(p.text(), set()).add(t.order)
    assert 0.75 < correct / 1200 < 0.95  # the teacher slips on some samples (15%)
    assert any(len(o) > 1 for o in seen_orders.values())  # samples take different branches


def test_true_structure_tells_a_valid_plan_from_a_broken_one():
    p = world.read_problem("Let\na=3+4\nb=12-5\nz=a+b\nFind z.")
    assert p is not None and p.valid_orders() == [("a", "b", "z"), ("b", "a", "z")]
    a = Step(world.meta_text(p, "a"), "a=3+4", "7")
    b = Step(world.meta_text(p, "b"), "b=12-5", "7")
    z = Step(world.meta_text(p, "z"), "z=a+b", "14")
    for steps, plan in (((b, a, z), 1.0), ((a, b, z), 1.0), ((a, z, b), 0.0), ((a, b), 0.0),
                        ((Step(world.meta_text(p, "b"), "a=3+4", "7"), b, z), 0.0),  # meta names another
                        ((Step(world.meta_text(p, "a"), "a=3+5", "8"), b, z), 0.0)):  # wrong definition
        assert world.true_structure(p, Decomposition(steps))["valid_plan"] == plan, steps
    assert world.true_structure(p, None) == {"valid_plan": 0.0, "steps_right": 0.0}
    # a student's thinking: a step with no choice before it has no reason; checks are not steps
    d = world.parse(p.text(), "b=12-5=7.\nCheck: 7+5=12. Good.\nNow z, from a and b.\nz=a+b=7+7=14.")
    assert [s.subproblem for s in d.steps] == ["b=12-5", "z=a+b"]
    assert d.steps[0].meta == world.NO_REASON and d.steps[1].meta == world.meta_text(p, "z")
    assert world.parse(p.text(), "no steps here") is None


def test_world_teacher_engine_and_decomposer_behind_the_common_interfaces():
    p = world.problems(1, 7)[0]
    engine = make_engine("world:teacher")
    reqs = [ChatRequest(messages=teacher_messages(p.text()), params={"seed": s}) for s in (0, 1)]
    comps = engine.generate(reqs)
    assert [c.text for c in comps] == [world.teach(p, 0).completion(), world.teach(p, 1).completion()]
    bad = engine.generate([ChatRequest(messages=({"role": "user", "content": "What is 2+2?"},))])[0]
    assert not bad.ok and not bad.retryable
    dec = get_decomposer("world")
    t = world.teach(p, 0)
    res = dec.decompose([{"problem": p.text(), "reasoning": t.reasoning}, {"problem": p.text(), "reasoning": "hm"}])
    assert res[0].ok and res[0].decomposition == t.truth
    assert not res[1].ok and "no step" in res[1].error


def test_traces_and_gsrm_data_through_the_cli(tmp_path):
    problems = tmp_path / "problems.jsonl"
    ps = world.problems(30, 9)
    write_jsonl(problems, [p.row() for p in ps])
    run = CliRunner()
    res = run.invoke(cli, ["traces", "--generate", "--teacher", "world:teacher", "--traces", str(problems),
                           "--n", "4", "--out", str(tmp_path / "traces")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (tmp_path / "traces" / "traces.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and all(r["verified"] for r in rows)
    by_id = {p.id: p for p in ps}
    for r in rows:  # the first correct sample (the paper's rule): a later one only after a slip
        p = by_id[r["id"]]
        assert world.teach(p, r["sample"]).correct
        assert not any(world.teach(p, s).correct for s in range(r["sample"]))
    res = run.invoke(cli, ["build-gsrm-data", "--traces", str(tmp_path / "traces"), "--annotator", "world",
                           "--out", str(tmp_path / "gsrm"), "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    ann = [json.loads(x) for x in (tmp_path / "gsrm" / "annotations.jsonl").read_text().splitlines()]
    assert len(ann) == 30
    traces = {r["id"]: r for r in rows}
    for a in ann:  # the annotations are the true decompositions, in the one step format
        t = traces[a["id"]]
        truth = world.parse(t["problem"], t["reasoning"])
        assert Decomposition.from_dict(a) == truth
        assert parse_steps(a["raw"]) == truth if a.get("raw") else True


def test_unknown_world_model_is_refused():
    from rlkd_bench.errors import ConfigError

    with pytest.raises(ConfigError, match="world:teacher"):
        make_engine("world:gpt")
