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

from rlkd_bench.errors import ConfigError, RlkdError
from rlkd_bench.llm.endpoint import Endpoint, resolve
from rlkd_bench.products import runtime_info

BACKENDS = ("hf", "vllm", "local-completions")
STRUCTURE_TASKS = ("rlkd_structure", "rlkd_diversity")


def completions_url(ep: Endpoint) -> str:
    """The URL lm-eval posts to: the endpoint's path with ``/completions`` (once), then its query;
    no ``user:password@`` (that goes as the Authorization header)."""
    from urllib.parse import urlencode

    url = ep.url.rstrip("/")
    if not url.endswith("/completions"):
        url += "/completions"
    return url + (f"?{urlencode(ep.query)}" if ep.query else "")


def model_args_for(backend: str, model: str, *, base_url: str | None = None, extra: str | None = None,
                   max_gen_toks: int | None = None, api_key_env: str | None = None) -> dict[str, Any]:
    """lm-eval model arguments for a backend: the model path or name, plus ``--model-args``.

    For ``local-completions`` the URL and the key follow our engines' rule (``llm/endpoint.py``);
    ConfigError when a key would go over plain http to a host that is not loopback."""
    from lm_eval.utils import simple_parse_args_string

    if backend not in BACKENDS:
        raise ConfigError(f"unknown model backend {backend!r}: use one of {', '.join(BACKENDS)}")
    args: dict[str, Any] = {"pretrained": model}
    if backend == "local-completions":
        if not base_url:
            raise ConfigError("--model-backend local-completions needs --base-url "
                              "(e.g. http://localhost:8000/v1/completions)")
        url = completions_url(resolve(base_url, api_key_env))
        args = {"model": model, "base_url": url, "tokenizer_backend": "huggingface", "tokenizer": model,
                "tokenized_requests": False, "num_concurrent": 8, "max_retries": 5}
    elif base_url:
        raise ConfigError(f"--base-url is for --model-backend local-completions, not {backend}")
    elif api_key_env:
        raise ConfigError(f"--api-key-env is for --model-backend local-completions, not {backend}")
    if max_gen_toks and backend == "local-completions":  # its default cap (256) would cut a task's own
        args["max_gen_toks"] = int(max_gen_toks)
    args.update(simple_parse_args_string(extra or ""))
    return args


class ServerRefused(BaseException):  # noqa: N818 - a signal, not an error lm-eval should see
    """A permanent HTTP error (400, 401, 403, 404, 422 ...) from the completions server.

    A BaseException on purpose: lm-eval retries every ``Exception`` (five times, with backoff),
    which cannot help here; this one passes its retry loop at once and ``run_eval`` turns it into
    an RlkdError with the redacted URL."""


RETRY_STATUS = frozenset({408, 409, 429})


def prepare_api_model(lm: Any, endpoint: Endpoint | None = None) -> Any:
    """Make lm-eval's ``local-completions`` model fit sampled reasoning evals (module docstring):

    - the chat template is rendered here with the model's tokenizer, into the same prompt text the
      ``hf`` backend sends (lm-eval would otherwise post the chat as a message list to
      ``/v1/completions``, which a completions server rejects);
    - sampled requests go without lm-eval's fixed seed, so ``repeats: k`` gives k samples;
    - a lone prompt goes as a string (the API takes both; ``transformers serve`` only a string);
    - the Authorization header is the endpoint's (``llm/endpoint.py``: a key only where the user
      meant it to go, Basic auth from the URL's ``user:password@``), never lm-eval's own
      ``Bearer $OPENAI_API_KEY``; lm-eval's log lines are redacted (its error lines quote the
      request headers), and a permanent HTTP error stops the run at once (``ServerRefused``).
    """
    from rlkd_bench.llm.redact import redact_logs

    ep = endpoint or resolve(getattr(lm, "base_url", None), None)
    lm.header = ep.headers()  # lm-eval's ``header`` is a cached_property: the instance value wins
    redact_logs("lm_eval.models.api_models", "lm_eval.models.openai_completions")
    where = completions_url(ep)
    call, acall = lm.model_call, lm.amodel_call

    def refused(status: int | None, reason: str) -> ServerRefused | None:
        if status is None or status in RETRY_STATUS or status >= 500:
            return None
        from rlkd_bench.llm.redact import redact_text

        hint = ep.no_key_hint() if status in (401, 403) else ""
        return ServerRefused(redact_text(f"the completions server at {where} answered HTTP {status} {reason}"
                                         f"{hint}; a permanent error, not retried"))

    async def amodel_call(*args: Any, **kwargs: Any) -> Any:
        import aiohttp

        try:
            return await acall(*args, **kwargs)
        except aiohttp.ClientResponseError as e:
            stop = refused(e.status, str(e.message or ""))
            if stop is not None:
                raise stop from None
            raise

    def model_call(*args: Any, **kwargs: Any) -> Any:
        import requests

        try:
            return call(*args, **kwargs)
        except requests.HTTPError as e:
            resp = e.response
            stop = refused(resp.status_code if resp is not None else None, resp.reason if resp is not None else "")
            if stop is not None:
                raise stop from None
            raise

    lm.model_call, lm.amodel_call = model_call, amodel_call
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


