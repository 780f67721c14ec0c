"""Stages that build data products: traces, and traces -> annotations -> GSRM SFT set.

A stage reads its inputs, calls the parts (sources, decomposers), and writes one product
directory: data files, manifest.json and a README.md card. Annotation rows are appended as they
finish, so an interrupted run resumes where it stopped and never pays twice for a row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlkd_bench.console import console, progress_bar, summary
from rlkd_bench.decompose import (
    BUDGET_PREFIX,
    REQUEST_ERROR_PREFIX,
    Decomposer,
    DecomposeResult,
    get_decomposer,
    run_decomposer,
)
from rlkd_bench.errors import ConfigError, DataError
from rlkd_bench.llm.base import Usage
from rlkd_bench.products import (
    Manifest,
    RowLog,
    finish_product,
    run_lock,
    save_splits,
    write_jsonl,
    write_text,
)
from rlkd_bench.prompting import GSRM_PROMPT, gsrm_messages, load_prompt
from rlkd_bench.sources import LoadResult, load_traces
from rlkd_bench.structure import Decomposition, render_steps

RUN_STATE = "run.json"


@dataclass
class TraceSpec:
    """Where traces come from and how to read them (the `--traces` family of options)."""

    source: str | None = None
    fmt: str = "auto"
    fields: dict[str, str] = field(default_factory=dict)
    split: str = "train"
    config: str | None = None
    on_error: str = "stop"
    limit: int | None = None
    verify: bool = False

    def load(self) -> LoadResult:
        return load_traces(self.source, fmt=self.fmt, fields=self.fields or None, split=self.split,
                           config=self.config, on_error=self.on_error, limit=self.limit,
                           verify=self.verify)


def record_traces_input(manifest: Manifest, source: str | None, loaded: LoadResult, *,
                        split: str = "train", name: str = "traces") -> None:
    """Record where the traces came from (a local file's hash, or the Hub id); the bundled file
    when no source was given."""
    from rlkd_bench.sources import bundled_traces_path

    manifest.add_input(name, source or str(bundled_traces_path()))
    manifest.inputs[name].update({"format": loaded.fmt, "split": split})


def build_traces(spec: TraceSpec, out: str | Path) -> dict[str, Any]:
    """Normalise traces from any source into a traces product at ``out``."""
    t0 = time.time()
    out = Path(out)
    loaded = spec.load()
    manifest = Manifest(product="traces")
    record_traces_input(manifest, spec.source, loaded, split=spec.split)
    manifest.params = {"format": loaded.fmt, "verify": spec.verify, "limit": spec.limit,
                       "on_error": spec.on_error, "fields": spec.fields}
    write_jsonl(out / "traces.jsonl", loaded.rows)
    write_jsonl(out / "rejects.jsonl", loaded.rejects)
    domains: dict[str, int] = {}
    for r in loaded.rows:
        domains[r["domain"]] = domains.get(r["domain"], 0) + 1
    manifest.counts = {"ok": len(loaded.rows), "rejected": len(loaded.rejects),
                       **{f"domain_{k}": v for k, v in sorted(domains.items())}}
    return finish_product(manifest, out, t0, ["traces.jsonl", "rejects.jsonl"],
                          title="Teacher reasoning traces",
                          summary="Teacher reasoning traces normalised to the rlkd-bench traces schema "
                                  "(id, domain, problem, reasoning, answer, gold, source, verified).")


# ---- build-gsrm-data ---------------------------------------------------------------------------


def annotation_row(trace: dict[str, Any], res: DecomposeResult, annotator: dict[str, Any]
                   ) -> dict[str, Any]:
    assert res.decomposition is not None
    return {
        "id": trace["id"], "domain": trace["domain"], **res.decomposition.to_dict(),
        "raw": res.raw or render_steps(res.decomposition),
        "annotator": {**annotator, **res.annotator_meta()},
        "usage": res.usage.to_dict(), "cached": res.cached, "attempts": res.attempts,
        "status": "ok", "reason": None,
    }


def reject_row(trace: dict[str, Any], res: DecomposeResult, annotator: dict[str, Any]
               ) -> dict[str, Any]:
    return {
        "id": trace["id"], "stage": "annotate", "reason": res.error or "no decomposition",
        "raw": res.raw, "annotator": {**annotator, **res.annotator_meta()}, "usage": res.usage.to_dict(),
        "attempts": res.attempts, "status": "rejected",
    }


def sft_example(trace: dict[str, Any], decomposition: Decomposition) -> dict[str, Any]:
    """One GSRM SFT example in TRL's conversational format."""
    messages = gsrm_messages(trace["problem"], trace["reasoning"])
    messages.append({"role": "assistant", "content": render_steps(decomposition)})
    return {"id": trace["id"], "domain": trace["domain"], "messages": messages}


def _check_run_state(out: Path, state: dict[str, Any], overwrite: bool) -> None:
    """Refuse to mix two annotators (or prompt versions) in one output directory."""
    import json

    path = out / RUN_STATE
    if overwrite:
        for name in ("annotations.jsonl", "rejects.jsonl", RUN_STATE):
            (out / name).unlink(missing_ok=True)
        return
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != state:
            diff = {k: (old.get(k), v) for k, v in state.items() if old.get(k) != v}
            raise ConfigError(
                f"{out} holds a run with other settings {diff}; use a new --out or --overwrite")


def build_gsrm_data(
    spec: TraceSpec,
    out: str | Path,
    *,
    annotator: str = "heuristic",
    annotator_options: dict[str, Any] | None = None,
    test_size: float = 0.1,
    seed: int = 0,
    overwrite: bool = False,
    retry_rejects: bool = False,
    show_progress: bool = True,
) -> dict[str, Any]:
    """traces -> annotations.jsonl / rejects.jsonl -> sft/ (DatasetDict) + manifest + card."""
    t0 = time.time()
    out = Path(out)
    loaded = spec.load()
    decomposer = get_decomposer(annotator, **(annotator_options or {}))
    with run_lock(out):
        return _annotate_and_save(spec, out, loaded, decomposer, annotator=annotator, test_size=test_size,
                                  seed=seed, overwrite=overwrite, retry_rejects=retry_rejects,
                                  show_progress=show_progress, t0=t0)


def _annotate_and_save(spec: TraceSpec, out: Path, loaded: LoadResult, decomposer: Decomposer, *,
                       annotator: str, test_size: float, seed: int, overwrite: bool, retry_rejects: bool,
                       show_progress: bool, t0: float) -> dict[str, Any]:
    import json

    described = decomposer.describe()
    state = {"annotator": annotator, "prompt_version": decomposer.prompt_version,
             "gsrm_prompt": load_prompt(GSRM_PROMPT).version}
    _check_run_state(out, state, overwrite)
    write_text(out / RUN_STATE, json.dumps(state, indent=2) + "\n")

    traces = {t["id"]: t for t in loaded.rows}
    ann_log, rej_log = RowLog(out / "annotations.jsonl"), RowLog(out / "rejects.jsonl")
    for r in loaded.rejects:
        rej_log.append(r)
    if retry_rejects:
        rej_log.rows = {k: v for k, v in rej_log.rows.items() if v.get("stage") == "load"}
        write_jsonl(rej_log.path, rej_log.rows.values())
    resumed = len(ann_log.done & traces.keys()) + len(rej_log.done & traces.keys())
    pending = [t for tid, t in traces.items() if tid not in ann_log.done and tid not in rej_log.done]
    usage, cached, budget_stop, failed = Usage(), 0, None, 0
    bar = progress_bar(total=len(pending), desc=f"annotate ({annotator})", enabled=show_progress)

    def on_result(i: int, res: DecomposeResult) -> None:
        nonlocal usage, cached, budget_stop, failed
        if res.error and res.error.startswith(BUDGET_PREFIX):
            budget_stop = res.error
            return  # not done: a rerun with a larger budget picks it up
        trace = pending[i]
        usage += res.usage
        cached += int(res.cached)
        if res.error and res.error.startswith(REQUEST_ERROR_PREFIX):
            failed += 1  # the server failed, not the annotation: left pending for a rerun
        elif res.ok:
            ann_log.append(annotation_row(trace, res, described))
        else:
            rej_log.append(reject_row(trace, res, described))
        bar.update(1)
        bar.set_postfix(ok=len(ann_log.rows), rejected=len(rej_log.rows), cost=f"${usage.cost_usd:.4f}",
                        refresh=False)

    try:
        if pending:
            run_decomposer(decomposer, pending, on_result)
    finally:
        bar.close()
        ann_log.close()
        rej_log.close()

    done = {tid: row for tid, row in ann_log.rows.items() if tid in traces}
    examples = [sft_example(traces[tid], Decomposition.from_dict(row)) for tid, row in done.items()]
    split = save_splits(examples, out / "sft", test_size=test_size, seed=seed) if examples and not budget_stop else {}
    manifest = Manifest(product="gsrm-data")
    record_traces_input(manifest, spec.source, loaded, split=spec.split)
    manifest.params = {"annotator": annotator, "annotator_config": described, "test_size": test_size,
                       "seed": seed, "limit": spec.limit, "on_error": spec.on_error}
    manifest.prompt_versions = {"annotator": decomposer.prompt_version,
                                "gsrm": load_prompt(GSRM_PROMPT).version}
    ann_rejected = sum(1 for tid in rej_log.rows if tid in traces)
    rejected = ann_rejected + sum(1 for r in rej_log.rows.values() if r.get("stage") == "load")
    manifest.counts = {"traces": len(traces) + len(loaded.rejects), "ok": len(done), "rejected": rejected,
                       "resumed": resumed, "cached": cached, "failed_requests": failed,
                       "pending": len(traces) - len(done) - ann_rejected,
                       **{f"sft_{k}": v for k, v in split.items()}}
    if hasattr(decomposer, "run_summary"):  # LLM annotators: requests, cache hits, retries
        manifest.counts.update(decomposer.run_summary())
    manifest.usage = {**usage.to_dict()}
    files = ["annotations.jsonl", "rejects.jsonl", RUN_STATE] + (["sft/"] if split else [])
    result = finish_product(
        manifest, out, t0, files, title="GSRM training data",
        summary="Teacher traces annotated as meta-reasoning / sub-problem / answer steps, and the GSRM "
                "supervised fine-tuning set built from them (TRL conversational `messages`).")
    if failed:
        console.print(f"[yellow]{failed} request(s) failed after all retries; they are not rejects: "
                      "rerun the same command to try them again[/yellow]")
    if not examples and not budget_stop and not failed:
        print_summary("build-gsrm-data", result, out)
        raise DataError("no annotation passed validation, so there is no SFT set; the manifest and "
                        "the reasons are written", file=str(out / "rejects.jsonl"))
    if budget_stop:
        console.print(f"[yellow]stopped before passing the budget ({budget_stop}); finished rows are "
                      f"kept in {out}; rerun with a larger --max-cost to continue[/yellow]")
    return result


def print_summary(title: str, manifest: dict[str, Any], out: str | Path) -> None:
    rows: dict[str, Any] = dict(manifest.get("counts", {}))
    usage = manifest.get("usage") or {}
    if usage:
        rows["tokens in/out"] = f"{usage.get('prompt_tokens', 0):,} / {usage.get('completion_tokens', 0):,}"
        rows["cost (USD)"] = f"{usage.get('cost_usd', 0.0):.4f}"
    rows["time (s)"] = f"{manifest.get('wall_time_s', 0.0):.1f}"
    rows["outputs"] = str(out)
    if manifest.get("files"):
        rows["files"] = ", ".join(manifest["files"])
    summary(title, rows)
