"""The functions the task YAMLs name (``!function utils.NAME``): thin shims between lm-eval and
the metrics (``metrics.py``), the data loaders (``evaldata.py``) and the structure reward's scorer
(``rlkd_bench.reward.scorer``: one rule, one set of matchers for the reward and these metrics).

lm-eval loads this file by path, next to the YAMLs; everything it calls lives in the package.
"""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

from lm_eval.api.task import ConfigurableTask

from rlkd_bench.errors import ConfigError
from rlkd_bench.tasks import evaldata, metrics

# -- the task class every YAML names (``class: !function utils.RlkdTask``) ------------------------


class RlkdTask(ConfigurableTask):
    """lm-eval's YAML task with what plain ``lm_eval`` runs need from us:

    - the task metadata is redacted once the data is loaded: lm-eval writes it into
      ``results_*.json`` (``configs.<task>.metadata``), and it can hold a decomposer, judge or
      GSRM URL with a password or an ``api_key`` query, and (lm_eval's CLI merges ``--model_args``
      into it) a model ``base_url``. The loaders have read the real values by then; the scorer
      finds them again through the doc's stamp (``evaldata.settings_of``), which is redacted too.
    - without a chat template the system text and the problem are joined by a blank line, as a
      person would write them (lm-eval glues the description to the question with nothing);
    - a task that compares samples (``MIN_REPEATS``) refuses fewer before anything is generated.
    """

    MIN_REPEATS = 1

    def __init__(self, config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config={k: v for k, v in (config or {}).items() if k != "class"}, **kwargs)
        self.config.metadata = public_metadata(self.config.metadata)

    def fewshot_context(self, doc: dict, num_fewshot: int, **kwargs: Any) -> Any:
        if not (kwargs.get("apply_chat_template") and kwargs.get("chat_template")):  # lm-eval renders text
            doc = plain_text_doc(doc, self.config.description)
        return super().fewshot_context(doc=doc, num_fewshot=num_fewshot, **kwargs)

    def check_repeats(self) -> None:
        """Refuse fewer samples per problem than the task compares (``rlkd-bench eval`` calls this
        before the model loads; lm-eval's own run reaches it before anything is generated)."""
        require_repeats(self.config.task, self.config.repeats, self.MIN_REPEATS)

    def build_all_requests(self, **kwargs: Any) -> None:
        self.check_repeats()
        return super().build_all_requests(**kwargs)


class RlkdSamplesTask(RlkdTask):
    """rlkd_diversity: compares the k samples of a problem, so it needs two at least."""

    MIN_REPEATS = 2


def public_metadata(metadata: Any) -> Any:
    """Task metadata as results may show it: every URL without password, user or query values."""
    from rlkd_bench.llm.redact import scrub

    return scrub(metadata) if isinstance(metadata, dict) else metadata


def plain_text_doc(doc: dict[str, Any], description: Any) -> dict[str, Any]:
    """``doc`` for a prompt without chat template: the description field (the system text) ends
    in a blank line, so the instruction and the problem read as two paragraphs."""
    if isinstance(description, str) and isinstance(doc.get(description), str) and doc[description].strip():
        return {**doc, description: doc[description].rstrip() + "\n\n"}
    return doc


def require_repeats(task: str | None, repeats: int | None, need: int) -> None:
    """A task that compares samples of one problem refuses fewer than ``need``: one sample has
    one structure and no pair, which would read as 'no diversity' rather than 'not measured'."""
    if (repeats or 1) < need:
        raise ConfigError(f"{task} compares the samples of each problem and needs repeats >= {need} (got "
                          f"{repeats or 1}): set `repeats` in the task YAML or pass `rlkd-bench eval --repeats "
                          f"{max(need, 8)}`")


# -- aggregation -----------------------------------------------------------------------------------


