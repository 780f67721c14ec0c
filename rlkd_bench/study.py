"""RLKD in miniature: the stages of ``make mini-study`` and the figures only the world can give.

The study adds no second path through the method. Each stage is one of the toolkit's own
commands (``rlkd-bench traces``, ``build-gsrm-data``, ``build-rlkd-data``, ``make train-gsrm``,
``make train-rlkd``, ``rlkd-bench eval``, ``rlkd-bench report``) run as a subprocess with its log
in ``OUT/logs/``, or a small step of the world's own (writing its problems, building the tiny
base models, scoring the GSRM and the students against the true structure).

Resuming: a stage's fingerprint is a hash of what it runs and of its inputs' fingerprints;
``OUT/stages.json`` keeps the fingerprint of every stage that finished. A rerun reuses a stage
whose output exists and whose fingerprint matches, and rebuilds it (from scratch) otherwise, so
changing a size or a step count rebuilds exactly what depends on it. A stage that fails stops the
study with its command and the end of its log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlkd_bench.configs import StudyConfig
from rlkd_bench.errors import RlkdError
from rlkd_bench.products import runtime_info, write_json, write_jsonl, write_text
from rlkd_bench.report import differences_note, differences_table, eval_cell

STATE = "stages.json"
STUDY_VERSION = 1  # bump when a stage's meaning changes: every fingerprint changes with it
EVAL_TASKS = "rlkd_diversity"  # k samples per problem: accuracy, structure and diversity from the same samples
PROMPT_STYLE = "r1"  # no system turn: the problem and R1's instruction (a short prompt for a tiny model)
GSRM_MAX_NEW_TOKENS = 320  # the world's longest true decomposition is about 210 tokens
WORLD_TRUTH_TASK = "world_truth"
# the figures of the study, in the report's order: (task/metric, label)
FIGURES = (
    ("rlkd_diversity/pass_at_1", "accuracy (pass@1)"),
    ("rlkd_diversity/pass_at_{k}", "pass@{k}"),
    ("rlkd_diversity/structure_alignment", "structure alignment to the teacher"),  # over all k samples
    ("rlkd_diversity/distinct_structures", "distinct structures among k"),
    (f"{WORLD_TRUTH_TASK}/true_structure", "agreement with the true structure"),
)


class StudyError(RlkdError):
    """A stage failed: the message names the stage, its command and its log."""

    exit_code = 1


@dataclass
class Stage:
    """One step of the study: a command (or a function of the world) that makes ``output``."""

    name: str
    output: Path
    cmd: list[str] | None = None
    fn: Callable[[], Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)  # what shapes a function stage's output
    after: tuple[str, ...] = ()

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "cmd": self.cmd, "params": self.params, "version": STUDY_VERSION}


def fingerprint(stage: Stage, upstream: dict[str, str], *, threads: int | None = None) -> str:
    """A hash of what the stage runs, of the fingerprints of the stages it reads and of the torch
    thread count it runs with (other threads, other float sums, other figures)."""
    ident: dict[str, Any] = {"stage": stage.identity(), "after": {n: upstream[n] for n in stage.after}}
    if threads is not None:
        ident["threads"] = threads
    blob = json.dumps(ident, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


class Runner:
    """Runs waves of stages (side by side within a wave), reusing the ones already built.

    ``threads``: torch's thread count in every stage, the same however many stages run side by
    side and however many cores the machine has, so that two machines with the same torch give
    the same figures (None: 1 when stages run side by side, else torch's default)."""

    def __init__(self, out: Path, *, jobs: int = 2, env: dict[str, str] | None = None, log: Callable = print,
                 threads: int | None = None):
        self.out = out
        self.jobs = max(1, jobs)
        self.threads = threads
        self.env = dict(env or os.environ)
        self.log = log
        self.state: dict[str, Any] = self._read_state()
        self.prints: dict[str, str] = {}
        self.timings: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()

    def _say(self, line: str) -> None:
        """One log line at a time: stages side by side would otherwise interleave theirs."""
        with self._log_lock:
            self.log(line)

    def _read_state(self) -> dict[str, Any]:
        p = self.out / STATE
        if not p.is_file():
            return {}
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return {}  # a broken state only costs a rebuild
        return data if isinstance(data, dict) else {}

    def _save_state(self) -> None:
        write_json(self.out / STATE, self.state)

    def run(self, wave: Sequence[Stage]) -> None:
        todo = []
        for stage in wave:
            fp = fingerprint(stage, self.prints, threads=self.threads)
            self.prints[stage.name] = fp
            done = self.state.get(stage.name) or {}
            if done.get("fingerprint") == fp and stage.output.exists():
                self.timings[stage.name] = {"seconds": done.get("seconds"), "reused": True}
                self.log(f"  reuse  {stage.name} ({stage.output})")
                continue
            todo.append((stage, fp))
        if not todo:
            return
        # the world's own steps run here, one by one (fast; imports are not thread-safe); the
        # commands run side by side, each a process of its own
        failures = [e for s, fp in todo if s.fn is not None and (e := self._run_one(s, fp, None))]
        cmds = [(s, fp) for s, fp in todo if s.fn is None]
        workers = max(1, min(self.jobs, len(cmds)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            # side by side on a small machine, torch's own threads would fight: one each
            threads = self.threads or (1 if workers > 1 else None)
            futures = [pool.submit(self._run_one, s, fp, threads) for s, fp in cmds]
            failures += [e for f in futures if (e := f.result())]
        if failures:
            raise StudyError("\n\n".join(failures))

    def _done(self, stage: Stage, fp: str, seconds: float) -> None:
        """Record a finished stage at once, so a study killed mid-wave keeps it."""
        with self._lock:
            self.timings[stage.name] = {"seconds": seconds, "reused": False}
            self.state[stage.name] = {"fingerprint": fp, "seconds": seconds,
                                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
            self._save_state()

    def _run_one(self, stage: Stage, fp: str, threads: int | None) -> str | None:
        """Run a stage from scratch; returns None, or what went wrong (command, log, its end)."""
        if stage.output.is_dir():
            shutil.rmtree(stage.output)
        elif stage.output.exists():
            stage.output.unlink()
        with self._lock:
            self.state.pop(stage.name, None)
        t0 = time.time()
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{stage.name}.log"
        self._say(f"  run    {stage.name}")
        if stage.fn is not None:
            try:
                with _torch_threads(self.threads):
                    stage.fn()
            except Exception as e:  # a world step: say which, with the error
                write_text(log_path, f"{type(e).__name__}: {e}\n")
                return f"stage {stage.name} failed: {type(e).__name__}: {e}"
        else:
            assert stage.cmd is not None
            env = dict(self.env)
            if threads:
                env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            with open(log_path, "w", encoding="utf-8") as fh:
                fh.write("$ " + " ".join(stage.cmd) + "\n")
                fh.flush()
                rc = subprocess.run(stage.cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
            if rc != 0:
                return (f"stage {stage.name} failed (exit {rc})\ncommand: {' '.join(stage.cmd)}\nlog: {log_path}\n"
                        f"--- end of the log ---\n{_tail(log_path)}")
            if not stage.output.exists():
                return f"stage {stage.name} exited 0 but wrote no {stage.output}\nlog: {log_path}"
        seconds = round(time.time() - t0, 1)
        self._done(stage, fp, seconds)
        self._say(f"  done   {stage.name} in {seconds:.0f} s")
        return None


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run a world step in this process with torch on ``n`` threads (as the stage processes are)."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---- the world's own steps -----------------------------------------------------------------------


def write_world(out: Path, *, seed: int, n: int) -> None:
    """The world's problems (the input of ``rlkd-bench traces --generate``)."""
    from rlkd_bench.data import world

    write_jsonl(out, [p.row() for p in world.problems(n, seed)])


def build_base_model(out: Path, *, hidden: int, layers: int, vocab_size: int, max_new_tokens: int) -> None:
    """A random tiny Qwen2 with a tokenizer learnt on the world's text (digits one by one)."""
    from rlkd_bench.data import world
    from rlkd_bench.tiny import build_tiny_model

    build_tiny_model(out, hidden_size=hidden, layers=layers, vocab_size=vocab_size, texts=world.tokenizer_texts(),
                     split_digits=True, max_new_tokens=max_new_tokens)


def gsrm_quality(traces: Path, gsrm: Path, out: Path) -> dict[str, Any]:
    """How the tiny GSRM decomposes held-out world traces, against the truth (the exact parser).

    The GSRM decomposes every eval trace through the decomposer the reward uses; per trace:
    decomposed at all, identical to the truth, the structure rule's score of its steps against
    the true steps (exact matcher, normalised), and whether its steps form a valid plan.
    """
    from rlkd_bench.data import world
    from rlkd_bench.reward.scorer import StructureScorer
    from rlkd_bench.tasks.evaldata import read_jsonl_rows

    # the reward's own scorer: the same decomposer and matcher the rlkd-gsrm arm trains with
    scorer = StructureScorer(f"gsrm:{gsrm}", "exact", normalize=True, gsrm_max_new_tokens=GSRM_MAX_NEW_TOKENS)
    rows = read_jsonl_rows(traces)
    results = scorer.decompose([r["problem"] for r in rows], [r["reasoning"] for r in rows],
                               [r.get("answer", "") for r in rows])
    pairs, plans, reasons, identical = [], [], {}, 0
    for r, res in zip(rows, results, strict=True):
        truth, problem = world.parse(r["problem"], r["reasoning"]), world.read_problem(r["problem"])
        if not res.ok or truth is None or problem is None:
            reason = (res.error or "no truth")[:80]
            reasons[reason] = reasons.get(reason, 0) + 1
            continue
        d = res.decomposition
        identical += d.steps == truth.steps  # type: ignore[union-attr]
        pairs.append((truth, d))
        plans.append(world.true_structure(problem, d)["valid_plan"])  # type: ignore[arg-type]
    scores = [a.value(True) if a is not None else 0.0 for a in scorer.align_pairs(pairs)]
    n = len(rows) or 1
    result = {"traces": len(rows), "decomposed": len(pairs) / n, "identical": identical / n,
              "structure_score": sum(scores) / n, "valid_plan": sum(plans) / n, "failures": reasons}
    write_json(out, result)
    return result


def world_truth(eval_dir: Path) -> Path:
    """Per eval problem: how often the student's samples follow a true structure of the problem.

    Reads the k samples per problem that ``rlkd_diversity`` logged, parses each with the world's
    exact decomposer and writes ``samples_world_truth.jsonl`` in lm-eval's sample shape (so
    ``rlkd-bench report`` reads it like any task): ``true_structure`` (share of samples whose
    steps are a valid plan) and ``true_steps`` (share of the problem's quantities worked out right).
    """
    from rlkd_bench.data import world

    src = next(iter(sorted(eval_dir.glob("samples_rlkd_diversity*.jsonl"))), None)
    if src is None:
        raise StudyError(f"{eval_dir}: no samples_rlkd_diversity*.jsonl (was the eval run with --log-samples?)")
    rows = []
    for line in src.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        doc = rec.get("doc") or {}
        problem = world.read_problem(str(doc.get("problem", "")))
        samples = [s for group in rec.get("resps") or [] for s in (group if isinstance(group, list) else [group])]
        if problem is None or not samples:
            continue
        figs = [world.true_structure(problem, world.parse(problem.text(), str(s).split("</think>")[0]))
                for s in samples]
        rows.append({"doc_id": rec.get("doc_id"), "doc": {"id": doc.get("id"), "problem": doc.get("problem")},
                     "filter": "none", "metrics": ["true_structure", "true_steps"],
                     "true_structure": sum(f["valid_plan"] for f in figs) / len(figs),
                     "true_steps": sum(f["steps_right"] for f in figs) / len(figs)})
    out = eval_dir / f"samples_{WORLD_TRUTH_TASK}.jsonl"
    write_jsonl(out, rows)
    return out


def teacher_figures(traces: Path) -> dict[str, Any]:
    """What the teacher's own traces show on the eval world: the ceiling of structure figures."""
    from rlkd_bench.data import world
    from rlkd_bench.tasks.evaldata import read_jsonl_rows

    rows = read_jsonl_rows(traces)
    orders = {}
    plans = 0.0
    for r in rows:
        p = world.read_problem(r["problem"])
        d = world.parse(r["problem"], r["reasoning"])
        if p is not None:
            plans += world.true_structure(p, d)["valid_plan"]
            orders[r["id"]] = len(p.valid_orders())
    return {"traces": len(rows), "valid_plan": plans / len(rows) if rows else 0.0,
            "mean_valid_orders": sum(orders.values()) / len(orders) if orders else 0.0}


# ---- the plan ------------------------------------------------------------------------------------


def model_name(arm: str, seed: int) -> str:
    return f"{arm}-seed{seed}"


def plan(cfg: StudyConfig, root: Path, *, python: str = sys.executable, make: str = "make",
         venv: str | None = None) -> list[list[Stage]]:
    """The study as waves of stages; stages within a wave do not read each other."""
    out = Path(cfg.out)
    world_dir, products, models, evals = out / "world", out / "products", out / "models", out / "evals"
    cli = [python, "-m", "rlkd_bench.cli"]
    conf = root / cfg.configs
    make_vars = [f"VENV={venv}"] if venv else []
    train_problems, eval_problems = world_dir / "train_problems.jsonl", world_dir / "eval_problems.jsonl"
    traces_train, traces_eval = products / "traces-train", products / "traces-eval"
    gsrm_data, gsrm = products / "gsrm-data", models / "gsrm"
    data_exact = products / "rlkd-data-exact"
    base_student, base_gsrm = models / "base-student", models / "base-gsrm"
    warmup = models / "warmup"

    def traces(name: str, world_stage: str, problems: Path, dest: Path) -> Stage:
        return Stage(name, dest, cmd=[*cli, "traces", "--generate", "--teacher", "world:teacher", "--traces",
                                      str(problems), "--n", str(cfg.teacher_samples), "--out", str(dest)],
                     after=(world_stage,))

    def rlkd_data(name: str, src: Path, decomposer: str, dest: Path, after: tuple[str, ...], test_size: str) -> Stage:
        return Stage(name, dest, cmd=[*cli, "build-rlkd-data", "--traces", str(src), "--decomposer", decomposer,
                                      "--out", str(dest), "--test-size", test_size, "--prompt", PROMPT_STYLE,
                                      "--no-progress"], after=after)

    def train(name: str, config: str, dest: Path, data: Path, base: Path, steps: int, seed: int | None,
              after: tuple[str, ...], target: str = "train-rlkd", extra: Sequence[str] = ()) -> Stage:
        model_key = "model" if target == "train-gsrm" else "model_name_or_path"
        args = [f"{model_key}={base}", f"output_dir={dest}", f"max_steps={steps}", *extra]
        if seed is not None:
            args.append(f"seed={seed}")
        config_file = conf / config
        content = hashlib.sha256(config_file.read_bytes()).hexdigest()[:16] if config_file.is_file() else None
        return Stage(name, dest, cmd=[make, "-s", target, *make_vars, f"CONFIG={config_file}", f"DATA={data}",
                                      f"TRAIN_ARGS={' '.join(args)}"], params={"config_sha256": content}, after=after)

    waves: list[list[Stage]] = [[
        Stage("world-train", train_problems, fn=lambda: write_world(train_problems, seed=cfg.world_seed,
                                                                     n=cfg.train_problems),
              params={"seed": cfg.world_seed, "n": cfg.train_problems}),
        Stage("world-eval", eval_problems, fn=lambda: write_world(eval_problems, seed=cfg.eval_world_seed,
                                                                   n=cfg.eval_problems),
              params={"seed": cfg.eval_world_seed, "n": cfg.eval_problems}),
        Stage("base-student", base_student, fn=lambda: build_base_model(
            base_student, hidden=cfg.student_hidden, layers=cfg.student_layers, vocab_size=cfg.vocab_size,
            max_new_tokens=cfg.max_gen_toks),
              params={"hidden": cfg.student_hidden, "layers": cfg.student_layers, "vocab": cfg.vocab_size,
                      "max_new_tokens": cfg.max_gen_toks}),
        Stage("base-gsrm", base_gsrm, fn=lambda: build_base_model(
            base_gsrm, hidden=cfg.gsrm_hidden, layers=cfg.gsrm_layers, vocab_size=cfg.vocab_size, max_new_tokens=320),
              params={"hidden": cfg.gsrm_hidden, "layers": cfg.gsrm_layers, "vocab": cfg.vocab_size}),
    ], [
        traces("traces-train", "world-train", train_problems, traces_train),
        traces("traces-eval", "world-eval", eval_problems, traces_eval),
    ], [
        Stage("gsrm-data", gsrm_data, cmd=[*cli, "build-gsrm-data", "--traces", str(traces_train), "--annotator",
                                           "world", "--out", str(gsrm_data), "--no-progress"],
              after=("traces-train",)),
        rlkd_data("rlkd-data-exact", traces_train, "world", data_exact, ("traces-train",), "0.05"),
    ], [
        train("gsrm", "gsrm.yaml", gsrm, gsrm_data, base_gsrm, cfg.gsrm_steps, None, ("gsrm-data", "base-gsrm"),
              target="train-gsrm"),
        train("warmup", "warmup.yaml", warmup, data_exact, base_student, cfg.warmup_steps, None,
              ("rlkd-data-exact", "base-student")),
    ]]
    arms = []
    for seed in cfg.seeds:
        for arm in cfg.arms:
            dest = models / model_name(arm, seed)
            if arm == "sft":
                arms.append(train(dest.name, "sft.yaml", dest, data_exact, warmup, cfg.arm_steps, seed,
                                  ("warmup", "rlkd-data-exact")))
            elif arm == "grpo":
                arms.append(train(dest.name, "grpo.yaml", dest, data_exact, warmup, cfg.arm_steps, seed,
                                  ("warmup", "rlkd-data-exact"), extra=[f"max_completion_length={cfg.max_gen_toks}"]))
            else:
                by_gsrm = arm == "rlkd-gsrm"
                decomposer = [f"structure_decomposer=gsrm:{gsrm}",
                              f"structure_gsrm_max_new_tokens={GSRM_MAX_NEW_TOKENS}"] if by_gsrm else \
                    ["structure_decomposer=world"]
                arms.append(train(dest.name, "rlkd.yaml", dest, data_exact, warmup, cfg.arm_steps, seed,
                                  ("warmup", "rlkd-data-exact") + (("gsrm",) if by_gsrm else ()),
                                  extra=[*decomposer, f"max_completion_length={cfg.max_gen_toks}"]))
    quality = out / "gsrm_quality.json"
    waves.append([Stage("gsrm-quality", quality, fn=lambda: gsrm_quality(traces_eval / "traces.jsonl", gsrm, quality),
                        after=("traces-eval", "gsrm")), *arms])

    def evaluate(name: str, model: Path, seed: int, after: tuple[str, ...]) -> Stage:
        dest = evals / name
        return Stage(f"eval-{name}", dest, cmd=[
            *cli, "eval", str(model), "--tasks", EVAL_TASKS, "--eval-data", str(traces_eval / "traces.jsonl"),
            "--decomposer", "world", "--matcher", "exact", "--prompt", PROMPT_STYLE, "--repeats", str(cfg.eval_repeats),
            "--max-gen-toks", str(cfg.max_gen_toks), "--output-path", str(dest), "--seed", str(seed),
            "--batch-size", str(cfg.eval_batch_size), "--device", "cpu"], after=after)

    evals_wave = [evaluate("warmup", warmup, cfg.seeds[0], ("warmup", "traces-eval"))]
    evals_wave += [evaluate(model_name(arm, seed), models / model_name(arm, seed), seed,
                            (model_name(arm, seed), "traces-eval")) for seed in cfg.seeds for arm in cfg.arms]
    waves.append(evals_wave)
    eval_dirs = [evals / s.output.name for s in evals_wave]
    waves.append([
        Stage("world-truth", out / "world_truth.json", fn=lambda: write_json(
            out / "world_truth.json", {d.name: str(world_truth(d)) for d in eval_dirs}),
              after=tuple(s.name for s in evals_wave)),
    ])
    run_dirs = [models / model_name(arm, seed) for seed in cfg.seeds for arm in cfg.arms]
    metric_args = [a for key, _ in figures(cfg) for a in ("--metric", key)]
    waves.append([Stage("report", out / "report", cmd=[
        *cli, "report", *map(str, run_dirs), *[a for d in eval_dirs for a in ("--eval", str(d))], *metric_args,
        "--out", str(out / "report")], after=("world-truth", *(s.name for s in evals_wave)))])
    return waves


def figures(cfg: StudyConfig) -> list[tuple[str, str]]:
    """The study's figures for its k (``eval_repeats``)."""
    k = cfg.eval_repeats
    return [(key.format(k=k), label.format(k=k)) for key, label in FIGURES]


# ---- running it and saying what it showed ----------------------------------------------------------


def run_study(cfg: StudyConfig, root: Path, *, log: Callable = print, venv: str | None = None) -> dict[str, Any]:
    """Run (or resume) every wave, then write ``OUT/REPORT.md``; returns the study's summary."""
    t0 = time.time()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": "0"}
    runner = Runner(out, jobs=cfg.jobs, env=env, log=log, threads=cfg.threads)
    waves = plan(cfg, root, venv=venv)
    for i, wave in enumerate(waves, start=1):
        log(f"wave {i}/{len(waves)}: {', '.join(s.name for s in wave)}")
        runner.run(wave)
    summary = write_study_report(cfg, out, runner.timings, time.time() - t0)
    log(f"mini study done in {time.time() - t0:.0f} s: {out / 'REPORT.md'}")
    return summary


def eval_dirs(cfg: StudyConfig, out: Path) -> list[Path]:
    """The eval dir of the warm start and of every arm and seed, in the order the plan makes them."""
    return [out / "evals" / "warmup", *(out / "evals" / model_name(arm, seed) for seed in cfg.seeds
                                        for arm in cfg.arms)]


def comparisons(arms_present: Sequence[str], cfg: StudyConfig) -> list[tuple[str, str]]:
    """The study's questions, A minus B: each RLKD arm against each baseline, each arm against the
    warm start."""
    pairs = [(r, b) for r in ("rlkd-exact", "rlkd-gsrm") for b in ("grpo", "sft")
             if r in arms_present and b in arms_present]
    return pairs + [(a, "warmup") for a in cfg.arms if a in arms_present and "warmup" in arms_present]


def paired_figures(cfg: StudyConfig, out: Path, figs: Sequence[tuple[str, str]], pairs: Sequence[tuple[str, str]]
                   ) -> list[dict[str, Any]]:
    """The paired test (``rlkd_bench.stats`` through the report's ``differences``) for every pair
    on every figure, from the eval dirs' per-problem values."""
    from rlkd_bench.report import differences, load_evals

    return differences(load_evals(eval_dirs(cfg, out)), [key for key, _ in figs], pairs) if pairs else []


def verdict(row: dict[str, Any] | None) -> int:
    """+1 / -1 when the paired test supports A above / below B, else 0 (no test, or not supported)."""
    if not row or not row.get("supported"):
        return 0
    return 1 if row["diff"] > 0 else -1


def headline(diffs: Sequence[dict[str, Any]], figs: list[tuple[str, str]], ev: dict[str, Any]) -> list[str]:
    """A few sentences that say what the paired test supports, and no more."""
    acc_key, acc_label = figs[0]
    label = dict(figs)
    by = {(r["a"], r["b"], r["metric"]): r for r in diffs}
    out = []
    for rlkd in (a for a in ("rlkd-exact", "rlkd-gsrm") if a in ev):
        for base in (b for b in ("grpo", "sft") if b in ev):
            verdicts = {label[key]: verdict(by.get((rlkd, base, key))) for key, _ in figs}
            better = [k for k, v in verdicts.items() if v > 0]
            worse = [k for k, v in verdicts.items() if v < 0]
            text = f"- `{rlkd}` vs `{base}`: "
            text += ("higher on " + ", ".join(better) if better else "") + ("; " if better and worse else "")
            text += ("lower on " + ", ".join(worse) if worse else "")
            out.append(text + ("." if better or worse else "no difference the paired test supports."))
    mdes = [r["mde"] for (a, b, key), r in by.items() if key == acc_key and "mde" in r and b in ("grpo", "sft")]
    if mdes and max(mdes) == 0:
        out.append(f"- The per-problem {acc_label} differences between the RLKD arms and the baselines do not vary "
                   "at all: the paired test has no spread to measure, and no minimum detectable effect.")
    elif mdes:
        out.append(f"- The smallest {acc_label} difference between an RLKD arm and a baseline that this design "
                   f"detects with 80% power is about {min(mdes):.3f}"
                   + (f"-{max(mdes):.3f}" if max(mdes) - min(mdes) >= 0.0005 else "")
                   + " (MDE of the paired test); a smaller true effect is likely to go unseen.")
    start = (ev.get("warmup") or {}).get(acc_key) or {}
    if start.get("mean") is not None:
        inside = 0.2 <= start["mean"] <= 0.8
        out.append(f"- The warm start's {acc_label} is {start['mean']:.2f}: "
                   + ("inside the 20-80% band that leaves every arm room to move." if inside else
                      "outside the 20-80% band the study aims for; read the arms' differences with that in mind."))
    if "warmup" in ev:
        moved = {a: verdict(by.get((a, "warmup", acc_key))) for a in ev if a != "warmup"}
        if higher := [a for a, v in moved.items() if v > 0]:
            out.append(f"- Above the warm start on {acc_label}: {', '.join(f'`{a}`' for a in higher)}.")
        if lower := [a for a, v in moved.items() if v < 0]:
            out.append(f"- Below the warm start on {acc_label}: {', '.join(f'`{a}`' for a in lower)}: training "
                       "from it lost accuracy.")
    beats = [a for a in ("rlkd-exact", "rlkd-gsrm") if a in ev
             and all(verdict(by.get((a, b, acc_key))) > 0 for b in ("grpo", "sft") if b in ev)]
    out.append("- RLKD beats both baselines on accuracy here (paired test): "
               + (", ".join(beats) if beats else "**no**") + ".")
    return out


def write_study_report(cfg: StudyConfig, out: Path, timings: dict[str, dict[str, Any]], wall_s: float
                       ) -> dict[str, Any]:
    """``OUT/REPORT.md`` and ``OUT/summary.json``: the figures per arm and an honest reading."""
    report = json.loads((out / "report" / "summary.json").read_text(encoding="utf-8"))
    figs = figures(cfg)
    ev = report.get("eval") or {}
    gsrm = json.loads((out / "gsrm_quality.json").read_text(encoding="utf-8"))
    teacher = teacher_figures(out / "products" / "traces-eval" / "traces.jsonl")
    traces_manifest = json.loads((out / "products" / "traces-train" / "manifest.json").read_text(encoding="utf-8"))
    arms = [a for a in ["warmup", *cfg.arms] if a in ev]
    diffs = paired_figures(cfg, out, figs, comparisons(arms, cfg))
    lines = [
        "# RLKD in miniature", "",
        f"{'QUICK mode: one seed and a few steps; these figures prove the chain runs, not the method. ' if cfg.quick else ''}"
        f"Seeds {', '.join(map(str, cfg.seeds))}; {cfg.train_problems} training problems (world seed "
        f"{cfg.world_seed}), {cfg.eval_problems} held-out eval problems (world seed {cfg.eval_world_seed}, used "
        f"for nothing but evaluation), k = {cfg.eval_repeats} samples per eval problem; this run's wall time "
        f"{wall_s / 60:.1f} min (stages reused from an earlier run not counted: see the stage times).", "",
        "## In short", "", *headline(diffs, figs, ev), "",
        "## The world", "",
        "Each problem defines two or three inputs from small sums and differences and combines them "
        "(`a=16-4`, `b=8+8`, `z=a+b`, find `z`); the inputs can be worked out in any order, so a problem "
        f"has 2, 6 or 8 valid orders of its sub-problems (mean {teacher['mean_valid_orders']:.1f} on the eval "
        "problems). The programmatic teacher (`world:teacher`) picks the input with the bigger numbers "
        "first (70% of its samples) or an arbitrary one, sometimes checks a result or considers a branch "
        "that is not ready; 15% of its samples slip on one sum. `rlkd-bench traces --generate` kept the "
        f"first correct of {cfg.teacher_samples} samples: {traces_manifest['counts'].get('ok')} training traces, "
        f"{traces_manifest['counts'].get('rejected')} problems rejected. The world's exact parser reads the "
        f"teacher's traces back into their true steps ({teacher['valid_plan']:.0%} of eval traces a valid plan).", "",
        "## The tiny GSRM", "",
        f"Trained with `make train-gsrm` for {cfg.gsrm_steps} steps on the training traces' true "
        "decompositions, then asked to decompose the held-out eval traces through the decomposer the "
        "reward uses (`gsrm:<checkpoint>`):", "",
        "| decomposed | identical to the truth | structure score vs truth | valid plan |", "|---:|---:|---:|---:|",
        f"| {gsrm['decomposed']:.2f} | {gsrm['identical']:.2f} | {gsrm['structure_score']:.2f} | "
        f"{gsrm['valid_plan']:.2f} |", "",
        ("It is **weak**: fewer than half of its decompositions equal the truth, so the RLKD arm that uses it "
         "rewards noise as much as structure. " if gsrm["identical"] < 0.5 else
         "It decomposes most held-out traces exactly. ")
        + "Both RLKD arms run, on the teacher's true (annotated) steps: `rlkd-gsrm` decomposes the "
          "student's thinking with the tiny GSRM at every reward call (the paper's reward), `rlkd-exact` "
          "with the world's exact parser (a named second decomposer).", "",
        "## Figures per arm", "",
        f"Cells: mean ± sd over seeds [95% bootstrap interval over the {cfg.eval_problems} eval problems]. "
        "`warmup` is the common start of every arm (one model; its spread is over problems only). "
        "Structure figures decompose the student's thinking with the world's exact parser and compare "
        "with the exact matcher.", "",
        "| arm | " + " | ".join(label for _, label in figs) + " |",
        "|:---|" + "---:|" * len(figs),
    ]
    for arm in arms:
        lines.append(f"| {arm} | " + " | ".join(eval_cell(ev[arm].get(key)) for key, _ in figs) + " |")
    label = dict(figs)
    lines += ["", "## Reading", "", differences_note(sum("untested" not in r for r in diffs)), "",
              differences_table([dict(r, metric=label[r["metric"]]) for r in diffs]).rstrip("\n"), ""]
    if len(cfg.seeds) < 3:
        lines.append(f"- Only {len(cfg.seeds)} seed(s): the spread over seeds is not measured.")
    lines += ["- Every arm starts from the same warm start and trains on the same prompts for the same number of "
              f"steps ({cfg.arm_steps}); the RL arms sample {8} completions per prompt, so they spend more "
              "compute per example than SFT (train times below).",
              "- Seeds vary each arm's training and sampling, not the warm start (one warm-up is shared).",
              f"- Every stage ran with torch on {cfg.threads} thread(s) (`threads`), so the same config on "
              "another machine with the same torch gives the same figures; `summary.json` records the "
              "runtime (torch version, CPU kernels, threads).", "",
              "## Where things are", "",
              "- `report/`: `rlkd-bench report` over every arm's training log and eval (plots, `table.md`, "
              "`eval_table.md`, `summary.json`).",
              "- `models/`: checkpoints (each with manifest and card); `products/`: traces, GSRM data, rlkd-data; "
              "`evals/`: lm-eval results and per-sample logs; `logs/`: one log per stage; `stages.json`: what a "
              "rerun reuses.", "", "![eval](report/eval.png)", "",
              *[f"![{name}](report/{name})" for name in ("rewards.png", "structure.png") if (out / "report" / name).is_file()],
              "", "## Stage times", "",
              "| stage | seconds | |", "|:---|---:|:---|"]
    for name, t in timings.items():
        lines.append(f"| {name} | {t.get('seconds') if t.get('seconds') is not None else '–'} | "
                     f"{'reused' if t.get('reused') else ''} |")
    write_text(out / "REPORT.md", "\n".join(lines) + "\n")
    # summary.json holds what the study measured and nothing that varies between two runs of the
    # same config on the same machine (no times, no output path: those go to timings.json), so two
    # runs can be compared byte for byte
    summary = {"config": {k: v for k, v in vars(cfg).items() if k not in ("quick_sizes", "out")},
               "runtime": {**runtime_info(world_seed=cfg.world_seed, eval_world_seed=cfg.eval_world_seed,
                                          seeds=cfg.seeds), "stage_torch_threads": cfg.threads},
               "gsrm_quality": gsrm, "teacher": teacher,
               "figures": {arm: {label: ev[arm].get(key) for key, label in figs} for arm in arms},
               "differences": [dict(r, label=label[r["metric"]]) for r in diffs]}
    write_json(out / "summary.json", summary)
    write_json(out / "timings.json", {"wall_time_s": round(wall_s, 1), "stages": timings})
    return summary
