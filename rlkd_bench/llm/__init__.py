"""Model access: one interface (``Engine.generate``), several engines, one cache."""

from rlkd_bench.llm.base import ChatRequest, Completion, Engine, EngineOptions, Usage

__all__ = ["ChatRequest", "Completion", "Engine", "EngineOptions", "Usage"]
