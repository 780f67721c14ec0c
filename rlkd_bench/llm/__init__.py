"""Model access: one interface (``Engine.generate``), several engines, one cache.

``make_engine("openai:gpt-4o", EngineOptions(...))`` and friends; see ``SPEC_HELP``.
Engines import their heavy dependencies (openai, torch, vllm) only when built.
"""

from __future__ import annotations

from rlkd_bench.errors import ConfigError
from rlkd_bench.llm.base import ChatRequest, Completion, Engine, EngineOptions, Usage

SPEC_HELP = ("an engine spec is KIND:MODEL with KIND one of openai (HTTP; --batch-api for the Batch API; "
             "--base-url for vllm serve / transformers serve), transformers (in process, CPU/GPU) or vllm "
             "(in process, GPU), or world:teacher (the mini-study world's programmatic teacher), e.g. openai:gpt-4o, "
             "transformers:Qwen/Qwen2.5-7B-Instruct, vllm:./gsrm")
KINDS = ("openai", "transformers", "vllm", "world")


def parse_spec(spec: str) -> tuple[str, str]:
    """``"openai:gpt-4o"`` -> ``("openai", "gpt-4o")``; bad specs raise ConfigError."""
    kind, sep, model = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in KINDS or not model.strip():
        raise ConfigError(f"unknown engine {spec!r}: {SPEC_HELP}")
    return kind, model.strip()


def make_engine(spec: str, options: EngineOptions | None = None) -> Engine:
    """The engine for ``spec`` with ``options`` (defaults if None)."""
    kind, model = parse_spec(spec)
    options = options or EngineOptions()
    if kind == "openai":
        if options.batch_api:
            from rlkd_bench.llm.batch import BatchEngine

            return BatchEngine(model, options)
        from rlkd_bench.llm.openai_engine import OpenAIEngine

        return OpenAIEngine(model, options)
    if kind == "world":  # not a model: the programmatic teacher of rlkd_bench/data/world.py
        from rlkd_bench.data.world import WorldTeacher

        return WorldTeacher(model, options)
    if options.batch_api:
        raise ConfigError(f"--batch-api works with openai:<model> engines only, not {spec!r}")
    if kind == "transformers":
        from rlkd_bench.llm.local import TransformersEngine

        return TransformersEngine(model, options)
    from rlkd_bench.llm.local import VLLMEngine

    return VLLMEngine(model, options)


__all__ = ["ChatRequest", "Completion", "ConfigError", "Engine", "EngineOptions", "Usage", "make_engine",
           "parse_spec", "SPEC_HELP"]
