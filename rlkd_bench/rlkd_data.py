"""The RLKD training set: problems with a conversational prompt, gold answers and teacher steps.

RL with a structure reward compares each student completion against the teacher's
decomposition. The reference code re-decomposes the teacher trace at every reward call; here it
is decomposed once, by the decomposer the user picks (a GSRM checkpoint or endpoint, an LLM
annotator, or the offline heuristic), and stored in the rows. A trace whose decomposition fails
is not trained on: it goes to ``rejects.jsonl`` with the reason (and the reply, for a model).

Product layout (``OUT/``): ``dataset/`` (a saved ``datasets.DatasetDict`` with ``train`` and
``test``), ``rejects.jsonl``, ``manifest.json``, ``README.md``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rlkd_bench.build import (
    TraceSpec,
    failure_summary,
    preflight,
    print_summary,
    record_budget_stop,
    record_traces_input,
)
from rlkd_bench.console import console, progress_bar
from rlkd_bench.decompose import (
    BUDGET_PREFIX,
    REQUEST_ERROR_PREFIX,
    DecomposeResult,
    get_decomposer,
    run_decomposer,
)
from rlkd_bench.errors import ConfigError, DataError, RlkdError
from rlkd_bench.llm.base import Usage
from rlkd_bench.products import (
    Manifest,
    check_out_dir,
    check_test_size,
    finish_product,
    open_product,
    save_splits,
    write_jsonl,
)
from rlkd_bench.prompting import R1_INSTRUCTION, load_prompt

PRODUCT = "rlkd-data"
SYSTEM_PROMPT = "rlkd_system"
DATASET_DIR = "dataset"
COLUMNS = ("id", "domain", "prompt", "problem", "gold", "teacher_reasoning", "teacher_steps",
           "teacher_final_answer", "n_teacher_steps", "source")


def system_prompt() -> str:
    """The student's system prompt: think in <think>, answer in <answer>, final answer boxed."""
    return load_prompt(SYSTEM_PROMPT).text


def prompt_parts(problem: str, style: str = "rlkd", *, instruction: str = R1_INSTRUCTION) -> tuple[str, str]:
    """(system, user) for a problem. ``rlkd``: the RLKD student's training prompt (system turn
    asking for ``<think>`` and a boxed answer in ``<answer>``); ``r1``: no system turn, the
    instruction after the problem (DeepSeek-R1's recommended zero-shot form, and a short prompt)."""
    if style == "rlkd":
        return system_prompt(), problem.strip()
    if style == "r1":
        return "", f"{problem.strip()}\n{instruction}"
    raise ConfigError(f"unknown prompt style {style!r}: use 'rlkd' (the RLKD training prompt) or 'r1'")


def conversation(problem: str, style: str = "rlkd") -> list[dict[str, str]]:
    """The conversational ``prompt`` TRL's GRPOTrainer samples completions for."""
    system, user = prompt_parts(problem, style)
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def rlkd_row(trace: dict[str, Any], res: DecomposeResult, prompt_style: str = "rlkd") -> dict[str, Any]:
    """One training row; ``teacher_steps`` is the decomposition as a list of step dicts."""
    assert res.decomposition is not None
    d = res.decomposition.to_dict()
    return {
        "id": str(trace["id"]),
        "domain": trace.get("domain") or "math",
        "prompt": conversation(trace["problem"], prompt_style),
        "problem": trace["problem"],
        "gold": str(trace.get("gold") or ""),
        "teacher_reasoning": trace["reasoning"],
        "teacher_steps": d["steps"],
        "teacher_final_answer": d["final_answer"] or "",
        "n_teacher_steps": len(d["steps"]),
        "source": str(trace.get("source") or ""),
    }


def _reject(trace: dict[str, Any], stage: str, reason: str, raw: str = "") -> dict[str, Any]:
    return {"id": str(trace.get("id")), "stage": stage, "reason": reason, "raw": raw}


