"""The functions the task YAMLs name (``!function utils.NAME``): thin shims between lm-eval and
the metrics (``metrics.py``), the data loaders (``evaldata.py``) and the structure reward's scorer
(``rlkd_bench.reward.scorer``: one rule, one set of matchers for the reward and these metrics).

lm-eval loads this file by path, next to the YAMLs; everything it calls lives in the package.
"""

from __future__ import annotations

import json
from typing import Any

from rlkd_bench.tasks import evaldata, metrics

# -- data (lm-eval's custom_dataset: called with the task metadata as keyword arguments) ----------


def _dataset(docs: list[dict[str, Any]]):
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})


def load_structure(**metadata: Any):
    """rlkd_structure / rlkd_diversity: the bundled held-out set unless ``eval_data`` says otherwise."""
    return _dataset(evaldata.structure_docs(metadata))


def load_aime24(**metadata: Any):
    return _dataset(evaldata.math_docs("rlkd_aime24", metadata))


def load_math500(**metadata: Any):
    return _dataset(evaldata.math_docs("rlkd_math500", metadata))


def load_gpqa_diamond(**metadata: Any):
    return _dataset(evaldata.gpqa_docs(metadata))


# -- the scorer, one per setting, kept for the run ---------------------------------------------

_SCORERS: dict[str, Any] = {}


def scorer_for(doc: dict[str, Any]):
    """The StructureScorer for the settings stamped in ``doc`` (built once per setting: a GSRM
    checkpoint loads once per run)."""
    key = doc["scorer"]
    if key not in _SCORERS:
        from rlkd_bench.reward.scorer import StructureScorer

        s = evaldata.settings_of(key)
        _SCORERS[key] = StructureScorer(s["decomposer"], s["matcher"], normalize=True, timeout_s=s["timeout_s"],
                                        gsrm_engine=s.get("gsrm_engine"))
    return _SCORERS[key]


# -- filters: the structure scoring, one batch per task ---------------------------------------------
# lm-eval calls process_results one doc at a time; a GSRM or a judge behind an endpoint wants the
# whole batch at once. So the scoring runs in the task's filter, which sees every completion of the
# task together: one decomposition batch, the rule's comparisons in at most two judge rounds. The
# filter hands each doc its record as a JSON string (lm-eval's sample log writes a filtered response
# with str(), so a dict would be logged as Python repr); process_results only reads it.


def keep_all_samples(resps, docs):
    """lm-eval's default filter keeps the first of ``repeats`` samples; pass@k needs all k."""
    return [list(r) for r in resps]


def _record(completion: str, outcome) -> dict[str, Any]:
    a = outcome.alignment
    return {"completion": completion, "error": outcome.error,
            "steps": len(outcome.decomposition) if outcome.decomposition is not None else None,
            "alignment": None if a is None else {
                "normalized": a.normalized, "score": a.score, "matched_prefix": a.matched_prefix,
                "n_teacher": a.n_teacher, "n_student": a.n_student}}


def score_against_teacher(resps, docs):
    """rlkd_structure's filter: every completion against its problem's teacher steps, in one batch."""
    resps, docs = [list(r) for r in resps], list(docs)
    if not docs:
        return []
    flat = [(d, c) for d, r in zip(docs, resps, strict=True) for c in r]
    outcomes = iter(scorer_for(docs[0]).score([d["problem"] for d, _ in flat], [c for _, c in flat],
                                               [d["teacher_steps"] for d, _ in flat]))
    return [[json.dumps(_record(c, next(outcomes))) for c in r] for r in resps]


def score_samples(resps, docs):
    """rlkd_diversity's filter: decompose all k samples of every problem (one batch), then align every
    ordered pair of decomposed samples within a problem (one batch for the whole task)."""
    resps, docs = [list(r) for r in resps], list(docs)
    if not docs:
        return []
    scorer = scorer_for(docs[0])
    flat = [(d, c) for d, r in zip(docs, resps, strict=True) for c in r]
    outcomes = iter(scorer.score([d["problem"] for d, _ in flat], [c for _, c in flat], [[]] * len(flat)))
    per_doc = [[next(outcomes) for _ in r] for r in resps]  # no teacher here: decompositions only
    keys, pairs = [], []
    for n, outs in enumerate(per_doc):
        for i, a in enumerate(outs):
            for j, b in enumerate(outs):
                if i != j and a.decomposition is not None and b.decomposition is not None:
                    keys.append((n, i, j))
                    pairs.append((a.decomposition, b.decomposition))
    aligned = scorer.align_pairs(pairs) if pairs else []
    table: dict[int, list] = {}
    for (n, i, j), a in zip(keys, aligned, strict=True):
        table.setdefault(n, []).append([i, j, *metrics.pair_score(a)] if a is not None else [i, j, None, None])
    return [json.dumps({"samples": [{k: v for k, v in _record(c, o).items() if k != "alignment"}
                                     for c, o in zip(r, outs, strict=True)],
                        "pairs": table.get(n, [])})
            for n, (r, outs) in enumerate(zip(resps, per_doc, strict=True))]


# -- results ---------------------------------------------------------------------------------------


def process_structure(doc: dict[str, Any], results: list) -> dict[str, float]:
    """One completion against the teacher's steps: alignment, prefix, step ratio, failures, accuracy."""
    rec = json.loads(results[0][0])
    a = rec["alignment"]
    decomposed = rec["steps"] is not None
    return {
        "structure_alignment": a["normalized"] if a else 0.0,
        "matched_prefix": float(a["matched_prefix"]) if a else 0.0,
        "step_ratio": a["n_student"] / a["n_teacher"] if a and decomposed and a["n_teacher"] else 0.0,
        "undecomposable": float(not decomposed),
        "unscored": float(a is None),
        "accuracy": float(metrics.math_correct(doc["gold"], rec["completion"])),
    }


def process_diversity(doc: dict[str, Any], results: list) -> dict[str, float]:
    """k samples of one problem: distinct structures, structural vs surface divergence, pass@k."""
    data = json.loads(results[0])
    samples = [s["completion"] for s in data["samples"]]
    sizes = [s["steps"] or 0 for s in data["samples"]]
    table = {(i, j): (norm, same) for i, j, norm, same in data["pairs"] if norm is not None}

    def pair(i: int, j: int):
        return table.get((i, j))

    k = len(samples)
    return {
        "distinct_structures": float(metrics.distinct_structures(sizes, pair)),
        "structural_divergence": metrics.structural_divergence(sizes, pair),
        "surface_divergence": metrics.surface_divergence(samples),
        "distinct_2": metrics.distinct_n(samples, 2),
        "undecomposable": sum(s["steps"] is None for s in data["samples"]) / k if k else 0.0,
        "n_samples": float(k),
        **metrics.pass_at_ks([metrics.math_correct(doc["gold"], s) for s in samples]),
    }


def process_math(doc: dict[str, Any], results: list[list[str]]) -> dict[str, float]:
    """pass@1 over the n samples (and pass@k up to n), math-verify on the text after the thinking."""
    samples = list(results[0])
    out = metrics.pass_at_ks([metrics.math_correct(doc["gold"], s) for s in samples])
    out["n_samples"] = float(len(samples))
    return out


def process_gpqa(doc: dict[str, Any], results: list[list[str]]) -> dict[str, float]:
    """pass@1 over the n samples: the letter the answer names against the gold letter."""
    samples = list(results[0])
    out = metrics.pass_at_ks([metrics.extract_choice(s) == doc["gold"] for s in samples])
    out["n_samples"] = float(len(samples))
    return out