def is_transport_error(e: BaseException) -> bool:
    """A failure of the HTTP exchange with a completions server (after lm-eval's retries)."""
    import asyncio

    import aiohttp
    import requests

    return isinstance(e, aiohttp.ClientError | requests.RequestException | asyncio.TimeoutError | TimeoutError)


def transport_message(e: BaseException, url: str) -> str:
    """One redacted line for a failed exchange: aiohttp's and requests' own texts quote the URL
    with its query, and their reprs the request headers (the key)."""
    import aiohttp

    from rlkd_bench.llm.redact import redact_text, safe_url

    where = safe_url(url)
    if isinstance(e, aiohttp.ClientResponseError):
        what = f"answered HTTP {e.status} {e.message or ''}".rstrip()
    else:
        detail = " ".join(str(e).split())[:300]
        what = f"could not be reached ({type(e).__name__}{': ' + detail if detail else ''}); is the server up?"
    return redact_text(f"the completions server at {where} {what}")


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
    for t in loaded["tasks"].values():  # rlkd_diversity needs 2 samples: refuse before the model loads
        if hasattr(t, "check_repeats"):
            t.check_repeats()
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
                           gsrm_engine=metadata.get("gsrm_engine"), normalize=True).describe()  # as tasks/utils.py


def run_eval(model: str, tasks: list[str], *, backend: str = "hf", model_args: str | None = None,
             base_url: str | None = None, limit: float | None = None, output_path: str | None = None,
             decomposer: str | None = None, matcher: str | None = None, eval_data: str | None = None,
             prompt: str | None = None, metadata: dict[str, Any] | None = None, repeats: int | None = None,
             max_gen_toks: int | None = None, batch_size: int | str = 1, device: str | None = None,
             chat_template: bool = True, log_samples: bool = True, seed: int = 0,
             api_key_env: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Evaluate ``model`` on ``tasks``; returns lm-eval's results dict (with an ``rlkd`` section).
    ``output_path`` is checked first (``check_output``): ``overwrite`` replaces another model's eval."""
    import lm_eval
    from lm_eval.api.registry import get_model

    if not tasks:
        raise ConfigError("--tasks is empty: name at least one task (e.g. rlkd_structure)")
    stale = check_output(Path(output_path), model, overwrite=overwrite) if output_path else []
    meta = structure_metadata(decomposer, matcher, eval_data, prompt, metadata)
    args = model_args_for(backend, model, base_url=base_url, extra=model_args, max_gen_toks=max_gen_toks,
                          api_key_env=api_key_env)
    t0 = time.monotonic()
    tm, top, loaded = load_tasks(tasks, meta, repeats=repeats)
    if backend == "hf" and not device:  # lm-eval's hf backend assumes CUDA
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    lm = get_model(backend).create_from_arg_obj(args, {"batch_size": batch_size, "device": device})
    if backend == "local-completions":
        prepare_api_model(lm, resolve(base_url, api_key_env))
    else:
        check_context(loaded["tasks"], int(getattr(lm, "max_length", 0) or 0), max_gen_toks)
    gen_cfg = getattr(getattr(lm, "model", None), "generation_config", None)
    if backend == "hf" and gen_cfg is not None and getattr(gen_cfg, "max_new_tokens", None):
        # lm-eval's hf backend caps generation with max_length (context + max_gen_toks); a checkpoint
        # whose generation_config sets max_new_tokens would silently override the task's budget
        gen_cfg.max_new_tokens = None
    gen_kwargs = {"max_gen_toks": int(max_gen_toks)} if max_gen_toks else None
    try:
        results = lm_eval.simple_evaluate(
            model=lm, tasks=top, task_manager=tm, limit=limit, log_samples=log_samples,
            apply_chat_template=chat_template, gen_kwargs=gen_kwargs, random_seed=seed, numpy_random_seed=seed,
            torch_random_seed=seed, fewshot_random_seed=seed, bootstrap_iters=1000)
    except ServerRefused as e:
        raise RlkdError(str(e)) from None
    except Exception as e:
        if backend != "local-completions" or not is_transport_error(e):
            raise
        raise RlkdError(transport_message(e, completions_url(resolve(base_url, api_key_env)))) from None
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
        "runtime": runtime_info(seed=seed),
    }
    if output_path:
        write_results(results, Path(output_path), stale=stale)
    return results