def build_rlkd_data(
    spec: TraceSpec,
    out: str | Path,
    *,
    decomposer: str = "heuristic",
    decomposer_options: dict[str, Any] | None = None,
    test_size: float = 0.1,
    seed: int = 0,
    show_progress: bool = True,
    prompt_style: str = "rlkd",
) -> dict[str, Any]:
    """traces -> teacher decompositions (once) -> rows with a prompt -> train/test, manifest, card.

    The product is written whole under the run lock: a run that ends with no usable row removes
    the dataset an earlier run left and writes a manifest that says it failed, so the files and
    the manifest always describe the same run.
    """
    t0 = time.time()
    out = Path(out)
    check_test_size(test_size)
    prompt_parts("", prompt_style)  # an unknown style fails before anything runs
    check_out_dir(out, PRODUCT)
    dec = get_decomposer(decomposer, **(decomposer_options or {}))
    loaded = spec.load()
    preflight(dec)  # e.g. no API key: stop before any output exists
    with open_product(out, PRODUCT):
        return _decompose_and_save(spec, out, loaded, dec, decomposer=decomposer, test_size=test_size,
                                   seed=seed, show_progress=show_progress, t0=t0,
                                   prompt_style=prompt_style)


def _decompose_and_save(spec: TraceSpec, out: Path, loaded: Any, dec: Any, *, decomposer: str,
                        test_size: float, seed: int, show_progress: bool, t0: float,
                        prompt_style: str = "rlkd") -> dict[str, Any]:
    rejects: list[dict[str, Any]] = [dict(r) for r in loaded.rejects]
    pending: list[dict[str, Any]] = []
    for trace in loaded.rows:
        if not str(trace.get("gold") or "").strip():
            rejects.append(_reject(trace, "filter", "no gold answer (the accuracy reward needs one)"))
        else:
            pending.append(trace)

    results: list[DecomposeResult | None] = [None] * len(pending)
    bar = progress_bar(total=len(pending), desc=f"teacher steps ({decomposer})", enabled=show_progress)

    def on_result(i: int, res: DecomposeResult) -> None:
        results[i] = res
        bar.update(1)

    try:
        if pending:
            run_decomposer(dec, pending, on_result)
    finally:
        bar.close()

    rows, usage, cached, request_errors = [], Usage(), 0, []
    stopped: list[str] = []  # not sent because of --max-cost: pending, neither a row nor a reject
    for trace, res in zip(pending, results, strict=True):
        assert res is not None
        usage += res.usage
        cached += int(res.cached)
        if (res.error or "").startswith(BUDGET_PREFIX):
            stopped.append(res.error or "")
        elif not res.ok:
            if (res.error or "").startswith(REQUEST_ERROR_PREFIX):
                request_errors.append(res.error or "")
            rejects.append(_reject(trace, "decompose", res.error or "no decomposition", res.raw))
        elif not res.decomposition.steps:  # type: ignore[union-attr]
            rejects.append(_reject(trace, "decompose", "decomposition has no steps", res.raw))
        else:
            rows.append(rlkd_row(trace, res, prompt_style))

    manifest = Manifest(product=PRODUCT)
    record_traces_input(manifest, spec.source, loaded, split=spec.split)
    manifest.params = {"decomposer": decomposer, "decomposer_config": dec.describe(),
                       "test_size": test_size, "seed": seed, "limit": spec.limit, "on_error": spec.on_error,
                       "prompt_style": prompt_style}
    manifest.prompt_versions = {"decomposer": dec.prompt_version}
    if prompt_style == "rlkd":
        manifest.prompt_versions[SYSTEM_PROMPT] = load_prompt(SYSTEM_PROMPT).version
    by_stage: dict[str, int] = {}
    for r in rejects:
        by_stage[r.get("stage", "?")] = by_stage.get(r.get("stage", "?"), 0) + 1
    manifest.counts = {
        "traces": len(loaded.rows) + len(loaded.rejects), "ok": len(rows), "rejected": len(rejects),
        **{f"rejected_{k}": v for k, v in sorted(by_stage.items())},
        "failed_requests": len(request_errors), "cached": cached,
    }
    manifest.usage = usage.to_dict()
    budget_note = record_budget_stop(manifest, len(stopped), stopped[0], "trace(s)") if stopped else None
    title = "RLKD training data"
    summary = ("Problems for RLKD's GRPO stage, each with a `prompt` asking for `<think>` reasoning and a "
               "boxed answer in `<answer>`, the gold answer, and the teacher's reasoning decomposed once "
               "into meta-reasoning / sub-problem / answer steps (the structure reward's reference).")
    if not rows and budget_note:  # the budget stopped it before any row: nothing to save, nothing failed
        import shutil

        shutil.rmtree(out / DATASET_DIR, ignore_errors=True)
        write_jsonl(out / "rejects.jsonl", rejects)
        console.print(f"[yellow]{budget_note}[/yellow]")
        return finish_product(manifest, out, t0, ["rejects.jsonl"], title=title, summary=summary)
    if not rows:
        return _fail(manifest, out, t0, rejects, pending, request_errors, spec, title, summary)

    split = save_splits(rows, out / DATASET_DIR, test_size=test_size, seed=seed)
    write_jsonl(out / "rejects.jsonl", rejects)
    steps = [r["n_teacher_steps"] for r in rows]
    manifest.counts.update({"train": split["train"], "test": split["test"],
                            "teacher_steps_min": min(steps), "teacher_steps_max": max(steps)})
    if request_errors:
        console.print(f"[yellow]{len(request_errors)} decomposition request(s) failed "
                      f"({failure_summary(request_errors)}); those traces are in rejects.jsonl[/yellow]")
    if budget_note:
        console.print(f"[yellow]{budget_note}[/yellow]")
    return finish_product(manifest, out, t0, [f"{DATASET_DIR}/", "rejects.jsonl"], title=title,
                          summary=summary, extra=card_details(rows[0], sum(steps) / len(steps)))


