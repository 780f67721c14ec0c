"""OpenAI Batch API engine, offline.

There is no local Batch API server (neither `transformers serve` nor `vllm serve` implements
/v1/files + /v1/batches), and tests have no network. So the file formats are tested as pure
functions against the documented line shapes, and the resume logic runs the real engine against
``MemoryBatchAPI``, an in-memory stand-in for the five calls the engine makes (upload, create,
retrieve, content, find); it is a test double, not a server, and says so.
"""

from __future__ import annotations

import json

import pytest

from rlkd_bench.llm import EngineOptions
from rlkd_bench.llm.base import ChatRequest
from rlkd_bench.llm.batch import (
    ENDPOINT,
    META_KEY,
    STATE_FILE,
    BatchEngine,
    batch_custom_id,
    build_batch_lines,
    parse_batch_output,
    split_lines,
    to_jsonl,
)
from rlkd_bench.llm.cache import ResponseCache

MODEL = "gpt-4o-mini"


def reqs(n: int, tag: str = "b") -> list[ChatRequest]:
    return [ChatRequest(messages=({"role": "system", "content": "be brief"}, {"role": "user", "content": f"{tag} {i}"}),
                        params={"max_tokens": 16, "temperature": 0, "n": 1}, custom_id=f"{tag}{i}")
            for i in range(n)]


class Crash(Exception):
    """Stands for SIGKILL at a chosen point."""


