"""Decomposers: turn (problem, reasoning trace) into a step Decomposition.

Three behind one call: ``heuristic`` (offline algorithm, the default and the baseline),
``openai:<model>`` (an LLM annotator with the domain prompts), ``gsrm:<path-or-url>`` (a trained
GSRM); and ``world``, the exact parser of the mini-study world's traces (its truth). ``get_decomposer(spec)`` picks one by name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from rlkd_bench.llm.base import BUDGET_PREFIX as BUDGET_PREFIX  # re-exported for the stages
from rlkd_bench.llm.base import Usage
from rlkd_bench.structure import Decomposition

# How a DecomposeResult.error starts says what the stage does with the row:
# BUDGET_PREFIX: not sent (--max-cost): neither done nor rejected; a rerun continues
REQUEST_ERROR_PREFIX = "request failed:"  # the server failed after all retries: left pending
INVALID_PREFIX = "invalid reply"  # the model answered, the reply failed validation: a reject


@dataclass
class DecomposeResult:
    """One trace's decomposition, or the reason there is none (never an empty one in silence)."""

    decomposition: Decomposition | None
    raw: str = ""
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    cached: bool = False
    attempts: int = 1
    # a request failure a rerun may fix (timeout, 5xx, 429) or not (HTTP 400: the same request fails
    # again); the engine's Completion.retryable says which
    retryable: bool = True
    # where each step starts in the reasoning (character offsets), from a decomposer that knows
    # (rlkd_bench.decompose.score's baselines); None: score.locate places the steps
    starts: tuple[int, ...] | None = None

    @property
    def ok(self) -> bool:
        return self.decomposition is not None and self.error is None

    def annotator_meta(self) -> dict[str, Any]:
        """Per-row facts (e.g. which domain prompt was used) added to the row's ``annotator``."""
        return {}


class Decomposer(Protocol):
    """``items`` are traces rows (dicts with id, domain, problem, reasoning)."""

    name: str
    prompt_version: str

    def decompose(self, items: list[dict[str, Any]]) -> list[DecomposeResult]: ...

    def describe(self) -> dict[str, Any]:
        """Model, prompt version and parameters, recorded in annotations and manifests."""
        ...


def run_decomposer(decomposer: Decomposer, items: list[dict[str, Any]],
                   on_result: Callable[[int, DecomposeResult], None]) -> list[DecomposeResult]:
    """Decompose ``items``, calling ``on_result(i, result)`` once per item as results arrive.

    Streams when the decomposer can (so a stage writes rows as they finish and a killed run loses
    nothing); otherwise reports every result when the batch returns.
    """
    if "on_result" in inspect.signature(decomposer.decompose).parameters:
        seen: set[int] = set()

        def once(i: int, res: DecomposeResult) -> None:
            seen.add(i)
            on_result(i, res)

        results = decomposer.decompose(items, on_result=once)
    else:
        results, seen = decomposer.decompose(items), set()
    for i, res in enumerate(results):
        if i not in seen:
            on_result(i, res)
    return results


def get_decomposer(spec: str, **options: Any) -> Decomposer:
    """Build a decomposer from a spec string: ``heuristic``, ``openai:<model>``, ``gsrm:<path>``."""
    from rlkd_bench.errors import ConfigError

    kind, _, target = spec.partition(":")
    if kind == "heuristic":
        from rlkd_bench.decompose.heuristic import HeuristicDecomposer

        return HeuristicDecomposer()
    if kind == "world" and not target:  # the mini-study world's exact parser (rlkd_bench/data/world.py)
        from rlkd_bench.data.world import WorldDecomposer

        return WorldDecomposer()
    if kind == "openai" and target:
        from rlkd_bench.decompose.annotate import Annotator

        return Annotator(model=target, **options)
    if kind == "gsrm" and target:
        from rlkd_bench.decompose.gsrm import GSRMDecomposer

        return GSRMDecomposer(target, **options)
    raise ConfigError(
        f"unknown decomposer {spec!r}: use 'heuristic', 'openai:<model>', 'gsrm:<checkpoint-or-url>' or "
        "'world' (the mini-study world's exact parser)"
    )
