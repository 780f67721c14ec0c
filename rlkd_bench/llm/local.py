"""In-process engines: transformers (CPU or GPU, the offline default) and vLLM (GPU, optional extra).

Both render each conversation with the model's chat template, generate in batches, report token
counts as usage (cost 0: the hardware is yours) and go through the same cache as the HTTP
engines, under a key that includes a hash of the checkpoint's files.

One engine answers one batch at a time (a lock around loading and generating): a caller that gave
up waiting (the structure reward's timeout) leaves its batch running in a worker thread, and the
next call must queue behind it, never load the model a second time or generate beside it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from rlkd_bench.errors import ConfigError
from rlkd_bench.llm.base import ChatRequest, Completion, EngineOptions, Usage
from rlkd_bench.llm.runner import CachedEngine, Deliver, Progress

log = logging.getLogger("rlkd_bench.llm")

DEFAULT_MAX_NEW_TOKENS = 512
VLLM_INSTALL_HINT = "pip install 'rlkd-bench[vllm]'"


def _sampling_key(params: dict[str, Any]) -> tuple:
    """Requests that can share one ``generate`` call have equal keys."""
    stop = params.get("stop")
    stop = tuple(stop) if isinstance(stop, (list, tuple)) else ((stop,) if stop else ())
    return (params.get("temperature"), params.get("top_p"),
            params.get("max_tokens", params.get("max_new_tokens", params.get("max_completion_tokens"))),
            stop, params.get("seed"))


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """OpenAI semantics: the reply ends before the first stop string, which is not returned."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class TransformersEngine(CachedEngine):
    """``transformers:<path-or-hub-id>``: AutoModelForCausalLM, left-padded batched ``generate``.

    ``temperature`` 0 (or unset with a greedy generation config) decodes greedily; ``seed`` seeds
    torch before each batch (requests with different seeds never share a batch).
    """

    kind = "transformers"

    def __init__(self, model: str, options: EngineOptions | None = None):
        super().__init__(model, options)
        if self.options.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.options.batch_size}")
        self._model: Any = None
        self._tok: Any = None
        self._lock = threading.RLock()  # load + generate, one batch at a time (module docstring)

    def load(self) -> None:
        with self._lock:
            self._load()

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = self.options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA GPU")
        try:
            tok = AutoTokenizer.from_pretrained(self.model)
            dtype = "auto" if device != "cpu" else torch.float32
            model = AutoModelForCausalLM.from_pretrained(self.model, dtype=dtype)
        except OSError as e:
            raise ConfigError(f"transformers:{self.model}: cannot load the model ({e})") from None
        if not getattr(tok, "chat_template", None):
            raise ConfigError(f"transformers:{self.model}: the tokenizer has no chat template; "
                              "chat requests need one (an instruct or chat model)")
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        self._tok, self._model = tok, model.to(device).eval()

    def _eos_ids(self) -> set[int]:
        ids = self._model.generation_config.eos_token_id
        ids = ids if isinstance(ids, list) else [ids]
        ids = {i for i in ids if i is not None}
        if self._tok.eos_token_id is not None:
            ids.add(self._tok.eos_token_id)
        return ids

    def _answer(self, pending: list[tuple[str, ChatRequest]], deliver: Deliver, bar: Progress) -> None:
        with self._lock:
            self._answer_locked(pending, deliver)

    def _answer_locked(self, pending: list[tuple[str, ChatRequest]], deliver: Deliver) -> None:
        self._load()
        groups: dict[tuple, list[tuple[str, ChatRequest, str]]] = {}
        for key, req in pending:
            prompt = self._tok.apply_chat_template([dict(m) for m in req.messages], add_generation_prompt=True,
                                                   tokenize=False)
            groups.setdefault(_sampling_key(req.params), []).append((key, req, prompt))
        bs = self.options.batch_size
        for skey, items in groups.items():
            items.sort(key=lambda x: len(x[2]))  # similar lengths together: less padding
            for start in range(0, len(items), bs):
                chunk = items[start:start + bs]
                self.stats.sent += len(chunk)
                self.stats.attempts += 1
                try:
                    outs = self._generate([p for _, _, p in chunk], skey)
                except RuntimeError as e:  # e.g. out of memory: fail these, keep going
                    msg = f"generate failed: {' '.join(str(e).split())[:300]}"
                    outs = [Completion(text=None, error=msg) for _ in chunk]
                for (key, req, _), c in zip(chunk, outs, strict=True):
                    c.custom_id = req.custom_id
                    deliver(key, c)

    def _generate(self, prompts: list[str], skey: tuple) -> list[Completion]:
        import torch

        temperature, top_p, max_tokens, stops, seed = skey
        enc = self._tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self._model.device)
        gen: dict[str, Any] = {"max_new_tokens": int(max_tokens) if max_tokens else DEFAULT_MAX_NEW_TOKENS,
                               "pad_token_id": self._tok.pad_token_id}
        if temperature is not None:
            if float(temperature) == 0.0:
                gen.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            else:
                gen.update(do_sample=True, temperature=float(temperature))
        if top_p is not None and gen.get("do_sample", True):
            gen["top_p"] = float(top_p)
        if stops:
            gen.update(stop_strings=list(stops), tokenizer=self._tok)
        if seed is not None:
            torch.manual_seed(int(seed))
        with torch.inference_mode():
            out = self._model.generate(**enc, **gen)
        n_in = enc["input_ids"].shape[1]
        eos = self._eos_ids()
        results = []
        for row in range(out.shape[0]):
            ids = out[row, n_in:].tolist()
            end = next((i + 1 for i, t in enumerate(ids) if t in eos), None)
            ids = ids[:end] if end else ids
            text = self._tok.decode(ids, skip_special_tokens=True)
            text, hit_stop = _cut_at_stop(text, stops)
            finish = "stop" if (end or hit_stop) else "length"
            usage = Usage(int(enc["attention_mask"][row].sum()), len(ids))
            results.append(Completion(text=text, usage=usage, finish_reason=finish))
        return results


