"""``rlkd-bench eval``: lm-eval's ``simple_evaluate`` on the RLKD tasks, with the task folder set.

The tasks are plain lm-eval YAMLs (``rlkd_bench/tasks/``); this only saves typing and pins the
paper's protocol: the chat template on, the task manager pointed at the package's tasks, the
structure settings passed as task metadata (so the results' ``configs`` record them), and the
results written as ``results.json`` (plus ``samples_<task>.jsonl``) with an ``rlkd`` section
saying which decomposer and matcher scored the structure metrics.

Two fixes to lm-eval's ``local-completions`` backend (``prepare_api_model``): it sends the same
``seed`` with every request, so a server that honours it (vLLM does) returns k identical "samples"
for ``repeats: k`` (sampled requests go out without it here); and with the chat template on and
string requests it posts the chat as a message list to ``/v1/completions`` (the template is
rendered here, with the model's tokenizer, as the ``hf`` backend does).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from rlkd_bench.errors import ConfigError

BACKENDS = ("hf", "vllm", "local-completions")
STRUCTURE_TASKS = ("rlkd_structure", "rlkd_diversity")


def model_args_for(backend: str, model: str, *, base_url: str | None = None, extra: str | None = None,
                   max_gen_toks: int | None = None) -> dict[str, Any]:
    """lm-eval model arguments for a backend: the model path or name, plus ``--model-args``."""
    from lm_eval.utils import simple_parse_args_string

    if backend not in BACKENDS:
        raise ConfigError(f"unknown model backend {backend!r}: use one of {', '.join(BACKENDS)}")
    args: dict[str, Any] = {"pretrained": model}
    if backend == "local-completions":
        if not base_url:
            raise ConfigError("--model-backend local-completions needs --base-url "
                              "(e.g. http://localhost:8000/v1/completions)")
        url = base_url.rstrip("/")
        if not url.endswith("/completions"):
            url += "/completions"
        args = {"model": model, "base_url": url, "tokenizer_backend": "huggingface", "tokenizer": model,
                "tokenized_requests": False, "num_concurrent": 8, "max_retries": 5}
    elif base_url:
        raise ConfigError(f"--base-url is for --model-backend local-completions, not {backend}")
    if max_gen_toks and backend == "local-completions":  # its default cap (256) would cut a task's own
        args["max_gen_toks"] = int(max_gen_toks)
    args.update(simple_parse_args_string(extra or ""))
    return args


def prepare_api_model(lm: Any) -> Any:
    """Make lm-eval's ``local-completions`` model fit sampled reasoning evals (module docstring):

    - the chat template is rendered here with the model's tokenizer, into the same prompt text the
      ``hf`` backend sends (lm-eval would otherwise post the chat as a message list to
      ``/v1/completions``, which a completions server rejects);
    - sampled requests go without lm-eval's fixed seed, so ``repeats: k`` gives k samples;
    - a lone prompt goes as a string (the API takes both; ``transformers serve`` only a string).
    """
    create = lm._create_payload
    if getattr(lm, "tokenizer_backend", None) == "huggingface" and getattr(lm, "tokenizer", None) is not None:
        tokenizer = lm.tokenizer

        def chat(chat_history, add_generation_prompt=True):
            return tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                 add_generation_prompt=add_generation_prompt,
                                                 continue_final_message=not add_generation_prompt)

        lm.apply_chat_template = chat

    def payload(messages, generate=False, gen_kwargs=None, seed=1234, **kw):
        sampled = bool(gen_kwargs) and float(gen_kwargs.get("temperature", 0) or 0) > 0
        out = create(messages, generate=generate, gen_kwargs=gen_kwargs, seed=seed, **kw)
        if generate and sampled:
            out.pop("seed", None)
        prompt = out.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            out["prompt"] = prompt[0]
        return out

    lm._create_payload = payload
    return lm


def structure_metadata(decomposer: str | None, matcher: str | None, eval_data: str | None,
                       prompt: str | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Task metadata from the options, with the environment and defaults filled in, so what the
    results record is what was used."""
    from rlkd_bench.tasks.evaldata import scorer_settings, setting, stamp_settings

    given = {k: v for k, v in {"decomposer": decomposer, "matcher": matcher, "eval_data": eval_data,
                               "prompt": prompt}.items() if v}
    meta = {**(extra or {}), **given}
    settings = scorer_settings(meta)
    meta.update(settings)
    stamp_settings(settings)  # registers any endpoint credentials, so the written results are scrubbed
    if meta.get("prompt") or os.environ.get("RLKD_PROMPT"):  # else each task's own default
        meta["prompt"] = str(setting(meta, "prompt"))
    return meta


def load_tasks(task_names: list[str], metadata: dict[str, Any], *, repeats: int | None = None):
    """(task manager, top-level task/group objects), built from the package's task folder; with
    ``repeats`` every sampled task draws that many samples per problem."""
    from lm_eval.api.group import Group
    from lm_eval.tasks import TaskManager

    from rlkd_bench.tasks import tasks_path

    # lm-eval's own ~200 task folders take 10-20 s to index: only when a name is not one of ours
    tm = TaskManager(include_path=str(tasks_path()), include_defaults=False, metadata=metadata)
    if any(not tm.match_tasks([t]) for t in task_names):
        tm = TaskManager(include_path=str(tasks_path()), metadata=metadata)
    unknown = [t for t in task_names if not tm.match_tasks([t])]
    if unknown:
        raise ConfigError(f"unknown task(s) {', '.join(unknown)}; RLKD tasks: rlkd_structure, rlkd_diversity, "
                          "rlkd_reasoning (rlkd_aime24, rlkd_math500, rlkd_gpqa_diamond), or any lm-eval task")
    loaded = tm.load(task_names)
    groups: dict[str, Group] = loaded.get("groups", {})
    in_group = {t.task_name for g in groups.values() for t in g.get_all_tasks()}
    sub_groups = {s.name for g in groups.values() for s in g.get_all_groups() if s is not g}
    top = [g for name, g in groups.items() if name not in sub_groups]
    top += [t for name, t in loaded["tasks"].items() if name not in in_group]
    if repeats:
        for t in loaded["tasks"].values():
            if t.config.repeats > 1:  # the sampled tasks; rlkd_structure scores one completion
                t.config.repeats = int(repeats)
    return tm, top, loaded


