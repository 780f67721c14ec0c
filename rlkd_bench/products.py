"""Data products on disk: atomic writes, resumable jsonl, manifest.json and the README card.

Every product is a directory. Files appear whole or not at all (write to a temp file, fsync,
rename), so Ctrl-C or SIGKILL never leaves half a file. Row logs that grow during a run
(annotations, rejects) are appended line by line with a flush, and reading them back keeps the
first row per id, so a resumed run neither loses nor duplicates rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
CARD = "README.md"
TRACKED_PACKAGES = (
    "rlkd-bench", "torch", "transformers", "trl", "datasets", "huggingface-hub", "openai",
    "lm-eval", "math-verify", "vllm",
)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write rows as jsonl atomically; returns the number written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            n += 1
    return n


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp directory; on success it replaces ``path`` (for saved datasets, checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def run_lock(out_dir: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on a product directory for the length of a run.

    Two runs appending to the same row logs would interleave their rows; the second one is
    refused with a clear message instead. The lock dies with the process (even on SIGKILL).
    """
    import fcntl

    from rlkd_bench.errors import ConfigError

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another run is writing to {out}; wait for it or use another --out") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class RowLog:
    """An append-only jsonl of rows keyed by ``key``, safe to resume.

    ``done`` holds the keys already on disk. A torn last line (the process was killed mid-write)
    is dropped on open, so the file is always valid jsonl.
    """

    def __init__(self, path: str | os.PathLike, key: str = "id", *, resume: bool = True):
        self.path, self.key = Path(path), key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: dict[str, dict] = {}
        if resume and self.path.exists():
            for r in _read_valid_jsonl(self.path):
                if key in r:
                    self.rows.setdefault(str(r[key]), r)  # the first row per key wins
        # rewrite the kept rows so a torn tail or duplicates never survive a resume
        write_jsonl(self.path, self.rows.values())
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    @property
    def done(self) -> set[str]:
        return set(self.rows)

    def append(self, row: dict) -> None:
        k = str(row[self.key])
        if k in self.rows:
            return
        self.rows[k] = row
        self._f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> RowLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_valid_jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):
                return  # torn tail from a killed writer
            with contextlib.suppress(json.JSONDecodeError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    yield obj


def sha256_of(path: str | os.PathLike) -> str:
    """Content hash of a file, or of every file under a directory (sorted by relative path)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        if path.is_dir():
            h.update(str(p.relative_to(path)).encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def redact_argv(argv: list[str]) -> list[str]:
    """The command line with anything that looks like a secret value masked."""
    out, hide_next = [], False
    for arg in argv:
        low = arg.lower()
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        if any(s in low for s in ("--api-key=", "--token=", "--hf-token=")):
            out.append(arg.split("=", 1)[0] + "=***")
        elif low in ("--api-key", "--token", "--hf-token"):
            out.append(arg)
            hide_next = True
        elif arg.startswith(("sk-", "hf_")):
            out.append("***")
        else:
            out.append(arg)
    return out


@dataclass
class Manifest:
    """What a product is made of and how: inputs with hashes, command, versions, counts, cost."""

    product: str
    inputs: dict[str, dict] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    prompt_versions: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    usage: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0
    command: list[str] = field(default_factory=lambda: redact_argv(["rlkd-bench", *sys.argv[1:]]))
    versions: dict[str, str] = field(default_factory=package_versions)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def add_input(self, name: str, source: str, *, local: bool | None = None) -> None:
        """Record an input; local files and dirs get a content hash, Hub ids their name."""
        p = Path(source)
        entry: dict[str, Any] = {"source": str(source)}
        if (local is None and p.exists()) or local:
            entry["sha256"] = sha256_of(p)
        self.inputs[name] = entry

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def write(self, out_dir: str | os.PathLike) -> Path:
        path = Path(out_dir) / MANIFEST
        write_json(path, self.to_dict())
        return path


def split_sizes(n: int, test_size: float) -> int:
    """Number of test rows: a fraction (0 < x < 1) or a count (x >= 1); never all rows."""
    from rlkd_bench.errors import ConfigError

    if test_size < 0:
        raise ConfigError(f"--test-size must be >= 0, got {test_size}")
    n_test = int(test_size) if test_size >= 1 else round(n * test_size)
    if test_size > 0 and n >= 2:
        n_test = max(1, n_test)
    return min(n_test, max(n - 1, 0))


def save_splits(rows: list[dict[str, Any]], out: str | os.PathLike, *, test_size: float,
                seed: int) -> dict[str, int]:
    """Shuffle (seeded, independent of input order), split train/test, save a DatasetDict atomically.

    An empty split is left out: datasets saves no file for it and load_from_disk then fails.
    """
    import random

    import datasets

    order = sorted(rows, key=lambda r: r["id"])
    random.Random(seed).shuffle(order)
    n_test = split_sizes(len(order), test_size)
    parts = {"train": order[n_test:], "test": order[:n_test]}
    dd = datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in parts.items() if v})
    datasets.disable_progress_bars()
    with atomic_dir(out) as tmp:
        dd.save_to_disk(str(tmp))
    return {k: len(v) for k, v in parts.items()}


def finish_product(manifest: Manifest, out: str | os.PathLike, t0: float, files: list[str], *,
                   title: str, summary: str, extra: str = "") -> dict[str, Any]:
    """Close a product: list its files, stamp the wall time since ``t0``, write manifest.json and
    the README.md card built from it. Returns the manifest as a dict."""
    manifest.files = [*files, MANIFEST, CARD]
    manifest.wall_time_s = round(time.time() - t0, 3)
    manifest.write(out)
    write_text(Path(out) / CARD, render_card(manifest.to_dict(), title=title, summary=summary, extra=extra))
    return manifest.to_dict()


def render_card(manifest: dict, *, title: str, summary: str, kind: str = "dataset",
                extra: str = "") -> str:
    """A dataset/model card (YAML header + prose) that says what the manifest says."""
    tags = ["rlkd", "reasoning", "distillation", "rlkd-bench"]
    header = ["---", "tags:"] + [f"- {t}" for t in tags]
    if kind == "dataset":
        header += ["configs:", "- config_name: default"]
    header += ["---", ""]
    lines = [f"# {title}", "", summary, "", "## How it was made", ""]
    lines.append(f"- Command: `{' '.join(manifest.get('command', []))}`")
    lines.append(f"- Created: {manifest.get('created')} in {manifest.get('wall_time_s', 0):.1f} s")
    for name, inp in manifest.get("inputs", {}).items():
        h = f" (sha256 `{inp['sha256'][:16]}…`)" if inp.get("sha256") else ""
        lines.append(f"- Input `{name}`: `{inp['source']}`{h}")
    for name, ver in manifest.get("prompt_versions", {}).items():
        lines.append(f"- Prompt `{name}`: version `{ver}`")
    if manifest.get("params"):
        lines += ["", "## Parameters", ""]
        lines += [f"- `{k}`: `{v}`" for k, v in manifest["params"].items()]
    if manifest.get("counts"):
        lines += ["", "## Counts", ""]
        lines += [f"- {k}: {v}" for k, v in manifest["counts"].items()]
    if manifest.get("usage"):
        lines += ["", "## Tokens and cost", ""]
        lines += [f"- {k}: {v}" for k, v in manifest["usage"].items()]
    if manifest.get("files"):
        lines += ["", "## Files", ""] + [f"- `{f}`" for f in manifest["files"]]
    vers = manifest.get("versions", {})
    lines += ["", "## Software", "", ", ".join(f"{k} {v}" for k, v in vers.items())]
    if extra:
        lines += ["", extra.strip()]
    return "\n".join(header + lines) + "\n"