class VLLMEngine(CachedEngine):
    """``vllm:<path-or-hub-id>``: ``vllm.LLM`` in this process (a CUDA GPU and the vllm extra).

    ``llm_kwargs`` go to ``vllm.LLM`` (tensor_parallel_size, gpu_memory_utilization, ...).
    """

    kind = "vllm"

    def __init__(self, model: str, options: EngineOptions | None = None, **llm_kwargs: Any):
        super().__init__(model, options)
        require_vllm()
        self.llm_kwargs = llm_kwargs
        self._llm: Any = None
        self._lock = threading.RLock()  # load + generate, one batch at a time (module docstring)

    def _answer(self, pending: list[tuple[str, ChatRequest]], deliver: Deliver, bar: Progress) -> None:
        with self._lock:
            self._answer_locked(pending, deliver)

    def _answer_locked(self, pending: list[tuple[str, ChatRequest]], deliver: Deliver) -> None:
        from vllm import LLM, SamplingParams

        if self._llm is None:
            self._llm = LLM(model=self.model, **self.llm_kwargs)
        chunk_size = max(self.options.batch_size, 256)  # vLLM batches inside; chunks only pace delivery
        for start in range(0, len(pending), chunk_size):
            chunk = pending[start:start + chunk_size]
            sps = []
            for _, req in chunk:
                p = req.params
                sp: dict[str, Any] = {"max_tokens": int(p.get("max_tokens") or DEFAULT_MAX_NEW_TOKENS)}
                for k in ("temperature", "top_p", "seed", "stop"):
                    if p.get(k) is not None:
                        sp[k] = p[k]
                sps.append(SamplingParams(**sp))
            self.stats.sent += len(chunk)
            self.stats.attempts += 1
            outs = self._llm.chat([[dict(m) for m in req.messages] for _, req in chunk], sampling_params=sps,
                                  use_tqdm=False)
            for (key, req), o in zip(chunk, outs, strict=True):
                first = o.outputs[0]
                usage = Usage(len(o.prompt_token_ids or []), len(first.token_ids))
                finish = "length" if first.finish_reason == "length" else "stop"
                deliver(key, Completion(text=first.text, usage=usage, custom_id=req.custom_id, finish_reason=finish))


def require_vllm() -> None:
    """Raise a ConfigError that says what to do when vLLM cannot run here."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise ConfigError(f"the vllm engine needs the vllm package: {VLLM_INSTALL_HINT} "
                          "(on a CUDA machine); or use transformers:<model>, or `vllm serve` with "
                          "openai:<model> --base-url") from None
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("the vllm engine needs a CUDA GPU and torch sees none; use transformers:<model> "
                          "on this machine")
