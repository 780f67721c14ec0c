"""A small HTTP proxy in front of a real model server: counts requests, injects faults.

It is how tests count requests "at the server" and how they meet the trouble real endpoints
give: 429 with Retry-After, 500, a response that stalls past the client's timeout, a dropped
connection, a refused key, a reply without choices. Faults are consumed in arrival order by POST
requests to ``fault_paths`` (chat completions unless a test adds ``/v1/completions``); every other
request, and those once the schedule is empty, are forwarded unchanged, except that
``extra_models`` adds model ids to the real server's ``/v1/models`` list (a server that lists
several models). Every fault answers for the real server or rewrites what it answered: nothing
here invents a model's reply.

Plain asyncio streams, HTTP/1.1, one upstream connection per request and ``Connection: close``
to the client (the openai client reconnects as needed). Runs its loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
MODELS_PATH = "/v1/models"


@dataclass(frozen=True)
class Fault:
    """One injected fault. ``kind``: "429" (with ``retry_after`` seconds), "500", "stall" (hold the
    request ``seconds`` without answering, then close), "drop" (reset the connection),
    "401echo" (a hostile 401 that echoes the Authorization header back in its body), "echo" (an error
    with status ``status`` whose message echoes the request line, query string included, and the
    Authorization header, as careless servers and proxies do), "error" (answer ``status`` with
    ``{"error": {"message": message, "code": code}}`` without forwarding: a 401 for a key the
    server refuses, a 400 for a prompt over the context length), "nochoice" (forward to the real
    server, then return its reply with ``choices: []`` and its usage kept: a refusal that is paid
    for)."""

    kind: str
    retry_after: float | None = None
    seconds: float = 30.0
    status: int = 400
    message: str = "refused (injected)"
    code: str | None = None


@dataclass
class Arrival:
    t: float
    path: str
    body_sha: str
    fault: str | None
    headers: dict[str, str] = field(default_factory=dict)


class FaultProxy:
    """``FaultProxy(upstream_port).start()``; ``url`` is its base URL (``.../v1``).

    Counters (read from any thread): ``count`` requests seen on ``fault_paths`` (chat completions
    unless a test sets it), ``max_in_flight``, ``arrivals`` (each with the path as sent, query
    included, and its headers when ``keep_headers``). ``inject(Fault(...), ...)`` queues faults;
    ``delay_s`` adds latency before forwarding; ``extra_models`` adds ids to ``/v1/models``.
    ``reset()`` puts all of these back.
    """

    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.delay_s = 0.0
        self._schedule: deque[Fault] = deque()
        self._lock = threading.Lock()
        self.count = 0
        self.total = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.arrivals: list[Arrival] = []
        self.keep_headers = False
        self.fault_paths: tuple[str, ...] = (CHAT_PATH,)
        self.extra_models: tuple[str, ...] = ()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    # -- control (test thread) --------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def inject(self, *faults: Fault | str) -> None:
        with self._lock:
            for f in faults:
                self._schedule.append(Fault(f) if isinstance(f, str) else f)

    def reset(self) -> None:
        """Forget counts, arrivals, faults and delay (between tests)."""
        with self._lock:
            self._schedule.clear()
            self.count = 0
            self.total = 0
            self.max_in_flight = self.in_flight
            self.arrivals = []
            self.delay_s = 0.0
            self.keep_headers = False
            self.fault_paths = (CHAT_PATH,)
            self.extra_models = ()

    @property
    def pending_faults(self) -> int:
        return len(self._schedule)

    def start(self) -> FaultProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=512))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name="faultproxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving (proxy thread) -------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            req = await _read_request(reader)
            if req is None:
                return
            method, path, headers, raw_head, body = req
            bare = path.split("?")[0]
            fault = None
            with self._lock:
                watched = method == "POST" and any(bare.endswith(p) for p in self.fault_paths)
                more_models = self.extra_models if method == "GET" and bare.endswith(MODELS_PATH) else ()
                self.total += 1
                if watched:
                    self.count += 1
                    fault = self._schedule.popleft() if self._schedule else None
                    self.arrivals.append(Arrival(
                        time.monotonic(), path, hashlib.sha256(body).hexdigest()[:16],
                        fault.kind if fault else None, dict(headers) if self.keep_headers else {}))
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if fault is not None:
                    headers = {**headers, ":request-line": f"{method} {path}"}
                    await self._fault(fault, headers, reader, writer, raw_head, body)
                    return
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if more_models:
                    await self._forward_rewritten(raw_head, body, writer, lambda obj: {
                        **obj, "data": [*obj["data"], *({"id": m, "object": "model"} for m in more_models)]})
                else:
                    await self._forward(raw_head, body, writer)
            finally:
                with self._lock:
                    self.in_flight -= 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _fault(self, fault: Fault, headers: dict[str, str], reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, raw_head: bytes, body: bytes) -> None:
        if fault.kind == "429":
            extra = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            await _respond(writer, 429, {"error": {"message": "rate limited (injected)", "type": "rate_limit"}},
                           extra)
        elif fault.kind == "500":
            await _respond(writer, 500, {"error": {"message": "server error (injected)", "type": "server"}})
        elif fault.kind == "401echo":
            await _respond(writer, 401, {"error": {"message": "bad key: " + headers.get("authorization", "")}})
        elif fault.kind == "echo":
            await _respond(writer, fault.status, {"error": {
                "message": f"cannot serve {headers.get(':request-line', '')} "
                           f"(authorization: {headers.get('authorization', 'none')})",
                "type": "invalid_request_error"}})
        elif fault.kind == "error":
            await _respond(writer, fault.status, {"error": {
                "message": fault.message, "type": "invalid_request_error", "code": fault.code}})
        elif fault.kind == "nochoice":
            await self._forward_rewritten(raw_head, body, writer, lambda obj: {**obj, "choices": []})
        elif fault.kind == "stall":
            # hold the request; stop early once the client gives up and closes its side
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                await asyncio.wait_for(reader.read(1), fault.seconds)
        elif fault.kind == "drop":
            writer.transport.abort()
        else:
            raise ValueError(f"unknown fault {fault.kind!r}")

    async def _forward_rewritten(self, raw_head: bytes, body: bytes, writer: asyncio.StreamWriter,
                                 rewrite: Callable[[dict], dict]) -> None:
        """Send the request upstream and answer with ``rewrite(its JSON reply)``; a reply that is not
        a 2xx is relayed as the server sent it."""
        up_r, up_w = await asyncio.open_connection(*self.upstream)
        try:
            up_w.write(_with_connection_close(raw_head) + body)
            await up_w.drain()
            raw = await up_r.read()  # the whole response: the server was asked to close
        finally:
            up_w.close()
        status, reply = _parse_response(raw)
        if not 200 <= status < 300:
            writer.write(raw)
            await writer.drain()
            return
        await _respond(writer, status, rewrite(json.loads(reply)))

    async def _forward(self, raw_head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        """Send the request upstream and relay the response. A response with a Content-Length is
        relayed exactly (so ``in_flight`` drops as soon as the client has it); others until EOF."""
        up_r, up_w = await asyncio.open_connection(*self.upstream)
        try:
            up_w.write(_with_connection_close(raw_head) + body)
            await up_w.drain()
            head = await up_r.readuntil(b"\r\n\r\n")
            length = None
            for line in head.decode("latin-1").split("\r\n")[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v.strip())
            writer.write(head)
            if length is not None:
                writer.write(await up_r.readexactly(length))
            else:
                while chunk := await up_r.read(65536):
                    writer.write(chunk)
                    await writer.drain()
            await writer.drain()
        finally:
            up_w.close()


def _parse_response(raw: bytes) -> tuple[int, bytes]:
    """A whole HTTP/1.1 response -> (status, body), de-chunked."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    if any(ln.lower().replace(" ", "") == "transfer-encoding:chunked" for ln in lines[1:]):
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    return status, body


async def _read_request(reader: asyncio.StreamReader):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0") or 0)
    body = await reader.readexactly(n) if n else b""
    return method, path, headers, head, body


def _with_connection_close(raw_head: bytes) -> bytes:
    lines = raw_head.decode("latin-1").split("\r\n")
    kept = [ln for ln in lines if ln and not ln.lower().startswith(("connection:", "keep-alive:"))]
    return ("\r\n".join(kept) + "\r\nConnection: close\r\n\r\n").encode("latin-1")


async def _respond(writer: asyncio.StreamWriter, status: int, obj: dict, extra: dict[str, str] | None = None) -> None:
    body = json.dumps(obj).encode()
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
              422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error"}.get(status, "Error")
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(body)}",
            "Connection: close"]
    head += [f"{k}: {v}" for k, v in (extra or {}).items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()
