"""The functions rlkd_decompose.yaml names (``!function decompose_utils.NAME``): a model scored as a
GSRM. Each doc is a trace of a reference set (``rlkd_bench.decompose.score``); the model gets the
GSRM prompt the GSRM is trained with (``prompting.gsrm_messages``), its reply is parsed with the one
step parser and scored with the benchmark's metrics (``score.score_sample``), overall and per domain.

lm-eval loads this file by path, next to the YAMLs; everything it calls lives in the package.
"""

from __future__ import annotations

import math
import statistics
from functools import cache
from typing import Any

from rlkd_bench.decompose import INVALID_PREFIX, DecomposeResult
from rlkd_bench.decompose import score as S
from rlkd_bench.prompting import gsrm_messages
from rlkd_bench.structure import parse_steps, validate
from rlkd_bench.tasks.evaldata import settings_of, stamp_settings

DOMAINS = ("math", "code", "science", "puzzle")
DEFAULT_SET = "benchmark"


def _settings(metadata: dict[str, Any]) -> tuple[str, str]:
    sets = str(metadata.get("set") or DEFAULT_SET)
    S.parse_set_names(sets)  # a typo is refused before anything runs
    return sets, str(metadata.get("matcher") or "lexical")


@cache
def _refs(sets: str) -> dict[str, S.Reference]:
    return {r.id: r for name in S.parse_set_names(sets) for r in S.load_set(name)}


@cache
def _matcher(spec: str):
    from rlkd_bench.reward.matchers import make_matcher

    return make_matcher(spec)


def load_docs(**metadata: Any):
    """lm-eval's custom_dataset: one doc per reference trace, with the GSRM's system and user turns."""
    import datasets

    sets, matcher = _settings(metadata)
    stamp = stamp_settings({"set": sets, "matcher": matcher})  # a judge URL's secrets stay out of the log
    docs = []
    for ref in _refs(sets).values():
        system, user = (m["content"] for m in gsrm_messages(ref.problem, ref.reasoning))
        docs.append({"id": ref.id, "scorer": stamp, "domain": ref.domain, "system": system, "user": user,
                     "target": ""})
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})


def as_result(reply: str) -> DecomposeResult:
    """A model's reply as a decomposer result: valid steps, or the parser's reasons."""
    problems = validate(reply)
    if problems:
        return DecomposeResult(decomposition=None, raw=reply, error=f"{INVALID_PREFIX}: " + "; ".join(problems))
    return DecomposeResult(decomposition=parse_steps(reply), raw=reply)


def process_results(doc: dict[str, Any], results: list) -> dict[str, float | None]:
    """Every metric of one reply (None where it cannot be scored), overall and under its domain."""
    settings = settings_of(doc["scorer"])
    ref = _refs(settings["set"])[doc["id"]]
    res = as_result(str(results[0] or ""))
    status, pred, _ = S.classify(res)
    verdicts = S.judge_all(_matcher(settings["matcher"]), [(ref.truth, pred)] if pred is not None else [])
    row = S.score_sample(ref, res, verdicts)
    domain = ref.domain.split(" ")[0]
    out: dict[str, float | None] = {m: row[m] for m in S.METRICS}
    for d in DOMAINS:
        out.update({f"{m}_{d}": row[m] if d == domain else None for m in S.METRICS})
    out["unscorable"] = float(status == S.STATUS_UNSCORABLE or row.get("f1") is None)
    return out


def nanmean(values: list[Any]) -> float:
    """Mean over the samples that measured the metric; NaN when none did (never 0)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return statistics.fmean(xs) if xs else math.nan