class MemoryBatchAPI:
    """In-memory files + batches (see the module docstring). ``crash_on`` names a call that raises
    ``Crash`` once, after doing its work (as a kill right after the server answered would)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.calls: list[str] = []
        self.crash_on: str | None = None

    def _maybe_crash(self, name: str) -> None:
        if self.crash_on == name:
            self.crash_on = None
            raise Crash(name)

    def upload(self, data: bytes, filename: str) -> str:
        self.calls.append("upload")
        fid = f"file-{len(self.files)}"
        self.files[fid] = data
        self._maybe_crash("upload")
        return fid

    def create(self, input_file_id: str, metadata: dict[str, str]) -> dict:
        self.calls.append("create")
        bid = f"batch_{len(self.batches)}"
        self.batches[bid] = {"id": bid, "status": "validating", "input_file_id": input_file_id,
                             "metadata": metadata, "request_counts": {"total": 0, "completed": 0, "failed": 0}}
        self._maybe_crash("create")
        return dict(self.batches[bid])

    def retrieve(self, batch_id: str) -> dict:
        self.calls.append("retrieve")
        self._maybe_crash("retrieve")
        return dict(self.batches[batch_id])

    def content(self, file_id: str) -> str:
        self.calls.append("content")
        return self.files[file_id].decode()

    def find(self, metadata_key: str, value: str) -> dict | None:
        self.calls.append("find")
        for b in self.batches.values():
            if b["metadata"].get(metadata_key) == value:
                return dict(b)
        return None

    # -- what the provider does meanwhile ---------------------------------------------------
    def input_lines(self, batch_id: str) -> list[dict]:
        return [json.loads(x) for x in self.files[self.batches[batch_id]["input_file_id"]].decode().splitlines()]

    def finish(self, batch_id: str, *, status: str = "completed", answer_only: int | None = None) -> None:
        """Answer the batch's lines (the first ``answer_only`` of them; the rest expire)."""
        lines = self.input_lines(batch_id)
        out, err = [], []
        for k, line in enumerate(lines):
            if answer_only is not None and k >= answer_only:
                err.append({"id": f"req_{k}", "custom_id": line["custom_id"], "response": None,
                            "error": {"code": "batch_expired", "message": "This request could not be executed."}})
                continue
            user = line["body"]["messages"][-1]["content"]
            out.append({"id": f"req_{k}", "custom_id": line["custom_id"], "error": None, "response": {
                "status_code": 200, "request_id": f"r{k}", "body": {
                    "id": f"chatcmpl-{k}", "object": "chat.completion", "model": line["body"]["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": f"answer to {user}"}}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}}}})
        b = self.batches[batch_id]
        b["status"] = status
        b["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}
        for name, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                fid = f"file-{len(self.files)}"
                self.files[fid] = to_jsonl(rows)
                b[name] = fid


def engine(tmp_path, api, **kw) -> BatchEngine:
    o = EngineOptions(batch_api=True, batch_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"),
                      progress=False, **kw)
    return BatchEngine(MODEL, o, api=api, poll_initial_s=0.001, poll_max_s=0.002)


# -- file formats ------------------------------------------------------------------------------
def test_build_batch_lines_format():
    rs = reqs(3)
    items = [(batch_custom_id(r.cache_key("openai:" + MODEL)), r) for r in rs]
    lines = build_batch_lines(items, MODEL)
    assert [x["custom_id"] for x in lines] == [cid for cid, _ in items]
    for line, r in zip(lines, rs, strict=True):
        assert set(line) == {"custom_id", "method", "url", "body"}
        assert line["method"] == "POST" and line["url"] == ENDPOINT == "/v1/chat/completions"
        assert line["body"] == {"model": MODEL, "messages": [dict(m) for m in r.messages],
                                "max_tokens": 16, "temperature": 0}  # "n" is not sent
    data = to_jsonl(lines)
    assert [json.loads(x) for x in data.decode().splitlines()] == lines
    assert batch_custom_id("ab" * 32) == batch_custom_id("ab" * 32) != batch_custom_id("cd" * 32)
    with pytest.raises(ValueError, match="duplicate custom_id"):
        build_batch_lines([items[0], items[0]], MODEL)


def test_split_lines_respects_request_and_byte_limits():
    lines = build_batch_lines([(f"c{i}", r) for i, r in enumerate(reqs(10))], MODEL)
    assert [len(c) for c in split_lines(lines, max_requests=4)] == [4, 4, 2]
    one = len(to_jsonl(lines[:1]))
    assert all(len(to_jsonl(c)) <= 3 * one + 3 for c in split_lines(lines, max_bytes=3 * one + 3))
    assert sum(len(c) for c in split_lines(lines, max_bytes=1)) == 10  # one per file at worst


def test_parse_batch_output_success_http_error_and_expired():
    text = "\n".join(json.dumps(x) for x in [
        {"id": "1", "custom_id": "ok", "error": None, "response": {"status_code": 200, "body": {
            "choices": [{"message": {"content": "hello"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3}}}},
        {"id": "2", "custom_id": "bad", "error": None, "response": {"status_code": 400, "body": {
            "error": {"message": "Invalid 'max_tokens'", "type": "invalid_request_error"}}}},
        {"id": "3", "custom_id": "late", "response": None,
         "error": {"code": "batch_expired", "message": "This request could not be executed."}},
    ]) + "\n\n"
    got = parse_batch_output(text)
    assert got["ok"].ok and got["ok"].text == "hello" and got["ok"].finish_reason == "length"
    assert (got["ok"].usage.prompt_tokens, got["ok"].usage.completion_tokens) == (7, 3)
    assert not got["bad"].ok and "HTTP 400" in got["bad"].error and "max_tokens" in got["bad"].error
    assert not got["late"].ok and "batch_expired" in got["late"].error
    with pytest.raises(ValueError, match=r"out.jsonl:2: not JSON"):
        parse_batch_output('{"custom_id": "a", "response": null, "error": null}\n{oops\n', source="out.jsonl")
    with pytest.raises(ValueError, match="custom_id"):
        parse_batch_output('{"response": {}}\n')


# -- the engine's resume logic ------------------------------------------------------------------
def test_crash_while_polling_then_rerun_picks_up_the_same_batch(tmp_path, monkeypatch):
    secret = "sk-test-SECRET-batch-77aa"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    api = MemoryBatchAPI()
    rs = reqs(5)
    api.crash_on = "retrieve"
    with pytest.raises(Crash):
        engine(tmp_path, api).generate(rs)
    assert api.calls == ["find", "upload", "create", "retrieve"]
    state = json.loads((tmp_path / "out" / STATE_FILE).read_text())
    (job,) = state["jobs"]
    assert job["batch_id"] == "batch_0" and job["input_file_id"] == "file-0" and len(job["custom_ids"]) == 5
    assert api.batches["batch_0"]["metadata"] == {META_KEY: job["input_sha256"]}

    api.finish("batch_0")  # the provider finishes it while we are down
    api.calls.clear()
    e2 = engine(tmp_path, api)
    got = {}
    out = e2.generate(rs, on_result=lambda i, c: got.setdefault(i, c))
    assert "upload" not in api.calls and "create" not in api.calls  # not paid twice
    assert [c.text for c in out] == [f"answer to b {i}" for i in range(5)]  # mapped back by custom_id
    assert [c.custom_id for c in out] == [r.custom_id for r in rs] and len(got) == 5
    # Batch API prices are half of gpt-4o-mini's list price (0.15 / 0.60 per 1M)
    assert out[0].usage.cost_usd == pytest.approx((100 * 0.075 + 10 * 0.30) / 1e6)
    assert e2.summary()["batch_ids"] == ["batch_0"]
    assert json.loads((tmp_path / "out" / STATE_FILE).read_text())["jobs"][0]["collected"] is True

    api.calls.clear()
    e3 = engine(tmp_path, api)
    assert all(c.cached for c in e3.generate(rs)) and api.calls == []  # cached results skip the batch
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert secret not in p.read_text(errors="replace")
    assert secret not in json.dumps(e3.summary()) and secret not in repr(e3)


def test_crash_after_create_before_the_id_was_saved(tmp_path):
    api = MemoryBatchAPI()
    api.crash_on = "create"
    rs = reqs(3)
    with pytest.raises(Crash):
        engine(tmp_path, api).generate(rs)
    state = json.loads((tmp_path / "out" / STATE_FILE).read_text())
    assert state["jobs"][0]["batch_id"] is None and state["jobs"][0]["input_file_id"] == "file-0"
    api.finish("batch_0")
    api.calls.clear()
    out = engine(tmp_path, api).generate(rs)
    assert all(c.ok for c in out)
    assert api.calls.count("create") == 0 and api.calls.count("upload") == 0  # found by its metadata
    assert len(api.batches) == 1


def test_expired_batch_keeps_what_finished_and_resubmits_the_rest(tmp_path):
    api = MemoryBatchAPI()
    rs = reqs(6)
    e = engine(tmp_path, api)
    api.crash_on = "retrieve"
    with pytest.raises(Crash):
        e.generate(rs)
    api.finish("batch_0", status="expired", answer_only=4)
    out = engine(tmp_path, api).generate(rs)
    assert sum(c.ok for c in out) == 4
    assert all("batch_expired" in c.error for c in out if not c.ok)
    assert len(ResponseCache(tmp_path / "cache")) == 4
    # a rerun sends only the two that expired, in a new batch
    api.crash_on = "retrieve"
    with pytest.raises(Crash):
        engine(tmp_path, api).generate(rs)
    assert len(api.batches) == 2 and len(api.input_lines("batch_1")) == 2
    api.finish("batch_1")
    out = engine(tmp_path, api).generate(rs)
    assert all(c.ok for c in out) and [c.text for c in out] == [f"answer to b {i}" for i in range(6)]


def test_max_cost_limits_what_goes_into_the_batch(tmp_path):
    api = MemoryBatchAPI()
    rs = reqs(10)
    # gpt-4o-mini batch price: worst case per request is tiny; price it up so only 3 fit
    prices = {MODEL: (1e6, 1e6)}  # 1 USD per token (2 x 0.5 at batch price)
    e = engine(tmp_path, api, prices=prices, max_cost_usd=3 * 0.5 * (30 + 16) + 1)
    api.crash_on = "retrieve"
    with pytest.raises(Crash):
        e.generate(rs)
    n_in = len(api.input_lines("batch_0"))
    assert 1 <= n_in < 10
    assert e.stats.budget_skipped == 10 - n_in and e.stats.budget_stopped
