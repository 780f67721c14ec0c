"""OpenAI Batch API engine: half price, results within 24 h, resumable across crashes.

The flow: requests not in the cache become jsonl lines (``build_batch_lines``), the file is
uploaded (purpose "batch"), a batch is created, polled with backoff, and its output and error
files are parsed (``parse_batch_output``) and mapped back by ``custom_id``. The input file's hash,
file id and batch id are written to ``<batch_dir>/batch_state.json`` (atomically) as soon as each is
known, so a rerun after a crash polls the same batch instead of paying twice; a batch created
just before a crash (its id not yet saved) is found again by the input hash in its metadata.
A batch is re-attached only while it can still deliver (``can_deliver``): one that failed, or
ended (expired, completed, cancelled) without a single answer, is left behind and the rows it owed
go into a new batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rlkd_bench.errors import ConfigError
from rlkd_bench.llm.base import ChatRequest, Completion, EngineOptions, Usage
from rlkd_bench.llm.cost import PriceTable, TokenCounter, worst_case_cost
from rlkd_bench.llm.endpoint import Endpoint, resolve
from rlkd_bench.llm.openai_engine import PLACEHOLDER_KEY, RETRY_STATUS, cache_namespace_for, request_params
from rlkd_bench.llm.redact import redact, register_url_secrets, safe_url
from rlkd_bench.llm.runner import Budget, CachedEngine, Deliver, Progress
from rlkd_bench.products import write_json

log = logging.getLogger("rlkd_bench.llm")

STATE_FILE = "batch_state.json"
ENDPOINT = "/v1/chat/completions"
MAX_REQUESTS_PER_BATCH = 50_000
MAX_BYTES_PER_BATCH = 190 * 1024 * 1024  # the API takes up to 200 MB per input file
TERMINAL = {"completed", "failed", "expired", "cancelled"}
META_KEY = "rlkd_input_sha256"


def can_deliver(b: dict[str, Any]) -> bool:
    """Whether a batch (as the API describes it) can still give answers: it is still running, or it
    ended with an output file holding at least one answer. A failed batch, or one that ended with
    nothing answered (every request expired or errored), cannot."""
    status = b.get("status")
    if status not in TERMINAL:
        return True
    if status == "failed" or not b.get("output_file_id"):
        return False
    counts = b.get("request_counts") or {}
    completed = counts.get("completed")
    return completed is None or int(completed) > 0


# -- file formats (pure) ------------------------------------------------------------------
def batch_custom_id(cache_key: str) -> str:
    """The custom_id of a request: derived from its cache key, so the same request always maps
    to the same line and identical requests share one."""
    return f"rq-{cache_key[:40]}"


def build_batch_lines(items: Sequence[tuple[str, ChatRequest]], model: str) -> list[dict[str, Any]]:
    """One Batch API input line per (custom_id, request)."""
    lines = []
    seen: set[str] = set()
    for cid, req in items:
        if cid in seen:
            raise ValueError(f"duplicate custom_id {cid!r} in a batch")
        seen.add(cid)
        params, _ = request_params(req.params, model)
        body = {"model": model, "messages": [dict(m) for m in req.messages], **params}
        lines.append({"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": body})
    return lines


def to_jsonl(lines: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(x, ensure_ascii=False, sort_keys=True) + "\n" for x in lines).encode("utf-8")


def split_lines(lines: Sequence[dict[str, Any]], *, max_requests: int = MAX_REQUESTS_PER_BATCH,
                max_bytes: int = MAX_BYTES_PER_BATCH) -> list[list[dict[str, Any]]]:
    """Split into input files within the API's limits (requests and bytes per batch)."""
    chunks: list[list[dict[str, Any]]] = []
    cur: list[dict[str, Any]] = []
    size = 0
    for line in lines:
        n = len(to_jsonl([line]))
        if cur and (len(cur) >= max_requests or size + n > max_bytes):
            chunks.append(cur)
            cur, size = [], 0
        cur.append(line)
        size += n
    if cur:
        chunks.append(cur)
    return chunks


def parse_batch_output(text: str, *, source: str = "batch output") -> dict[str, Completion]:
    """Map custom_id -> Completion from a Batch API output or error file (usage without cost)."""
    out: dict[str, Completion] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}:{lineno}: not JSON ({e.msg})") from None
        cid = obj.get("custom_id")
        if not cid:
            raise ValueError(f"{source}:{lineno}: field 'custom_id' missing")
        out[cid] = _parse_line(obj)
    return out