def check_context(tasks: dict[str, Any], max_length: int, max_gen_toks: int | None) -> None:
    """A task asking for more new tokens than the model's context holds stops lm-eval's hf backend
    with a bare assertion; say it here, with the option that fixes it."""
    if not max_length:
        return
    for name, task in sorted(tasks.items()):
        want = max_gen_toks or (task.config.generation_kwargs or {}).get("max_gen_toks")
        if want and int(want) >= max_length:
            raise ConfigError(f"{name} asks for up to {want} new tokens but the model's context is {max_length} "
                              f"tokens: pass --max-gen-toks (e.g. {max_length // 2})")


def scorer_description(metadata: dict[str, Any]) -> dict[str, Any]:
    from rlkd_bench.reward.scorer import StructureScorer

    return StructureScorer(metadata["decomposer"], metadata["matcher"], timeout_s=metadata["timeout_s"],
                           gsrm_engine=metadata.get("gsrm_engine")).describe()


def run_eval(model: str, tasks: list[str], *, backend: str = "hf", model_args: str | None = None,
             base_url: str | None = None, limit: float | None = None, output_path: str | None = None,
             decomposer: str | None = None, matcher: str | None = None, eval_data: str | None = None,
             prompt: str | None = None, metadata: dict[str, Any] | None = None, repeats: int | None = None,
             max_gen_toks: int | None = None, batch_size: int | str = 1, device: str | None = None,
             chat_template: bool = True, log_samples: bool = True, seed: int = 0) -> dict[str, Any]:
    """Evaluate ``model`` on ``tasks``; returns lm-eval's results dict (with an ``rlkd`` section)."""
    import lm_eval
    from lm_eval.api.registry import get_model

    if not tasks:
        raise ConfigError("--tasks is empty: name at least one task (e.g. rlkd_structure)")
    meta = structure_metadata(decomposer, matcher, eval_data, prompt, metadata)
    args = model_args_for(backend, model, base_url=base_url, extra=model_args, max_gen_toks=max_gen_toks)
    t0 = time.monotonic()
    tm, top, loaded = load_tasks(tasks, meta, repeats=repeats)
    if backend == "hf" and not device:  # lm-eval's hf backend assumes CUDA
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    lm = get_model(backend).create_from_arg_obj(args, {"batch_size": batch_size, "device": device})
    if backend == "local-completions":
        prepare_api_model(lm)
    else:
        check_context(loaded["tasks"], int(getattr(lm, "max_length", 0) or 0), max_gen_toks)
    gen_cfg = getattr(getattr(lm, "model", None), "generation_config", None)
    if backend == "hf" and gen_cfg is not None and getattr(gen_cfg, "max_new_tokens", None):
        # lm-eval's hf backend caps generation with max_length (context + max_gen_toks); a checkpoint
        # whose generation_config sets max_new_tokens would silently override the task's budget
        gen_cfg.max_new_tokens = None
    gen_kwargs = {"max_gen_toks": int(max_gen_toks)} if max_gen_toks else None
    results = lm_eval.simple_evaluate(
        model=lm, tasks=top, task_manager=tm, limit=limit, log_samples=log_samples,
        apply_chat_template=chat_template, gen_kwargs=gen_kwargs, random_seed=seed, numpy_random_seed=seed,
        torch_random_seed=seed, fewshot_random_seed=seed, bootstrap_iters=1000)
    if results is None:  # not rank 0 of a distributed run
        return {}
    uses_structure = any(name in STRUCTURE_TASKS for name in loaded["tasks"])
    results["config"]["model"] = model
    results["config"]["model_backend"] = backend
    results["rlkd"] = {
        "tasks": sorted(loaded["tasks"]), "metadata": meta, "chat_template": chat_template,
        "repeats": {n: t.config.repeats for n, t in loaded["tasks"].items()},
        "scorer": scorer_description(meta) if uses_structure else None,
        "wall_s": round(time.monotonic() - t0, 3),
    }
    if output_path:
        write_results(results, Path(output_path))
    return results


def write_results(results: dict[str, Any], out: Path) -> list[Path]:
    """``results.json`` and one ``samples_<task>.jsonl`` per task, each written atomically."""
    from lm_eval.utils import handle_non_serializable

    from rlkd_bench.llm.redact import scrub
    from rlkd_bench.products import write_text

    def dumps(obj: Any, **kw: Any) -> str:  # scrub: no endpoint credentials in the files
        return json.dumps(scrub(json.loads(json.dumps(obj, default=handle_non_serializable))),
                          ensure_ascii=False, **kw)

    samples = results.pop("samples", None) or {}
    written = [out / "results.json"]
    write_text(written[0], dumps(results, indent=2) + "\n")
    for task, rows in samples.items():
        path = out / f"samples_{task}.jsonl"
        write_text(path, "".join(dumps(r) + "\n" for r in rows))
        written.append(path)
    results["samples"] = samples
    return written


def summary_rows(results: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers per task for the end-of-run table."""
    rows: dict[str, Any] = {}
    for task, metrics in sorted(results.get("results", {}).items()):
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and "_stderr" not in key and key != "sample_len":
                rows[f"{task} {key.split(',')[0]}"] = float(value)
    return rows
