"""Stages that build data products: traces, and traces -> annotations -> GSRM SFT set.

A stage reads its inputs, calls the parts (sources, decomposers), and writes one product
directory: data files, manifest.json and a README.md card. Annotation rows are appended as they
finish, so an interrupted run resumes where it stopped and never pays twice for a row. A row is
resumed only while the hash of what shaped it (problem, reasoning, domain, annotator settings)
still matches the input; a changed row is annotated again and the run says so. Rows rejected
while loading the input are logged apart from the annotation's rejects and never mark an id done.
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
from rlkd_bench.decompose.annotate import RETRY_KEY  # a --retry-rejects retry is a new request
from rlkd_bench.errors import ConfigError, DataError, RlkdError
from rlkd_bench.llm.base import Usage
from rlkd_bench.products import (
    Manifest,
    RowLog,
    check_out_dir,
    check_test_size,
    finish_product,
    open_product,
    save_splits,
    write_jsonl,
    write_text,
)
from rlkd_bench.prompting import GSRM_PROMPT, gsrm_messages, load_prompt
from rlkd_bench.sources import LoadResult, load_traces
from rlkd_bench.structure import Decomposition, render_steps

RUN_STATE = "run.json"
RUN_STATE_PER_ROW = ("input",)  # run.json keys checked row by row (input_hash), not for the whole run
SFT_DIR = "sft"
ROW_LIMITS = ("max_tokens", "max_new_tokens", "max_invalid_retries")  # limits, not what shapes a row
PRODUCT_TRACES, PRODUCT_GSRM = "traces", "gsrm-data"


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
    check_out_dir(out, PRODUCT_TRACES)
    loaded = spec.load()
    with open_product(out, PRODUCT_TRACES):
        manifest = Manifest(product=PRODUCT_TRACES)
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


def preflight(obj: Any) -> None:
    """Fail before any output exists when a model cannot be used as configured (no API key, a key
    that would go over plain http): the check each engine makes before it sends anything.

    ``obj`` is an engine or a decomposer (its ``engine``; the heuristic has none). An engine with
    a ``check_ready()`` method is asked that; an OpenAI-compatible one resolves its endpoint.
    """
    engine = obj if hasattr(obj, "generate") else getattr(obj, "engine", None)
    if engine is None:
        return
    check = getattr(engine, "check_ready", None)
    if callable(check):
        check()
    elif getattr(engine, "kind", None) in ("openai", "openai-batch") and hasattr(engine, "options"):
        from rlkd_bench.llm import endpoint

        endpoint.resolve(engine.options.base_url, engine.options.api_key_env)


INCOMPLETE = "incomplete"  # manifest status of a run stopped by --max-cost with rows left to do


def record_budget_stop(manifest: Manifest, pending: int, reason: str, unit: str = "row(s)") -> str:
    """A run that ``--max-cost`` stopped, the same in every stage: the rows not sent are pending
    (neither rows nor rejects), ``counts.pending_budget`` says how many, the manifest's status is
    ``incomplete`` with the reason, and a rerun with a larger budget finishes it (what was paid is
    in the request cache). Returns the line the stage prints."""
    note = (f"stopped before passing the budget ({reason.removesuffix('; not sent')}): {pending} {unit} "
            "pending, neither kept nor rejected; rerun with a larger --max-cost to finish (answers already "
            "paid for are cached)")
    manifest.counts["pending_budget"] = pending
    manifest.status, manifest.error = INCOMPLETE, note
    return note


def failure_summary(errors: list[str], limit: int = 3) -> str:
    """``3 x HTTP 400: ...; 2 x connection error: ...``: the distinct reasons, most common first."""
    from collections import Counter

    counts = Counter(e.removeprefix(REQUEST_ERROR_PREFIX).strip().rstrip(".") for e in errors)
    parts = [f"{n} x {reason}" for reason, n in counts.most_common(limit)]
    if len(counts) > limit:
        parts.append(f"{len(counts) - limit} other reason(s)")
    return "; ".join(parts)


# ---- build-gsrm-data ---------------------------------------------------------------------------


def annotation_row(trace: dict[str, Any], res: DecomposeResult, annotator: dict[str, Any],
                   input_hash: str = "") -> dict[str, Any]:
    assert res.decomposition is not None
    return {
        "id": trace["id"], "domain": trace["domain"], **res.decomposition.to_dict(),
        "raw": res.raw or render_steps(res.decomposition),
        "annotator": {**annotator, **res.annotator_meta()},
        "usage": res.usage.to_dict(), "cached": res.cached, "attempts": res.attempts,
        "status": "ok", "reason": None, "input_hash": input_hash,
        **({"retries": trace[RETRY_KEY]} if trace.get(RETRY_KEY) else {}),
    }


def reject_row(trace: dict[str, Any], res: DecomposeResult, annotator: dict[str, Any],
               input_hash: str = "") -> dict[str, Any]:
    return {
        "id": trace["id"], "stage": "annotate", "reason": res.error or "no decomposition",
        "raw": res.raw, "annotator": {**annotator, **res.annotator_meta()}, "usage": res.usage.to_dict(),
        "attempts": res.attempts, "status": "rejected", "input_hash": input_hash,
        **({"retries": trace[RETRY_KEY]} if trace.get(RETRY_KEY) else {}),
    }


def sft_example(trace: dict[str, Any], decomposition: Decomposition) -> dict[str, Any]:
    """One GSRM SFT example in TRL's conversational format."""
    messages = gsrm_messages(trace["problem"], trace["reasoning"])
    messages.append({"role": "assistant", "content": render_steps(decomposition)})
    return {"id": trace["id"], "domain": trace["domain"], "messages": messages}


