"""The GSRM as a decomposer: a fine-tuned model rewrites each trace as steps, greedily.

The target is a local checkpoint (made by ``make train-gsrm``; run in-process through the
transformers engine, or vLLM with ``engine="vllm"``) or the URL of an OpenAI-compatible server
of it (``vllm serve CKPT``). Requests go through the model-access engines, so they are batched,
cached and costed like every other model call. Every reply is parsed and validated by the step
module; one that does not parse, is cut off, or fails validation is returned as a failure with
the reply and the reasons, never as an empty decomposition.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlkd_bench.decompose import BUDGET_PREFIX, INVALID_PREFIX, REQUEST_ERROR_PREFIX, DecomposeResult
from rlkd_bench.errors import ConfigError
from rlkd_bench.llm.base import ChatRequest, Completion, Engine, EngineOptions
from rlkd_bench.prompting import GSRM_PROMPT, gsrm_messages, load_prompt
from rlkd_bench.structure import parse_steps, validate

log = logging.getLogger("rlkd_bench.gsrm")
ENGINES = ("transformers", "vllm")
DEFAULT_MAX_TOKENS = 4096
INVALID_INPUT_PREFIX = "invalid input"  # an item with nothing to decompose: a reject, never sent


def is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def parse_reply(completion: Completion) -> DecomposeResult:
    """Turn one engine completion into a decomposition or a failure that keeps the reply."""
    if not completion.ok:
        return DecomposeResult(decomposition=None, raw=completion.text or "",
                               error=f"{REQUEST_ERROR_PREFIX} {completion.error}"
                               if not (completion.error or "").startswith(BUDGET_PREFIX) else completion.error,
                               usage=completion.usage, cached=completion.cached,
                               retryable=getattr(completion, "retryable", True))
    text = completion.text or ""
    decomposition = parse_steps(text)
    problems = validate(decomposition)
    if completion.finish_reason == "length":
        problems.insert(0, "reply cut off at the token limit (raise --max-new-tokens)")
    if problems:
        return DecomposeResult(decomposition=None, raw=text, error=f"{INVALID_PREFIX}: " + "; ".join(problems),
                               usage=completion.usage, cached=completion.cached)
    return DecomposeResult(decomposition=decomposition, raw=text, usage=completion.usage, cached=completion.cached)


class GSRMDecomposer:
    """Decompose traces with a trained GSRM (a checkpoint dir or an endpoint URL).

    ``engine``: for a checkpoint, "transformers" (default, CPU or GPU) or "vllm" (GPU);
    ignored for a URL. ``model``: the served model name at a URL (default: the only model the
    server lists). ``options``: the shared EngineOptions (cache, concurrency, timeouts, ...).
    """

    name = "gsrm"

    def __init__(self, target: str, *, options: EngineOptions | None = None, engine: str | None = None,
                 model: str | None = None, max_new_tokens: int = DEFAULT_MAX_TOKENS,
                 engine_instance: Engine | None = None):
        if not target:
            raise ConfigError("gsrm decomposer: give a checkpoint dir or an http(s) URL (gsrm:<target>)")
        self.target = target
        self.options = options or EngineOptions()
        self.max_new_tokens = int(max_new_tokens)
        self.prompt_version = load_prompt(GSRM_PROMPT).version
        self.notes: list[str] = []
        if is_url(target):
            from rlkd_bench.llm.redact import register_url_secrets

            register_url_secrets(target)
            self.engine_kind = "openai"
            self.options = dataclasses.replace(self.options, base_url=target)
            self.model = model
        else:
            ckpt = Path(target).expanduser()
            if not (ckpt / "config.json").is_file():
                raise ConfigError(
                    f"gsrm checkpoint not found: {target} (expected a model dir with config.json, "
                    "made by `make train-gsrm`, or an http(s) URL of a server)"
                )
            kind = engine or "transformers"
            if kind not in ENGINES:
                raise ConfigError(f"gsrm engine {kind!r}: use one of {', '.join(ENGINES)}")
            self.engine_kind = kind
            self.model = str(ckpt)
            self._check_prompt_version(ckpt)
        self._engine = engine_instance
        # one engine per decomposer: a reward call that timed out may still be making it in its
        # worker thread when the next call asks (the in-process engine serialises its own batches)
        self._engine_lock = threading.Lock()

    def _check_prompt_version(self, ckpt: Path) -> None:
        mf = ckpt / "manifest.json"
        if not mf.is_file():
            return
        try:
            trained = json.loads(mf.read_text(encoding="utf-8")).get("prompt_versions", {}).get(GSRM_PROMPT)
        except (ValueError, OSError):
            return
        if trained and trained != self.prompt_version:
            note = (f"checkpoint trained with GSRM prompt {trained}, sending {self.prompt_version}: "
                    "its replies may drift from the trained format")
            self.notes.append(note)
            log.warning(note)

    @property
    def engine(self) -> Engine:
        """The model-access engine, made on first use (loading a checkpoint takes a while), once."""
        with self._engine_lock:
            if self._engine is None:
                from rlkd_bench.llm import make_engine

                if self.engine_kind == "openai" and not self.model:
                    # the URL may carry user:password@ and a query: sent as every request to it sends them
                    from rlkd_bench.llm.endpoint import only_served_model

                    self.model = only_served_model(
                        self.target, self.options.api_key_env, timeout_s=self.options.timeout_s, what="server",
                        pick_hint="pick the GSRM with --gsrm-model NAME",
                        lookup_hint="pass the served model name with --gsrm-model to skip this lookup")
                self._engine = make_engine(f"{self.engine_kind}:{self.model}", self.options)
            return self._engine

    def requests(self, items: list[dict[str, Any]]) -> list[ChatRequest]:
        """One greedy chat request per trace: the GSRM prompt, then problem and trace."""
        return [
            ChatRequest(
                messages=tuple(gsrm_messages(str(it["problem"]), str(it["reasoning"]))),
                params={"temperature": 0.0, "max_tokens": self.max_new_tokens},
                prompt_version=self.prompt_version,
                custom_id=str(it.get("id", i)),
            )
            for i, it in enumerate(items)
        ]

    def decompose(self, items: list[dict[str, Any]], *,
                  on_result: Callable[[int, DecomposeResult], None] | None = None) -> list[DecomposeResult]:
        """Decompose all ``items`` in one batch; results come back in order (and via ``on_result``)."""
        if not items:
            return []
        results: list[DecomposeResult | None] = [None] * len(items)
        sent: list[int] = []  # one item without a problem or reasoning is its own reject, not the run's end
        for i, it in enumerate(items):
            missing = [k for k in ("problem", "reasoning") if not str(it.get(k) or "").strip()]
            if missing:
                results[i] = DecomposeResult(decomposition=None, error=f"{INVALID_INPUT_PREFIX}: no "
                                             f"{' and no '.join(missing)} to decompose")
                if on_result is not None:
                    on_result(i, results[i])  # type: ignore[arg-type]
            else:
                sent.append(i)

        def relay(j: int, completion: Completion) -> None:
            i = sent[j]
            results[i] = parse_reply(completion)
            if on_result is not None:
                on_result(i, results[i])  # type: ignore[arg-type]

        if sent:
            completions = self.engine.generate(self.requests([items[i] for i in sent]),
                                               progress=self.options.progress, on_result=relay)
            for j, c in enumerate(completions):
                if results[sent[j]] is None:
                    relay(j, c)
        return results  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        from rlkd_bench.llm.redact import safe_url

        return {
            "decomposer": "gsrm",
            "target": safe_url(self.target) if is_url(self.target) else self.target,
            "engine": self.engine_kind,
            "model": self.model,
            "prompt_version": self.prompt_version,
            "params": {"temperature": 0.0, "max_tokens": self.max_new_tokens},
            **({"notes": self.notes} if self.notes else {}),
        }