def _parse_line(obj: dict[str, Any]) -> Completion:
    cid = obj["custom_id"]
    err = obj.get("error")
    resp = obj.get("response") or {}
    status = resp.get("status_code")
    body = resp.get("body") or {}
    if err:
        msg = err.get("message") if isinstance(err, dict) else str(err)
        code = err.get("code") if isinstance(err, dict) else None
        return Completion(text=None, error=f"batch error {code or ''}: {msg}".replace("  ", " "), custom_id=cid)
    if status != 200:
        detail = body.get("error", {}) if isinstance(body, dict) else {}
        msg = detail.get("message") if isinstance(detail, dict) else str(detail)
        retryable = not isinstance(status, int) or status in RETRY_STATUS or status >= 500
        return Completion(text=None, error=f"HTTP {status}: {msg or 'no message'}", custom_id=cid,
                          retryable=retryable, status=status if isinstance(status, int) else None)
    choices = body.get("choices") or []
    if not choices:
        return Completion(text=None, error="batch response without choices", custom_id=cid)
    msg = choices[0].get("message") or {}
    u = body.get("usage") or {}
    usage = Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))
    text = msg.get("content")
    if text is None and msg.get("refusal"):
        return Completion(text=None, usage=usage, error=f"refused: {msg['refusal']}", custom_id=cid)
    return Completion(text=text or "", usage=usage, custom_id=cid, finish_reason=choices[0].get("finish_reason"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- persisted state -----------------------------------------------------------------------
@dataclass
class BatchJob:
    input_sha256: str
    custom_ids: list[str]
    input_file_id: str | None = None
    batch_id: str | None = None
    status: str | None = None
    collected: bool = False
    created: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class BatchState:
    """``batch_state.json``: the jobs of this output dir, rewritten atomically on every change."""

    def __init__(self, batch_dir: str | os.PathLike):
        self.path = Path(batch_dir) / STATE_FILE
        self.jobs: list[BatchJob] = []
        if self.path.exists():
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                self.jobs = [BatchJob(**j) for j in raw.get("jobs", [])]
            except (ValueError, TypeError) as e:
                raise ConfigError(f"{self.path}: unreadable Batch API state ({e}); move it away to start over") from None

    def save(self) -> None:
        write_json(self.path, {"schema": 1, "jobs": [j.to_dict() for j in self.jobs]})

    def find(self, sha: str) -> BatchJob | None:
        for j in reversed(self.jobs):
            if j.input_sha256 == sha and not j.collected:
                return j
        return None

    def collected_ids(self) -> set[str]:
        return {j.batch_id for j in self.jobs if j.collected and j.batch_id}


# -- the API, behind a small seam so resume logic can be tested offline ----------------------
class BatchAPI(Protocol):
    def upload(self, data: bytes, filename: str) -> str: ...
    def create(self, input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]: ...
    def retrieve(self, batch_id: str) -> dict[str, Any]: ...
    def content(self, file_id: str) -> str: ...
    def find(self, metadata_key: str, value: str) -> dict[str, Any] | None: ...


class OpenAIBatchAPI:
    """``BatchAPI`` on the ``openai`` client (files + batches endpoints), with the credential
    ``endpoint.resolve`` chose for the URL (and nothing else) on every call."""

    def __init__(self, ep: Endpoint, timeout_s: float):
        from openai import OpenAI
        from openai._types import omit

        self._client = OpenAI(api_key=ep.api_key or PLACEHOLDER_KEY, base_url=ep.url,
                              default_query=ep.query or None, timeout=timeout_s, max_retries=5)
        self._h: dict[str, Any] = {"Authorization": ep.authorization or omit}

    def __repr__(self) -> str:
        return "OpenAIBatchAPI()"

    def upload(self, data: bytes, filename: str) -> str:
        return self._client.files.create(file=(filename, data, "application/jsonl"), purpose="batch",
                                         extra_headers=self._h).id

    def create(self, input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        b = self._client.batches.create(input_file_id=input_file_id, endpoint=ENDPOINT,
                                        completion_window="24h", metadata=metadata, extra_headers=self._h)
        return b.model_dump()

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        return self._client.batches.retrieve(batch_id, extra_headers=self._h).model_dump()

    def content(self, file_id: str) -> str:
        return self._client.files.content(file_id, extra_headers=self._h).text

    def find(self, metadata_key: str, value: str) -> dict[str, Any] | None:
        # the newest 100; no paging through history
        for b in self._client.batches.list(limit=100, extra_headers=self._h).data:
            if (b.metadata or {}).get(metadata_key) == value and can_deliver(b.model_dump()):
                return b.model_dump()
        return None


class BatchEngine(CachedEngine):
    """``openai:<model>`` with ``--batch-api``. Shares cache entries with the HTTP engine."""

    kind = "openai-batch"

    def __init__(self, model: str, options: EngineOptions | None = None, *, api: BatchAPI | None = None,
                 poll_initial_s: float = 10.0, poll_max_s: float = 120.0):
        super().__init__(model, options)
        if not self.options.batch_dir:
            raise ConfigError("the Batch API needs a directory to keep its job ids in (EngineOptions.batch_dir, "
                              "usually the output dir) so a rerun resumes the same batch")
        register_url_secrets(self.options.base_url)
        self.prices = PriceTable(self.options.prices, base_url=self.options.base_url)
        self.prices.require(model, self.options.max_cost_usd)
        self.budget = Budget(self.options.max_cost_usd)
        self._api = api
        self.poll_initial_s, self.poll_max_s = poll_initial_s, poll_max_s
        self.batch_ids: list[str] = []
        self._reserved: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"BatchEngine(model={self.model!r}, base_url={safe_url(self.options.base_url)!r})"

    def cache_namespace(self) -> str:
        # the same answers as the HTTP engine's for the same server (plain "openai" for OpenAI)
        return cache_namespace_for("openai", self.options, self.model, self.cache is not None)

    @property
    def api(self) -> BatchAPI:
        if self._api is None:
            ep = resolve(self.options.base_url, self.options.api_key_env)
            self._api = OpenAIBatchAPI(ep, self.options.timeout_s)
        return self._api

    def _redact(self, text: str) -> str:
        return redact(text)  # the key and the URL's secrets are registered by endpoint.resolve

    def summary(self) -> dict[str, Any]:
        d = super().summary()
        d["batch_ids"] = list(self.batch_ids)
        d["price_source"] = self.prices.source(self.model)
        return d

    def _answer(self, pending: list[tuple[str, ChatRequest]], deliver: Deliver, bar: Progress) -> None:
        state = BatchState(self.options.batch_dir)  # type: ignore[arg-type]
        by_cid = {batch_custom_id(k): (k, r) for k, r in pending}
        todo = dict(by_cid)

        # 1. jobs from an earlier run that still owe results for some of these requests, as long
        #    as they can still deliver; a dead one is closed and its rows go into a new batch
        jobs: list[BatchJob] = []
        for job in state.jobs:
            if not job.collected and job.batch_id and todo.keys() & set(job.custom_ids):
                b = self.api.retrieve(job.batch_id)
                if not can_deliver(b):
                    self._close_dead(state, job, b)
                    continue
                jobs.append(job)
                for cid in job.custom_ids:
                    todo.pop(cid, None)

        # 2. the budget: what fits at worst case goes in, the rest is not sent
        if todo:
            counter = TokenCounter(self.model)
            fitting: dict[str, tuple[str, ChatRequest]] = {}
            for cid, (k, r) in todo.items():
                worst = worst_case_cost(r, self.model, self.prices, counter, batch=True)
                if self.budget.try_reserve(worst):
                    fitting[cid] = (k, r)
                    self._reserved[cid] = worst
                else:
                    self.stats.budget_stopped = True
                    deliver(k, Completion(text=None, error=self.budget.reason(), custom_id=r.custom_id))
            todo = fitting

        # 3. new jobs (or ones whose file was uploaded / batch created before a crash)
        if todo:
            lines = build_batch_lines([(cid, r) for cid, (_, r) in todo.items()], self.model)
            for chunk in split_lines(lines):
                data = to_jsonl(chunk)
                jobs.append(self._submit(state, data, [x["custom_id"] for x in chunk]))
                self.stats.sent += len(chunk)
                self.stats.attempts += len(chunk)

        # 4. poll, then collect each job as it ends
        self.batch_ids.extend(j.batch_id for j in jobs if j.batch_id)
        self._poll_and_collect(state, jobs, by_cid, deliver, bar)

    def _submit(self, state: BatchState, data: bytes, custom_ids: list[str]) -> BatchJob:
        sha = sha256_bytes(data)
        job = state.find(sha)
        if job is None:
            job = BatchJob(input_sha256=sha, custom_ids=custom_ids, created=time.time())
            state.jobs.append(job)
        if job.batch_id is None:
            found = self.api.find(META_KEY, sha)
            if found is not None and (found["id"] in state.collected_ids() or not can_deliver(found)):
                log.info("Batch API: batch %s of the same requests ended (%s) with nothing more to give; "
                         "starting a new one", found["id"], found.get("status"))
                found = None
            if found is not None:
                job.batch_id, job.status = found["id"], found.get("status")
                job.input_file_id = job.input_file_id or found.get("input_file_id")
                state.save()
                log.info("Batch API: picked up batch %s created before a crash", job.batch_id)
                return job
        if job.input_file_id is None:
            job.input_file_id = self.api.upload(data, f"rlkd-{sha[:12]}.jsonl")
            state.save()
        if job.batch_id is None:
            b = self.api.create(job.input_file_id, {META_KEY: sha})
            job.batch_id, job.status = b["id"], b.get("status")
            state.save()
            log.info("Batch API: created batch %s (%d requests)", job.batch_id, len(custom_ids))
        return job

    def _poll_and_collect(self, state: BatchState, jobs: list[BatchJob], by_cid: dict[str, tuple[str, ChatRequest]],
                          deliver: Deliver, bar: Progress) -> None:
        wait = self.poll_initial_s
        open_jobs = list(jobs)
        while open_jobs:
            still = []
            done_counts = 0
            for job in open_jobs:
                b = self.api.retrieve(job.batch_id)  # type: ignore[arg-type]
                if b.get("status") != job.status:
                    job.status = b.get("status")
                    state.save()
                if job.status in TERMINAL:
                    self._collect(state, job, b, by_cid, deliver)
                else:
                    still.append(job)
                    done_counts += int((b.get("request_counts") or {}).get("completed") or 0)
            open_jobs = still
            if open_jobs:
                bar.bar.set_description_str(f"{self.kind}:{self.model} ({len(open_jobs)} batches running, "
                                            f"{done_counts} done)", refresh=True)
                time.sleep(wait)
                wait = min(self.poll_max_s, wait * 1.5)

    def _close_dead(self, state: BatchState, job: BatchJob, b: dict[str, Any]) -> None:
        job.status = b.get("status")
        job.collected = True
        state.save()
        log.warning("Batch API: batch %s ended '%s' with no answer left to collect; its %d requests go "
                    "into a new batch", job.batch_id, job.status, len(job.custom_ids))

    def _collect(self, state: BatchState, job: BatchJob, b: dict[str, Any],
                 by_cid: dict[str, tuple[str, ChatRequest]], deliver: Deliver) -> None:
        results: dict[str, Completion] = {}
        for fid_key in ("error_file_id", "output_file_id"):  # output wins over error for one id
            fid = b.get(fid_key)
            if fid:
                results.update(parse_batch_output(self.api.content(fid), source=f"{job.batch_id} {fid_key}"))
        ended = f"batch {job.batch_id} ended '{job.status}' without a result for this request"
        errors = b.get("errors") or {}
        if isinstance(errors, dict) and errors.get("data"):
            ended += ": " + "; ".join(str(e.get("message")) for e in errors["data"][:3])
        for cid in job.custom_ids:
            if cid not in by_cid:
                continue  # answered already (cached), or not asked for in this run
            key, req = by_cid[cid]
            c = results.get(cid) or Completion(text=None, error=ended)
            # a reply is billed by its usage, refused or not (an error line carries no usage: 0)
            c.usage = self.prices.priced(self.model, c.usage, batch=True)
            if not c.ok:
                c.error = self._redact(c.error or "")
            c.custom_id = req.custom_id
            self.budget.settle(self._reserved.pop(cid, 0.0), c.usage.cost_usd)
            deliver(key, c)
        job.collected = True
        state.save()
