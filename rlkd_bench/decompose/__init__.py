"""Decomposers: turn (problem, reasoning trace) into a step Decomposition.

Three behind one call: ``heuristic`` (offline algorithm, the default and the baseline),
``openai:<model>`` (an LLM annotator with the domain prompts), ``gsrm:<path-or-url>`` (a trained
GSRM). ``get_decomposer(spec)`` picks one by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from rlkd_bench.llm.base import Usage
from rlkd_bench.structure import Decomposition


@dataclass
class DecomposeResult:
    """One trace's decomposition, or the reason there is none (never an empty one in silence)."""

    decomposition: Decomposition | None
    raw: str = ""
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    cached: bool = False
    attempts: int = 1

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


def get_decomposer(spec: str, **options: Any) -> Decomposer:
    """Build a decomposer from a spec string: ``heuristic``, ``openai:<model>``, ``gsrm:<path>``."""
    from rlkd_bench.errors import ConfigError

    kind, _, target = spec.partition(":")
    if kind == "heuristic":
        from rlkd_bench.decompose.heuristic import HeuristicDecomposer

        return HeuristicDecomposer()
    if kind == "openai" and target:
        from rlkd_bench.decompose.annotate import Annotator

        return Annotator(model=target, **options)
    if kind == "gsrm" and target:
        from rlkd_bench.decompose.gsrm import GSRMDecomposer

        return GSRMDecomposer(target, **options)
    raise ConfigError(
        f"unknown decomposer {spec!r}: use 'heuristic', 'openai:<model>' or 'gsrm:<checkpoint-or-url>'"
    )
