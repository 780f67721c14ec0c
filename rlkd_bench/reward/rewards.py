"""TRL reward functions for RLKD, registered by name so a YAML config lists them.

``get_reward_funcs(["accuracy", "format", "tag_count", "structure"], structure={...})`` returns
callables with TRL 1.16's reward signature, ``f(prompts, completions, completion_ids=..., **columns,
trainer_state=..., log_extra=..., log_metric=...) -> list[float | None]``, whose ``__name__`` is the
registry name (TRL logs ``rewards/<name>/mean``). Completions may be strings or conversational
lists of messages. ``structure`` is async, so TRL runs it alongside the other rewards; it carries
its own timeout, and every completion it cannot score gets None, counted in the logs.

What TRL 1.16 does with a None (``GRPOTrainer._calculate_rewards`` turns it into NaN, then
``_generate_and_score_completions``), read from its source:

- the total reward is ``nansum`` over the weighted rewards, so a None counts as **0** whenever any
  other reward function scored the completion (accuracy, format and tag_count always do): with
  the default ``multi_objective_aggregation="sum_then_normalize"`` a failed structure score is a
  structure reward of 0 in the advantage, not a sample left out;
- with ``normalize_then_sum`` each reward is first normalised within its group with ``nanmean`` /
  ``nanstd``; the None stays NaN and the ``nansum`` then counts it as that reward's group mean;
- only a completion for which *every* reward function returned None is left out: its total is
  NaN, it is excluded from the group mean and std, its advantage is set to 0, and TRL warns;
- ``rewards/structure/mean`` is a ``nanmean``: the mean over scored completions only, which
  overstates what the advantage saw when some failed.

So the structure reward also logs ``structure/none_frac`` (the share of None in the batch; the
same share as ``structure/failed``), ``structure/mean_scored`` (the mean over scored completions,
TRL's number) and ``structure/mean_with_failures_as_0`` (what ``sum_then_normalize`` really adds).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from rlkd_bench.answers import check
from rlkd_bench.errors import ConfigError, DataError
from rlkd_bench.llm.base import EngineOptions

log = logging.getLogger("rlkd_bench.reward")

MAKER = "`rlkd-bench build-rlkd-data` (the rlkd-data product)"
RewardFunc = Callable[..., Any]


# -- inputs ------------------------------------------------------------------------------------
def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or the assistant content of a list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    if isinstance(completion, (list, tuple)):
        parts = [m.get("content") for m in completion if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
        return "".join(str(p) for p in parts if p)
    return "" if completion is None else str(completion)


def prompt_problem(prompt: Any) -> str:
    """The last user turn of a conversational prompt (or the prompt string itself)."""
    if isinstance(prompt, (list, tuple)):
        users = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1]) if users else ""
    return "" if prompt is None else str(prompt)


def column(kwargs: dict[str, Any], name: str, n: int, reward: str) -> list[Any]:
    """A dataset column TRL passed, checked; a missing one is a DataError that says who makes it."""
    if name not in kwargs or kwargs[name] is None:
        present = sorted(k for k in kwargs if k not in ("trainer_state", "log_extra", "log_metric", "completion_ids"))
        raise DataError(f"the '{reward}' reward needs the dataset column '{name}', which this dataset lacks "
                        f"(columns: {', '.join(present) or 'none'}); it is made by {MAKER}", field=name)
    values = list(kwargs[name])
    if len(values) != n:
        raise DataError(f"column '{name}' has {len(values)} values for {n} completions", field=name)
    return values


# -- accuracy, format, tag count ---------------------------------------------------------------
def accuracy(prompts: list, completions: list, completion_ids: list | None = None, **kwargs: Any) -> list[float | None]:
    """1.0 when the completion's final answer is right against the gold answer, else 0.0; None when
    the gold is blank (the row cannot be scored, not a wrong answer). The verdict is
    ``rlkd_bench.answers.check``, the same as every eval metric's, so training and evaluation agree."""
    golds = column(kwargs, "gold", len(completions), "accuracy")
    out: list[float | None] = []
    for comp, gold in zip(completions, golds, strict=True):
        right = check("" if gold is None else str(gold), completion_text(comp))
        out.append(None if right is None else float(right))
    return out


