"""Real model servers for tests and benchmarks, on 127.0.0.1 only.

``TinyServer`` runs ``transformers serve`` (the CLI from this venv) on a free loopback port with
a local model directory preloaded, waits until it answers a real chat request (the first one
warms up continuous batching), and stops it (terminate, then kill) at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def transformers_cli() -> str:
    """The ``transformers`` CLI next to this Python (the venv's), else the one on PATH."""
    here = Path(sys.executable).parent / "transformers"
    if here.exists():
        return str(here)
    found = shutil.which("transformers")
    if not found:
        raise RuntimeError("the `transformers` CLI is not installed (pip install 'transformers[serving]')")
    return found


class TinyServer:
    """``transformers serve MODEL_DIR --host 127.0.0.1 --port P [--continuous-batching]``."""

    def __init__(self, model_dir: str | os.PathLike, *, continuous_batching: bool = True,
                 port: int | None = None, log_path: str | os.PathLike | None = None,
                 cb_blocks: int = 256, cb_block_size: int = 32):
        self.model_dir = str(model_dir)
        self.continuous_batching = continuous_batching
        # A small paged KV cache: the default sizes it from free memory, which takes ~10 s to set
        # up on CPU; 256 x 32 tokens is plenty for the tiny model at concurrency 32.
        self.cb_blocks, self.cb_block_size = cb_blocks, cb_block_size
        self.port = port or free_port()
        self.log_path = Path(log_path) if log_path else Path(self.model_dir).parent / f"serve-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model_id(self) -> str:
        """The name the server knows its preloaded model by (the path it was given)."""
        return self.model_dir

    def start(self, timeout_s: float = 120.0) -> TinyServer:
        cmd = [transformers_cli(), "serve", self.model_dir, "--host", "127.0.0.1", "--port", str(self.port),
               "--device", "cpu", "--log-level", "warning"]
        if self.continuous_batching:
            cmd += ["--continuous-batching", "--cb-num-blocks", str(self.cb_blocks),
                    "--cb-block-size", str(self.cb_block_size)]
        else:
            cmd.append("--no-continuous-batching")
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        env.pop("OPENAI_API_KEY", None)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.proc.returncode}: {self.log_tail()}")
            if self._healthy():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"transformers serve not ready after {timeout_s:.0f} s: {self.log_tail()}")
            time.sleep(0.25)
        self.warm_up(timeout_s=max(10.0, deadline - time.monotonic()))
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def warm_up(self, timeout_s: float = 60.0) -> None:
        """One real chat request, so the first test request is not the one paying the warm-up."""
        body = json.dumps({"model": self.model_id, "messages": [{"role": "user", "content": "warm up"}],
                           "max_tokens": 2, "temperature": 0}).encode()
        req = urllib.request.Request(f"{self.base_url}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            json.loads(r.read())

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> TinyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def served_behind_proxy(model_dir: str | Path, *, cb_blocks: int = 256, timeout_s: float = 120.0):
    """Serve ``model_dir`` with ``transformers serve`` behind a counting fault proxy; yields
    ``(base_url, model_id, proxy)`` and stops both at the end. ``cb_blocks``: the paged KV cache,
    in blocks of 32 tokens."""
    from faultproxy import FaultProxy

    server = TinyServer(model_dir, cb_blocks=cb_blocks).start(timeout_s=timeout_s)
    proxy = FaultProxy(server.port).start()
    try:
        yield proxy.url, server.model_id, proxy
    finally:
        proxy.stop()
        server.stop()
