"""The structure reward scores real completions inside GRPOTrainer.

A random tiny student never closes ``</think>``, so in the default tiny run every completion is
counted as a failed structure score (``structure/failed``) and no number ever reaches the
advantage. Here the student is first warm-started by the SFT baseline (the recipe's own library
path) on one short R1-style trace until it writes that trace by heart; then the real recipe runs
RLKD from it (heuristic decomposer, lexical matcher) and the structure reward must give real
numbers: the student's thinking is decomposed into the teacher's steps and the steps match.

The first test (fast) pins a heuristic-decomposer bug the structure reward inherited (fixed in
heuristic-v3): a trace that starts with its first step, without an opening sentence, lost that step.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "configs"
# one 2-step trace: the heuristic decomposer finds "add 2 and 3 -> 5" and "multiply by 4 -> 20"
TRACE = {"id": "warm-1", "domain": "math", "problem": "Add 2 and 3, then multiply the sum by 4.",
         "reasoning": "Okay, so I need to add two numbers and then scale the sum.\n\n"
                      "First, I add 2 and 3: 2 + 3 = 5.\n\nNext, I multiply the sum by 4: 5 * 4 = 20."
                      "\n\nSo the answer is \\boxed{20}.",
         "answer": "\\boxed{20}", "gold": "20", "source": "test", "verified": True}
# the SFT target (<think>trace</think><answer>...</answer>) is 96 tokens with the tiny tokenizer
MAX_COMPLETION = 128


def _structure(completions: list[str], teacher_steps: list[dict]) -> list[float | None]:
    """The structure reward of the tiny config (heuristic + lexical), called as GRPOTrainer calls it."""
    import asyncio

    from rlkd_bench.reward.rewards import get_reward_funcs

    [structure] = get_reward_funcs(["structure"], structure={"decomposer": "heuristic", "matcher": "lexical",
                                                             "normalize": False, "timeout_s": 60})
    n = len(completions)
    return asyncio.run(structure([[]] * n, completions, problem=[TRACE["problem"]] * n,
                                 teacher_steps=[teacher_steps] * n))


def test_a_trace_that_starts_with_its_first_step_keeps_it():
    """Without an opening sentence the first step must still count: the same two steps score the same."""
    from rlkd_bench.decompose import get_decomposer

    steps = get_decomposer("heuristic").decompose([{"id": "x", "problem": TRACE["problem"],
                                                    "reasoning": TRACE["reasoning"], "answer": TRACE["answer"]}])
    teacher = steps[0].decomposition.to_dict()["steps"]
    body = TRACE["reasoning"].split("\n\n", 1)[1]  # "First, I add 2 and 3: 2 + 3 = 5. ..." without "Okay, ..."
    tail = "\n</think>\n<answer>\nThe final answer is \\boxed{20}.\n</answer>"
    with_intro, without_intro = _structure([f"<think>\n{TRACE['reasoning']}{tail}", f"<think>\n{body}{tail}"],
                                           teacher)
    assert with_intro == 2.0
    assert without_intro == 2.0


@pytest.fixture(scope="module")
def warm_student(tiny_model_dir, tmp_path_factory):
    """(rlkd-data dir, its one row, an SFT checkpoint that writes the row's teacher trace greedily).

    The data is made by the real ``build-rlkd-data`` (teacher steps from the heuristic decomposer);
    the student by the SFT baseline of ``recipes/train_rlkd.py`` run in process: 80 steps at lr 5e-3
    on the one row (50 already suffice on CPU, deterministic).
    """
    import torch
    from click.testing import CliRunner
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlkd_bench.cli import cli
    from rlkd_bench.rl import parse_config, teacher_completion, train
    from rlkd_bench.rlkd_data import load_rlkd_data

    work = tmp_path_factory.mktemp("warm-student")
    (work / "traces.jsonl").write_text(json.dumps(TRACE) + "\n")
    res = CliRunner().invoke(cli, ["build-rlkd-data", "--traces", str(work / "traces.jsonl"), "--test-size", "0",
                                   "--out", str(work / "data"), "--no-progress"])
    assert res.exit_code == 0, res.output
    row = load_rlkd_data(str(work / "data"))[0]

    cfg = parse_config(["--config", str(CONFIGS / "sft_tiny.yaml"), f"dataset={work / 'data'}",
                        f"output_dir={work / 'sft'}", f"model_name_or_path={tiny_model_dir}", "max_steps=80",
                        "per_device_train_batch_size=1", "learning_rate=5e-3", "warmup_steps=0",
                        "max_grad_norm=1.0", "max_length=512", "logging_steps=40"])
    train(cfg, log=lambda *a: None)

    # the precondition of the RLKD run below: greedy decoding gives back the whole target
    tok = AutoTokenizer.from_pretrained(work / "sft")
    model = AutoModelForCausalLM.from_pretrained(work / "sft")
    ids = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)["input_ids"]
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=MAX_COMPLETION, do_sample=False)
    text = tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)
    assert text == teacher_completion(row), f"the warm-start did not memorise its trace: {text!r}"
    return work / "data", row, work / "sft"


@pytest.mark.slow
def test_teacher_steps_are_the_heuristic_decomposition_of_the_trace(warm_student):
    from rlkd_bench.decompose import get_decomposer

    _, row, _ = warm_student
    res = get_decomposer("heuristic").decompose([{"id": "x", "problem": TRACE["problem"],
                                                  "reasoning": TRACE["reasoning"], "answer": TRACE["answer"]}])
    assert res[0].ok
    assert row["teacher_steps"] == res[0].decomposition.to_dict()["steps"]
    assert row["n_teacher_steps"] == 2 and row["teacher_steps"][1]["answer"] == "20"


@pytest.mark.slow
def test_structure_reward_is_a_real_number_inside_grpo(warm_student, tmp_path):
    """RLKD from the warm student through the real recipe: the structure reward scores completions."""
    data, row, sft = warm_student
    out = tmp_path / "rlkd-warm"
    cmd = [sys.executable, str(ROOT / "recipes" / "train_rlkd.py"), "--config", str(CONFIGS / "rlkd_tiny.yaml"),
           f"dataset={data}", f"output_dir={out}", f"model_name_or_path={sft}", "max_steps=2",
           "per_device_train_batch_size=4", "num_generations=4", f"max_completion_length={MAX_COMPLETION}",
           "temperature=0.1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, f"exit {res.returncode}\n" + res.stdout[-3000:] + res.stderr[-5000:]

    state = json.loads((out / "trainer_state.json").read_text())
    steps = [h for h in state["log_history"] if "train_runtime" not in h]
    assert [h["step"] for h in steps] == [1, 2]
    n_teacher = row["n_teacher_steps"]
    for h in steps:
        structure = h["rewards/structure/mean"]
        assert isinstance(structure, (int, float)) and math.isfinite(structure), h
        assert 0.0 < structure <= n_teacher, h  # the paper's sum of step rewards: at most n_teacher
        assert h["structure/failed"] < 1.0, h
        assert h["structure/no_think_end"] < 1.0 and h["structure/decompose_failed"] == 0.0, h
        # the scored completions were decomposed and aligned step by step with the teacher's
        assert h["structure/teacher_steps"] == n_teacher and h["structure/student_steps"] >= 1, h
        assert h["structure/matched_prefix"] > 0, h
        for name in ("accuracy", "format", "tag_count"):
            value = h[f"rewards/{name}/mean"]
            assert isinstance(value, (int, float)) and math.isfinite(value), (name, h)
        assert h["rewards/format/mean"] > 0 and h["rewards/tag_count/mean"] > 0, h
        assert h["rewards/accuracy/mean"] > 0, h  # the memorised answer, 20, is the gold

    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["structure_completions"] == 8
    assert counts["structure_failed"] < counts["structure_completions"]


class _FailAfter:
    """A fault proxy (tests/faultproxy.py) in front of a real server that forwards the first
    ``passes`` chat requests and answers 500 to every later one: a GSRM that answers the recipe's
    preflight, then goes down. Listing the models (GET) always reaches the server."""

    def __new__(cls, upstream_port: int, passes: int):
        from faultproxy import Fault, FaultProxy

        class FailAfter(FaultProxy):
            async def _handle(self, reader, writer):
                with self._lock:
                    if self.count >= passes and not self._schedule:
                        self._schedule.extend([Fault("500")] * 10_000)
                await super()._handle(reader, writer)

        return FailAfter(upstream_port)


@pytest.mark.slow
def test_a_gsrm_that_goes_down_after_the_preflight_stops_the_run_with_70(warm_student, tiny_server, tmp_path):
    """RLKD from the warm student (its completions close </think>, so each is sent to the GSRM) with
    the decomposer a served GSRM that answers the preflight and then fails every request: the run
    stops after structure_max_failed_steps steps with exit 70 and the reason, and writes no
    rlkd-checkpoint (before, it trained all its steps as GRPO and exited 0)."""
    data, _row, sft = warm_student
    _url, model_id, counter = tiny_server
    proxy = _FailAfter(counter.upstream[1], passes=1).start()
    try:
        out = tmp_path / "rlkd-dead-gsrm"
        cmd = [sys.executable, str(ROOT / "recipes" / "train_rlkd.py"), "--config", str(CONFIGS / "rlkd_tiny.yaml"),
               f"dataset={data}", f"output_dir={out}", f"model_name_or_path={sft}", "max_steps=6",
               "per_device_train_batch_size=4", "num_generations=4", f"max_completion_length={MAX_COMPLETION}",
               "temperature=0.1", f"structure_decomposer=gsrm:{proxy.url}", "structure_gsrm_max_new_tokens=16",
               "structure_max_failed_steps=2", 'structure_engine_options={"max_retries": 0}', "logging_steps=1"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    finally:
        proxy.stop()
    assert res.returncode == 70, f"exit {res.returncode}\n" + res.stdout[-3000:] + res.stderr[-5000:]
    err = res.stderr
    assert "the structure reward scored no completion in 2 steps in a row, its models not answering" in err
    assert "up to step 2" in err and "request failed" in err and "Traceback" not in err
    # the preflight, then in each of the 2 steps the 4 completions' requests (identical ones sent once), refused
    assert 1 + 2 <= proxy.count <= 1 + 2 * 4
    assert not out.exists()