def row_settings(described: dict[str, Any]) -> dict[str, Any]:
    """What of the annotator's description shapes an annotation: model, prompts, sampling. Not where
    the server is, whether the Batch API carries the requests, nor the limits (max tokens, invalid
    retries) that only decide whether a reply is kept: raising them to rescue rejects keeps the rows
    already made (each row records the settings it was made with)."""
    out = {k: v for k, v in described.items() if k not in ("base_url", "engine", "notes")}
    if isinstance(out.get("params"), dict):
        out["params"] = {k: v for k, v in out["params"].items() if k not in ROW_LIMITS}
    return out


def input_hash(trace: dict[str, Any], settings: dict[str, Any]) -> str:
    """The hash of what shapes one annotation row: the trace's problem, reasoning and domain and
    the annotator's settings. A resumed row is kept only while its hash still matches."""
    import hashlib
    import json

    blob = json.dumps({"problem": trace["problem"], "reasoning": trace["reasoning"],
                       "domain": trace["domain"], "annotator": settings},
                      sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def _reject_key(row: dict[str, Any]) -> str | None:
    """Rejects of the annotation are keyed by trace id (a rejected trace is done); rejects of the
    input loading by where they are in the file, so they never mark an id as done."""
    if row.get("stage") == "load":
        return f"load:{row.get('file')}:{row.get('line')}:{row.get('id')}"
    return str(row["id"]) if "id" in row else None


def _check_run_state(out: Path, state: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """Refuse to mix two annotators (or prompt versions, or annotator settings) in one output
    directory; return the previous state ({} when there is none)."""
    import json
    import shutil

    path = out / RUN_STATE
    if overwrite:
        for name in ("annotations.jsonl", "rejects.jsonl", RUN_STATE):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / SFT_DIR, ignore_errors=True)
        return {}
    if not path.exists():
        return {}
    old = json.loads(path.read_text(encoding="utf-8"))
    # keys an older run.json lacks are not compared; the input is compared row by row instead
    diff = {k: (old.get(k), v) for k, v in state.items()
            if k not in RUN_STATE_PER_ROW and k in old and old.get(k) != v}
    if diff:
        raise ConfigError(f"{out} holds a run with other settings {diff}; use a new --out, or --overwrite "
                          "to start over there")
    return old


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
    check_test_size(test_size)
    check_out_dir(out, PRODUCT_GSRM)
    loaded = spec.load()
    decomposer = get_decomposer(annotator, **(annotator_options or {}))
    preflight(decomposer)  # e.g. no API key: stop before any output exists
    with open_product(out, PRODUCT_GSRM):
        return _annotate_and_save(spec, out, loaded, decomposer, annotator=annotator, test_size=test_size,
                                  seed=seed, overwrite=overwrite, retry_rejects=retry_rejects,
                                  show_progress=show_progress, t0=t0)


def _annotate_and_save(spec: TraceSpec, out: Path, loaded: LoadResult, decomposer: Decomposer, *,
                       annotator: str, test_size: float, seed: int, overwrite: bool, retry_rejects: bool,
                       show_progress: bool, t0: float) -> dict[str, Any]:
    import json
    import shutil

    described = decomposer.describe()
    settings = row_settings(described)
    manifest = Manifest(product=PRODUCT_GSRM)
    record_traces_input(manifest, spec.source, loaded, split=spec.split)
    state = {"annotator": annotator, "prompt_version": decomposer.prompt_version,
             "gsrm_prompt": load_prompt(GSRM_PROMPT).version, "settings": settings,
             "input": {k: manifest.inputs["traces"].get(k) for k in ("source", "sha256")}}
    old_state = _check_run_state(out, state, overwrite)
    write_text(out / RUN_STATE, json.dumps(state, indent=2) + "\n")

    traces = {t["id"]: t for t in loaded.rows}
    hashes = {tid: input_hash(t, settings) for tid, t in traces.items()}
    ann_log = RowLog(out / "annotations.jsonl")
    rej_log = RowLog(out / "rejects.jsonl", key=_reject_key, keep=lambda r: r.get("stage") != "load")
    for r in loaded.rejects:  # this load's rejects; those of earlier loads were dropped on open
        rej_log.append(r)
    # a row is resumed only while what shapes it is unchanged; the rest is redone
    changed = sorted(tid for tid in traces
                     if any(tid in log.rows and log.rows[tid].get("input_hash") != hashes[tid]
                            for log in (ann_log, rej_log)))
    for log in (ann_log, rej_log):
        log.discard(changed)
    retried: dict[str, int] = {}
    if retry_rejects:
        retried = {tid: int(r.get("retries") or 0) + 1 for tid, r in rej_log.rows.items()
                   if tid in traces and r.get("stage") != "load"}
        rej_log.discard(retried)
    done_ids = ann_log.done | {k for k, r in rej_log.rows.items() if r.get("stage") != "load"}
    resumed = len(done_ids & traces.keys())
    pending = [dict(t, **{RETRY_KEY: retried[tid]}) if tid in retried else t
               for tid, t in traces.items() if tid not in done_ids]
    if changed:
        old_sha = (old_state.get("input") or {}).get("sha256") or "?"
        console.print(f"[yellow]{len(changed)} row(s) in {out} were made from other traces or settings than "
                      f"these (input sha256 {old_sha[:12]} -> {(state['input']['sha256'] or '?')[:12]}); "
                      f"they are annotated again: {', '.join(changed[:5])}"
                      f"{' ...' if len(changed) > 5 else ''}[/yellow]")
    usage, cached, budget_stop, n_budget = Usage(), 0, None, 0
    failed: list[str] = []  # request failures left pending (transient)
    refused: list[str] = []  # permanent request failures, rejected with their reason
    succeeded = 0  # rows of this run that got a reply (annotated, or rejected for an invalid reply)
    bar = progress_bar(total=len(pending), desc=f"annotate ({annotator})", enabled=show_progress)

    def on_result(i: int, res: DecomposeResult) -> None:
        nonlocal usage, cached, budget_stop, succeeded, n_budget
        if res.error and res.error.startswith(BUDGET_PREFIX):
            budget_stop, n_budget = res.error, n_budget + 1
            return  # not done: a rerun with a larger budget picks it up
        trace = pending[i]
        usage += res.usage
        cached += int(res.cached)
        tid = trace["id"]
        if res.error and res.error.startswith(REQUEST_ERROR_PREFIX):
            if getattr(res, "retryable", True):
                failed.append(res.error)  # the server failed, not the annotation: pending for a rerun
            else:  # e.g. HTTP 400: the same request can never succeed; the reason goes to rejects
                refused.append(res.error)
                rej_log.append(reject_row(trace, res, described, hashes[tid]))
        elif res.ok:
            succeeded += 1
            ann_log.append(annotation_row(trace, res, described, hashes[tid]))
        else:
            succeeded += 1
            rej_log.append(reject_row(trace, res, described, hashes[tid]))
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
    if examples and not budget_stop:
        split = save_splits(examples, out / SFT_DIR, test_size=test_size, seed=seed)
    else:  # no SFT set this run: one left by an earlier run would not match this manifest
        split = {}
        shutil.rmtree(out / SFT_DIR, ignore_errors=True)
    manifest.params = {"annotator": annotator, "annotator_config": described, "test_size": test_size,
                       "seed": seed, "limit": spec.limit, "on_error": spec.on_error}
    manifest.prompt_versions = {"annotator": decomposer.prompt_version,
                                "gsrm": load_prompt(GSRM_PROMPT).version}
    ann_rejected = sum(1 for tid, r in rej_log.rows.items() if tid in traces and r.get("stage") != "load")
    manifest.counts = {"traces": len(traces) + len(loaded.rejects), "ok": len(done),
                       "rejected": ann_rejected + len(loaded.rejects), "rejected_at_load": len(loaded.rejects),
                       "resumed": resumed, "redone_changed": len(changed), "retried_rejects": len(retried),
                       "cached": cached, "failed_requests": len(failed), "refused_requests": len(refused),
                       "pending": len(traces) - len(done) - ann_rejected,
                       **{f"sft_{k}": v for k, v in split.items()}}
    other = len(ann_log.done - traces.keys()) + sum(
        1 for k, r in rej_log.rows.items() if r.get("stage") != "load" and k not in traces)
    if other:  # e.g. a run with --limit after a larger one: kept, but not part of this product's counts
        manifest.counts["rows_not_in_input"] = other
    if hasattr(decomposer, "run_summary"):  # LLM annotators: requests, cache hits, retries
        manifest.counts.update(decomposer.run_summary())
    manifest.usage = {**usage.to_dict()}
    price_source = decomposer.price_source() if hasattr(decomposer, "price_source") else None
    if price_source:
        manifest.usage["price_source"] = price_source
    budget_note = record_budget_stop(manifest, n_budget, budget_stop) if budget_stop else None

    error, exc = None, None
    if pending and not succeeded and (failed or refused):
        reasons = failure_summary(failed + refused)
        error = (f"every request failed ({len(failed) + len(refused)} row(s)): {reasons}"
                 + (f"; {len(failed)} left pending for a rerun" if failed else "")
                 + (f"; {len(refused)} refused by the server for good, in rejects.jsonl" if refused else ""))
        exc = RlkdError(error)
    elif not examples and not budget_stop and not failed:
        error = "no annotation passed validation, so there is no SFT set; the reasons are in rejects.jsonl"
        exc = DataError(error + "; the manifest is written", file=str(out / "rejects.jsonl"))
    files = ["annotations.jsonl", "rejects.jsonl", RUN_STATE] + ([f"{SFT_DIR}/"] if split else [])
    result = finish_product(
        manifest, out, t0, files, title="GSRM training data", error=error,
        summary="Teacher traces annotated as meta-reasoning / sub-problem / answer steps, and the GSRM "
                "supervised fine-tuning set built from them (TRL conversational `messages`).")
    if failed and exc is None:
        console.print(f"[yellow]{len(failed)} request(s) failed after all retries ({failure_summary(failed)}); "
                      "they are not rejects: rerun the same command to try them again[/yellow]")
    if refused and exc is None:
        console.print(f"[yellow]{len(refused)} request(s) were refused by the server for good "
                      f"({failure_summary(refused)}); they are in rejects.jsonl[/yellow]")
    if exc is not None:
        print_summary("build-gsrm-data", result, out)
        raise exc
    if budget_note:
        console.print(f"[yellow]{budget_note}; the finished rows are kept in {out}[/yellow]")
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