def nanmean(values: list[Any]) -> float:
    """lm-eval aggregation for a metric that can be unmeasured on a sample (None/NaN): the mean
    over the samples that measured it, NaN when none did (never 0: 'nothing measured' is not a
    score). The structure tasks report the share of unscored samples beside it (``unscored``)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return statistics.fmean(xs) if xs else math.nan


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
                                        gsrm_engine=s.get("gsrm_engine"), gsrm_model=s.get("gsrm_model"),
                                        judge_model=s.get("judge_model"))
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
    """One completion's scorer outcome as the per-sample log keeps it (an endpoint's error text
    without the URL secrets of the decomposer or judge)."""
    from rlkd_bench.llm.redact import scrub

    a = outcome.alignment
    return {"completion": completion, "error": scrub(outcome.error) if outcome.error else outcome.error,
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
    """rlkd_diversity's filter: decompose all k samples of every problem and align each against its
    teacher's steps (one batch), then align every ordered pair of decomposed samples within a
    problem (one batch for the whole task)."""
    resps, docs = [list(r) for r in resps], list(docs)
    if not docs:
        return []
    scorer = scorer_for(docs[0])
    flat = [(d, c) for d, r in zip(docs, resps, strict=True) for c in r]
    outcomes = iter(scorer.score([d["problem"] for d, _ in flat], [c for _, c in flat],
                                 [d["teacher_steps"] for d, _ in flat]))
    per_doc = [[next(outcomes) for _ in r] for r in resps]
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
    return [json.dumps({"samples": [_record(c, o) for c, o in zip(r, outs, strict=True)],
                        "pairs": table.get(n, [])})
            for n, (r, outs) in enumerate(zip(resps, per_doc, strict=True))]


# -- results ---------------------------------------------------------------------------------------


def _alignment_figures(records: list[dict[str, Any]]) -> dict[str, float | None]:
    """Structure against the teacher over a problem's samples: each figure the mean over the
    samples that were scored (None when none was: not measured, never 0), and the share unscored.
    A sample is unscored when it has no alignment: no ``</think>``, a failed decomposition, a
    failed judge verdict or the timeout (the record's ``error`` says which)."""
    aligned = [r["alignment"] for r in records if r.get("alignment")]

    def mean(values: list[float]) -> float | None:
        return statistics.fmean(values) if values else None

    return {
        "structure_alignment": mean([a["normalized"] for a in aligned]),
        "matched_prefix": mean([float(a["matched_prefix"]) for a in aligned]),
        "step_ratio": mean([a["n_student"] / a["n_teacher"] for a in aligned if a["n_teacher"]]),
        "unscored": (len(records) - len(aligned)) / len(records) if records else 1.0,
    }


def process_structure(doc: dict[str, Any], results: list) -> dict[str, float | None]:
    """One completion per problem against the teacher's steps: alignment, prefix, step ratio (None
    when the completion could not be scored), the shares undecomposable and unscored, accuracy."""
    rec = json.loads(results[0][0])
    return {
        **_alignment_figures([rec]),
        "undecomposable": float(rec["steps"] is None),
        "accuracy": float(metrics.math_correct(doc["gold"], rec["completion"])),
    }


def process_diversity(doc: dict[str, Any], results: list) -> dict[str, float | None]:
    """k samples of one problem: distinct structures, structural vs surface divergence, pass@k, and
    the structure against the teacher over all k (the mean over the scored samples, so lm-eval's
    mean over problems is the mean over samples, then over problems)."""
    data = json.loads(results[0])
    samples = [s["completion"] for s in data["samples"]]
    sizes = [s["steps"] or 0 for s in data["samples"]]
    table = {(i, j): (norm, same) for i, j, norm, same in data["pairs"] if norm is not None}

    def pair(i: int, j: int):
        return table.get((i, j))

    k = len(samples)
    return {
        "distinct_structures": float(metrics.distinct_structures(sizes, pair)) if k >= 2 else None,
        "structural_divergence": metrics.structural_divergence(sizes, pair),
        "surface_divergence": metrics.surface_divergence(samples),
        "distinct_2": metrics.distinct_n(samples, 2),
        "undecomposable": sum(s["steps"] is None for s in data["samples"]) / k if k else 1.0,
        **_alignment_figures(data["samples"]),
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
    out = metrics.pass_at_ks([metrics.check(doc["gold"], s, choices=metrics.CHOICE_LETTERS) for s in samples])
    out["n_samples"] = float(len(samples))
    return out