_FORMAT = re.compile(r"^\s*(?:<think>)?(.*?)</think>\s*<answer>(.*?)</answer>\s*$", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def _think_open_ok(text: str) -> bool:
    """``<think>`` once, or not at all when ``</think>`` is there (R1 templates open it in the prompt)."""
    n = text.count("<think>")
    return n == 1 and text.lstrip().startswith("<think>") or (n == 0 and text.count("</think>") == 1)


def format_reward(prompts: list, completions: list, completion_ids: list | None = None,
                  **kwargs: Any) -> list[float]:
    """1.0 for ``<think>..</think><answer>..</answer>`` with each tag once and non-empty parts."""
    out = []
    for comp in completions:
        text = completion_text(comp)
        m = _FORMAT.match(text)
        ok = (m is not None and _think_open_ok(text) and all(text.count(t) == 1 for t in _TAGS[1:])
              and bool(m.group(1).strip()) and bool(m.group(2).strip()))
        out.append(1.0 if ok else 0.0)
    return out


format_reward.__name__ = format_reward.__qualname__ = "format"


def tag_count(prompts: list, completions: list, completion_ids: list | None = None, **kwargs: Any) -> list[float]:
    """0.25 for each of the four tags used exactly once (a partial credit that shapes early RL)."""
    out = []
    for comp in completions:
        text = completion_text(comp)
        score = 0.25 * _think_open_ok(text) + sum(0.25 * (text.count(t) == 1) for t in _TAGS[1:])
        out.append(score)
    return out


# -- structure ---------------------------------------------------------------------------------
STRUCTURE_KEYS = ("decomposer", "matcher", "normalize", "timeout_s", "gsrm_engine", "gsrm_max_new_tokens",
                  "engine_options", "gsrm_model", "judge_model")


def make_structure_reward(config: dict[str, Any] | None = None) -> RewardFunc:
    """The async ``structure`` reward from its config (keys: ``STRUCTURE_KEYS``)."""
    from rlkd_bench.reward.scorer import (
        DECOMPOSE_FAILED,
        JUDGE_FAILED,
        NO_THINK_END,
        TIMEOUT,
        StructureScorer,
    )

    cfg = dict(config or {})
    unknown = sorted(set(cfg) - set(STRUCTURE_KEYS))
    if unknown:
        raise ConfigError(f"structure reward: unknown option {unknown[0]!r}; known: {', '.join(STRUCTURE_KEYS)}")
    eo = cfg.pop("engine_options", None)
    if isinstance(eo, dict):
        try:
            eo = EngineOptions(**{"progress": False, **eo})
        except TypeError as e:
            raise ConfigError(f"structure reward: engine_options: {e}") from None
    scorer = StructureScorer(**cfg, engine_options=eo)
    counts = {"completions": 0, "failed": 0, "decompose_failed": 0, "judge_failed": 0, "no_think_end": 0,
              "timeouts": 0}

    async def structure(prompts: list, completions: list, completion_ids: list | None = None,
                        **kwargs: Any) -> list[float | None]:
        n = len(completions)
        teacher = column(kwargs, "teacher_steps", n, "structure")
        problems = (column(kwargs, "problem", n, "structure") if "problem" in kwargs
                    else [prompt_problem(p) for p in prompts])
        outcomes = await scorer.ascore([str(p or "") for p in problems],
                                       [completion_text(c) for c in completions], teacher)
        rewards = [o.reward(scorer.normalize) for o in outcomes]
        errs = [o.error or "" for o in outcomes]
        share = {
            "failed": sum(r is None for r in rewards),
            "decompose_failed": sum(e.startswith(DECOMPOSE_FAILED) for e in errs),
            "judge_failed": sum(e.startswith(JUDGE_FAILED) for e in errs),
            "no_think_end": sum(e == NO_THINK_END for e in errs),
            "timeouts": sum(e == TIMEOUT for e in errs),
        }
        counts["completions"] += n
        for k, v in share.items():
            counts[k] += v
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and n:
            for k, v in share.items():
                log_metric(f"structure/{k}", v / n)
            scored = [r for r in rewards if r is not None]
            log_metric("structure/none_frac", share["failed"] / n)
            # TRL's nansum counts a None as 0 next to the other rewards (module docstring): say so
            log_metric("structure/mean_with_failures_as_0", sum(scored) / n)
            if scored:
                log_metric("structure/mean_scored", sum(scored) / len(scored))
            ok = [o.alignment for o in outcomes if o.ok]
            if ok:
                log_metric("structure/matched_prefix", sum(a.matched_prefix for a in ok) / len(ok))
                log_metric("structure/halvings", sum(a.halvings for a in ok) / len(ok))
                log_metric("structure/student_steps", sum(a.n_student for a in ok) / len(ok))
                log_metric("structure/teacher_steps", sum(a.n_teacher for a in ok) / len(ok))
                log_metric("structure/raw_score", sum(a.score for a in ok) / len(ok))
        log_extra = kwargs.get("log_extra")
        if callable(log_extra):
            log_extra("structure_error", errs)
            log_extra("structure_prefix", [o.alignment.matched_prefix if o.ok else None for o in outcomes])
            log_extra("structure_steps", [len(o.decomposition) if o.decomposition is not None else None
                                          for o in outcomes])
        return rewards

    structure.scorer = scorer  # type: ignore[attr-defined]
    structure.counts = counts  # type: ignore[attr-defined]
    return structure


# -- the registry ------------------------------------------------------------------------------
REWARD_FUNCS: dict[str, Callable[[dict[str, Any] | None], RewardFunc]] = {
    "accuracy": lambda _cfg: accuracy,
    "format": lambda _cfg: format_reward,
    "tag_count": lambda _cfg: tag_count,
    "structure": make_structure_reward,
}
# which dataset columns each reward reads (a recipe can check a dataset before training)
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {"accuracy": ("gold",), "format": (), "tag_count": (),
                                                "structure": ("teacher_steps",)}


def get_reward_funcs(names: Sequence[str], *, structure: dict[str, Any] | None = None) -> list[RewardFunc]:
    """The reward functions for ``names``, in order; ``structure`` configures the structure reward."""
    if isinstance(names, str):
        names = [names]
    out = []
    for name in names:
        if name not in REWARD_FUNCS:
            raise ConfigError(f"unknown reward {name!r}; known rewards: {', '.join(REWARD_FUNCS)}")
        out.append(REWARD_FUNCS[name](structure if name == "structure" else None))
    return out


def check_columns(names: Sequence[str], columns: Sequence[str], *, dataset: str = "the dataset") -> None:
    """Raise a DataError before training when ``columns`` lack what the rewards ``names`` read."""
    for name in names:
        for col in REQUIRED_COLUMNS.get(name, ()):
            if col not in columns:
                raise DataError(f"the '{name}' reward needs the column '{col}', which {dataset} lacks "
                                f"(columns: {', '.join(columns)}); it is made by {MAKER}", field=col)