def _fail(manifest: Manifest, out: Path, t0: float, rejects: list[dict[str, Any]],
          pending: list[dict[str, Any]], request_errors: list[str], spec: TraceSpec, title: str,
          summary: str) -> dict[str, Any]:
    """No usable row: the manifest says the run failed and why, the dataset of an earlier run goes
    (it would not match this manifest), the rejects stay for inspection; then the error is raised.

    Exit 70 when every decomposition request failed (a model or server problem), else 65."""
    import shutil

    shutil.rmtree(out / DATASET_DIR, ignore_errors=True)
    write_jsonl(out / "rejects.jsonl", rejects)
    exc: RlkdError
    if pending and len(request_errors) == len(pending):
        message = (f"every decomposition request failed ({len(pending)} trace(s)): "
                   f"{failure_summary(request_errors)}")
        exc = RlkdError(message)
    else:
        message = (f"no usable row: {len(rejects)} rejected (first reason: "
                   f"{rejects[0]['reason'] if rejects else 'no input rows'}); see {out / 'rejects.jsonl'}")
        exc = DataError(message, file=spec.source or "bundled traces")
    finish_product(manifest, out, t0, ["rejects.jsonl"], title=title, summary=summary, error=message)
    raise exc


def card_details(example: dict[str, Any], mean_steps: float) -> str:
    """The card's columns, usage and a shortened example row."""
    shown = dict(example)
    shown["teacher_reasoning"] = _clip(shown["teacher_reasoning"], 300)
    shown["teacher_steps"] = shown["teacher_steps"][:2]
    return "\n".join([
        "## Columns", "",
        "- `prompt`: system + user chat turns for the student (TRL conversational format)",
        "- `problem`, `gold`: the problem and its gold answer (for the accuracy reward)",
        "- `teacher_reasoning`: the teacher's thinking trace",
        "- `teacher_steps`: the teacher's decomposition, a list of {meta, subproblem, answer}; "
        "`teacher_final_answer`, `n_teacher_steps` with it",
        f"- mean teacher steps per row: {mean_steps:.1f}", "",
        "## Use", "", "```python", "from rlkd_bench.rlkd_data import load_rlkd_data",
        "train = load_rlkd_data('<this dir or Hub id>', split='train')", "```", "",
        "## Example row (shortened)", "", "```json", json.dumps(shown, indent=2, ensure_ascii=False), "```",
    ])


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n] + " …"


def load_rlkd_data(source: str, split: str = "train") -> Any:
    """One split of an rlkd-data product: a product dir, a saved DatasetDict, or a Hub id."""
    import datasets

    p = Path(source)
    for saved in (p / DATASET_DIR, p):
        if (saved / "dataset_dict.json").is_file():
            dd = datasets.load_from_disk(str(saved))
            if split not in dd:
                raise ConfigError(f"{saved}: no split {split!r} (has: {', '.join(dd)})")
            return dd[split]
    if p.exists():
        raise ConfigError(f"{p}: not an rlkd-data product (no {DATASET_DIR}/dataset_dict.json)")
    return datasets.load_dataset(source, split=split)


def summarize(manifest: dict[str, Any], out: str | Path) -> None:
    print_summary("RLKD training data", manifest, out)