RESULTS = "results.json"


def _same_model(a: Any, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(str(a)).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def check_output(out: Path, model: str, *, overwrite: bool = False) -> list[Path]:
    """Before the eval: may ``--output-path`` take this model's results? Returns the files an
    earlier ``rlkd-bench eval`` wrote there, which the new results replace (``write_results``
    removes those it does not write again). ConfigError (exit 2), naming the folder, for: a file;
    a product or model dir; results or samples files this command did not write (``report --eval``
    would read them as this model's); another model's eval, unless ``overwrite``."""
    from rlkd_bench.products import MANIFEST

    flag = "--output-path"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{flag} {out}: is a file, not a directory")
    if not out.is_dir():
        return []
    if (out / MANIFEST).is_file() or (out / "config.json").is_file():
        raise ConfigError(f"{flag} {out} is a product or model dir ({MANIFEST if (out / MANIFEST).is_file() else 'config.json'}): "
                          f"the eval files would mix into it; use another {flag}")
    found = sorted(p.name for p in out.glob("samples_*.jsonl"))
    if (out / RESULTS).is_file():
        found.insert(0, RESULTS)
    if not found:
        return []
    try:
        earlier = json.loads((out / RESULTS).read_text(encoding="utf-8")) if (out / RESULTS).is_file() else {}
    except (OSError, ValueError):
        earlier = {}
    rlkd = earlier.get("rlkd") if isinstance(earlier, dict) else None
    ours: set[str] = set()
    if isinstance(rlkd, dict):
        listed = rlkd.get("files")
        ours = {str(f) for f in listed} if isinstance(listed, list) else {
            RESULTS, *(f"samples_{t}.jsonl" for t in rlkd.get("tasks") or [])}  # written before files were listed
    foreign = [n for n in found if n not in ours]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(f"{flag} {out} holds eval files that `rlkd-bench eval` did not write there ({shown}): "
                          f"`rlkd-bench report --eval` would read them as this model's; move them or use another "
                          f"{flag}")
    other = (earlier.get("config") or {}).get("model")
    if not _same_model(other, model) and not overwrite:
        raise ConfigError(f"{flag} {out} holds the eval of another model ({other}); use another {flag}, or "
                          "--overwrite to replace that eval (only the files it wrote are removed)")
    return [out / n for n in sorted(ours) if (out / n).exists()]


def write_results(results: dict[str, Any], out: Path, *, stale: list[Path] | tuple[Path, ...] = ()) -> list[Path]:
    """``results.json`` and one ``samples_<task>.jsonl`` per task, each written atomically;
    ``results.json`` (last) lists them as ``rlkd.files``, and the ``stale`` files of an earlier
    eval that are not written again are removed (nothing else in the folder is touched)."""
    from lm_eval.utils import handle_non_serializable

    from rlkd_bench.llm.redact import scrub
    from rlkd_bench.products import write_text

    def dumps(obj: Any, **kw: Any) -> str:  # scrub: no endpoint credentials in the files
        return json.dumps(scrub(json.loads(json.dumps(obj, default=handle_non_serializable))),
                          ensure_ascii=False, **kw)

    samples = results.pop("samples", None) or {}
    written = [out / RESULTS, *(out / f"samples_{task}.jsonl" for task in samples)]
    if isinstance(results.get("rlkd"), dict):
        results["rlkd"]["files"] = [p.name for p in written]
    for path, rows in zip(written[1:], samples.values(), strict=True):
        write_text(path, "".join(dumps(r) + "\n" for r in rows))
    write_text(written[0], dumps(results, indent=2) + "\n")
    for path in stale:
        if path not in written:
            path.unlink(missing_ok=True)
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
