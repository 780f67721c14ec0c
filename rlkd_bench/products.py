"""Data products on disk: atomic writes, resumable jsonl, manifest.json and the README card.

Every product is a directory. Files appear whole or not at all (write to a temp file, fsync,
rename), so Ctrl-C or SIGKILL never leaves half a file. Row logs that grow during a run
(annotations, rejects) are appended line by line with a flush, and reading them back keeps the
first row per id, so a resumed run neither loses nor duplicates rows. Files and directories get the
mode a plain ``open``/``mkdir`` would give under the umask (not mkstemp's private 0600).

A run claims its directory with ``open_product``: another product's directory is refused, an
``--out`` that cannot be written is an error in words, and an exclusive lock keeps a second run
out. ``finish_product`` records each file's sha256, and a failed run's manifest says it failed,
so ``publish`` can check that the files are what the manifest describes.
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
from collections.abc import Callable, Iterable, Iterator
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


def current_umask() -> int:
    """The process umask, read without changing it where Linux tells it (``os.umask`` must set one
    to read one, which would race with threads creating files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def normal_mode(path: str | os.PathLike) -> None:
    """Give a file (0666) or directory (0777) made by mkstemp/mkdtemp (0600/0700) the mode a plain
    ``open``/``mkdir`` would have given it under the umask, so products are readable as usual."""
    base = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, base & ~current_umask())


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
        normal_mode(tmp_path)
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
        normal_mode(tmp)
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


def make_out_dir(out_dir: str | os.PathLike, *, flag: str = "--out") -> Path:
    """Create an output directory, or say in words why it cannot be (a file in the way, no write
    permission, a read-only disk) instead of a traceback. ``flag`` names the option in messages."""
    from rlkd_bench.errors import ConfigError

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{flag} {out}: is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        above = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
        raise ConfigError(f"{flag} {out}: {above or 'a parent'} is a file, so no directory can be made "
                          "below it") from None
    except OSError as e:
        raise ConfigError(f"{flag} {out}: cannot create the directory ({e.strerror})") from None
    return out


def check_out_dir(out_dir: str | os.PathLike, product: str, *, flag: str = "--out") -> None:
    """Before any work: refuse an --out that cannot hold ``product`` (a file, below a file, not
    writable, another product's directory), without creating anything yet."""
    from rlkd_bench.errors import ConfigError

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{flag} {out}: is a file, not a directory")
    existing = next((p for p in (out, *out.absolute().parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"{flag} {out}: {existing} is a file, so no directory can be made below it")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {out}: {existing} is not writable")
    check_product_kind(out, product, flag=flag)


def product_of(out_dir: str | os.PathLike) -> str | None:
    """The ``product`` its manifest.json names, or None (no manifest, or not one of ours)."""
    try:
        other = json.loads((Path(out_dir) / MANIFEST).read_text(encoding="utf-8")).get("product")
    except (ValueError, OSError, AttributeError):
        return None
    return other if isinstance(other, str) else None


def check_product_kind(out_dir: str | os.PathLike, product: str, *, flag: str = "--out") -> None:
    """Refuse to write a ``product`` into a directory that holds another kind of product (its
    manifest.json says so) or a manifest.json that is not ours: it would be overwritten."""
    from rlkd_bench.errors import ConfigError

    if not (Path(out_dir) / MANIFEST).is_file():
        return
    other = product_of(out_dir)
    if other != product:
        what = f"a {other!r} product" if other else f"a {MANIFEST} that is not an rlkd-bench one"
        raise ConfigError(f"{flag} {Path(out_dir)} holds {what}, not {product!r}: writing here would "
                          f"overwrite it; use another {flag}")


@contextlib.contextmanager
def open_product(out_dir: str | os.PathLike, product: str) -> Iterator[Path]:
    """Claim ``out_dir`` for one run that writes ``product``: refuse another kind of product,
    make the directory (clear errors), and hold the exclusive run lock until the run ends."""
    check_product_kind(out_dir, product)
    with run_lock(out_dir):
        check_product_kind(out_dir, product)  # again under the lock: a run may have just finished
        yield Path(out_dir)


@contextlib.contextmanager
def run_lock(out_dir: str | os.PathLike, *, flag: str = "--out", shown: str | os.PathLike | None = None,
             tidy: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on a product directory for the length of a run.

    Two runs appending to the same row logs would interleave their rows; the second one is
    refused with a clear message instead (ConfigError, exit 2). The lock dies with the process
    (even on SIGKILL). ``shown`` is the path the message names (default ``out_dir``); ``tidy``
    removes the directory again when this run made it and left nothing in it but the lock file
    (a run refused before it wrote anything leaves no trace).
    """
    import fcntl

    from rlkd_bench.errors import ConfigError

    made = not Path(out_dir).exists()
    out = make_out_dir(out_dir, flag=flag)
    lock = out / ".lock"
    while True:
        try:
            f = open(lock, "w")  # noqa: SIM115 - closed below
        except OSError as e:
            raise ConfigError(f"{flag} {shown or out}: cannot write there ({e.strerror})") from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise ConfigError(f"another run is writing to {shown or out}; wait for it or use another {flag}") from None
        try:  # a tidy run may have removed the file we opened just before we locked it: lock the new one
            if os.stat(lock).st_ino == os.fstat(f.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        f.close()
    with f:
        try:
            yield
        finally:
            if tidy and made:
                with contextlib.suppress(OSError):
                    if [p.name for p in out.iterdir()] == [lock.name]:
                        lock.unlink()
                        out.rmdir()
            fcntl.flock(f, fcntl.LOCK_UN)


class RowLog:
    """An append-only jsonl of rows keyed by ``key``, safe to resume.

    ``done`` holds the keys already on disk. A torn last line (the process was killed mid-write)
    is dropped on open, so the file is always valid jsonl. ``key`` is a field name or a function
    of the row (None: the row has no key and is dropped); ``keep`` drops rows on open that this
    run will write again (e.g. rejects of the input loading, which are redone every run).
    """

    def __init__(self, path: str | os.PathLike, key: str | Callable[[dict], str | None] = "id", *,
                 resume: bool = True, keep: Callable[[dict], bool] | None = None):
        self.path = Path(path)
        self._key = key if callable(key) else (lambda r, k=key: str(r[k]) if k in r else None)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: dict[str, dict] = {}
        if resume and self.path.exists():
            for r in _read_valid_jsonl(self.path):
                k = self._key(r)
                if k is not None and (keep is None or keep(r)):
                    self.rows.setdefault(k, r)  # the first row per key wins
        # rewrite the kept rows so a torn tail or duplicates never survive a resume
        write_jsonl(self.path, self.rows.values())
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    @property
    def done(self) -> set[str]:
        return set(self.rows)

    def key_of(self, row: dict) -> str:
        k = self._key(row)
        if k is None:
            raise KeyError(f"row has no key for {self.path.name}: {sorted(row)[:8]}")
        return k

    def append(self, row: dict) -> None:
        k = self.key_of(row)
        if k in self.rows:
            return
        self.rows[k] = row
        self._f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        self._f.flush()

    def discard(self, keys: Iterable[str]) -> int:
        """Drop the rows with these keys: the file is rewritten whole (atomically) and appends go
        on into the new file. Returns how many were dropped."""
        gone = [k for k in set(keys) if k in self.rows]
        if not gone:
            return 0
        for k in gone:
            del self.rows[k]
        self._f.close()
        write_jsonl(self.path, self.rows.values())
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        return len(gone)

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


def checkpoint_run_dir(out: str | os.PathLike) -> Path:
    """Where a training run keeps its state and stages its checkpoint: ``<output_dir>.run/``."""
    out = Path(out)
    return out.with_name(out.name + ".run")


def check_checkpoint_dir(out_dir: str | os.PathLike, product: str, *, inputs: Iterable[str | os.PathLike] = (),
                         overwrite: bool = False) -> None:
    """Before training: refuse an ``output_dir`` whose contents the checkpoint would destroy.

    Refused (ConfigError, exit 2): a file; a directory that cannot be written or made; another
    kind of product; a directory that is, holds or lies inside one of the run's ``inputs`` (the
    data, the base model, the GSRM); a non-empty directory that is not a ``product`` checkpoint,
    unless ``overwrite`` (then the checkpoint's files are written among what it holds, which is
    kept). A checkpoint of the same kind is replaced: only the files its manifest lists go.
    """
    from rlkd_bench.errors import ConfigError

    flag = "output_dir"
    out = Path(out_dir)
    check_out_dir(out, product, flag=flag)
    here = out.resolve()
    for source in inputs:
        p = Path(source).expanduser()
        if not str(source) or not p.exists():
            continue  # a Hub id, "tiny": nothing on disk to protect
        there = p.resolve()
        how = ("is" if here == there else "holds" if here in there.parents else
               "is inside" if there in here.parents and there.is_dir() else None)
        if how:
            raise ConfigError(f"{flag} {out} {how} an input of this run ({p}), and inputs are read-only: "
                              f"writing the checkpoint there would change or destroy it; use another {flag}")
    if out.is_dir() and product_of(out) != product:
        entries = sorted(p.name for p in out.iterdir())
        if entries and not overwrite:
            shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
            raise ConfigError(f"{flag} {out} is not empty ({shown}) and holds no {product}: training would "
                              f"mix its checkpoint with these files; use a new or empty {flag}, or set "
                              "overwrite_output_dir=true to write the checkpoint among them (they are kept; "
                              "files of the same name are replaced)")


@contextlib.contextmanager
def claim_checkpoint(out_dir: str | os.PathLike, product: str, *, inputs: Iterable[str | os.PathLike] = (),
                     overwrite: bool = False) -> Iterator[Path]:
    """Claim ``output_dir`` for one training run: the guard (``check_checkpoint_dir``), the run
    lock on ``<output_dir>.run/`` (the main process only; a second run into the same
    ``output_dir`` is refused with exit 2), and saved datasets kept read-only for the run.

    The lock is on the run dir because ``output_dir`` itself is replaced whole at the end.
    """
    inputs = list(inputs)
    check_checkpoint_dir(out_dir, product, inputs=inputs, overwrite=overwrite)
    main = int(os.environ.get("RANK", "0") or 0) == 0  # accelerate/torchrun: one lock per run
    lock = (run_lock(checkpoint_run_dir(out_dir), flag="output_dir", shown=out_dir, tidy=True) if main
            else contextlib.nullcontext())
    with lock, datasets_read_only():
        if main:  # again under the lock: a run may have just finished there
            check_checkpoint_dir(out_dir, product, inputs=inputs, overwrite=overwrite)
        yield Path(out_dir)


@contextlib.contextmanager
def datasets_read_only() -> Iterator[None]:
    """Keep saved datasets unchanged while the block runs.

    ``datasets`` writes the result of ``map``/``filter`` on a dataset loaded from disk as
    ``cache-*.arrow`` next to its arrow files, i.e. inside the input product (whose manifest then
    no longer matches, so ``publish`` refuses it). With caching off those results go to a
    temporary directory that is removed when the process ends. Applies to our maps and TRL's.
    """
    import datasets

    was = datasets.is_caching_enabled()
    datasets.disable_caching()
    try:
        yield
    finally:
        if was:
            datasets.enable_caching()


def seal_checkpoint(stage: Path) -> dict[str, str]:
    """List every file of a staged checkpoint in its manifest with its sha256 (as data products
    do), so ``publish`` can tell replaced weights. Returns the checksums."""
    mf = stage / MANIFEST
    manifest = json.loads(mf.read_text(encoding="utf-8"))
    names = sorted(p.name for p in stage.iterdir() if not p.name.startswith("."))
    manifest["files"] = sorted(set(names) | {MANIFEST})
    manifest["checksums"] = checksums = {n: sha256_of(stage / n) for n in names if n != MANIFEST}
    write_json(mf, manifest)
    return checksums


def _swap_in(stage: Path, out: Path) -> None:
    """Put the staged checkpoint at ``out``. In one rename when ``out`` holds nothing but an
    earlier checkpoint's own files; otherwise file by file, so that what the toolkit did not make
    (a user's notes, anything an ``overwrite_output_dir`` run was asked to write among) is kept,
    with the manifest moved last (until then the old one, whose checksums no longer match)."""
    from rlkd_bench.errors import ConfigError

    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {out}: became a file during the run; the checkpoint is in {stage}")
    if not out.exists():
        os.replace(stage, out)
        return
    made: set[str] = set()
    if product_of(out) == product_of(stage):
        with contextlib.suppress(ValueError, OSError, AttributeError, TypeError):
            made = set(json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("files") or [])
    present = {p.name for p in out.iterdir()}
    if present <= made:
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    new = {p.name for p in stage.iterdir()}
    for name in sorted(new - {MANIFEST}):
        dest = out / name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(stage / name, dest)
    for name in sorted((made & present) - new):
        gone = out / name
        if gone.is_dir() and not gone.is_symlink():
            shutil.rmtree(gone, ignore_errors=True)
        else:
            gone.unlink(missing_ok=True)
    os.replace(stage / MANIFEST, out / MANIFEST)
    shutil.rmtree(stage, ignore_errors=True)


def save_checkpoint(trainer: Any, run_dir: Path, out: Path, write_meta: Callable[[Path], None]) -> str | None:
    """Save a trained model so that ``out`` only ever holds a whole checkpoint.

    Every rank saves into ``run_dir/final`` (ZeRO-3 gathers the shards there); the main process
    lets ``write_meta(stage)`` add the card and manifest, records each file's sha256 in the
    manifest, then moves the checkpoint into place (``_swap_in``: only what an earlier checkpoint
    made is replaced). Returns the checkpoint's short content hash on the main process, None on
    the others.
    """
    main = trainer.is_world_process_zero()
    stage = run_dir / "final"
    if main and stage.exists():  # left by a run that died after saving
        shutil.rmtree(stage)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(stage))
    trainer.accelerator.wait_for_everyone()
    if not main:
        return None
    (stage / "training_args.bin").unlink(missing_ok=True)  # a pickle; the config is in the manifest
    write_meta(stage)
    checksums = seal_checkpoint(stage)
    _swap_in(stage, out)
    return hashlib.sha256(json.dumps(checksums, sort_keys=True).encode()).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


DETERMINISM_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED",
                   "CUDA_VISIBLE_DEVICES")


def runtime_info(**seeds: Any) -> dict[str, Any]:
    """What makes the same config give other floats on another machine, for results files and
    manifests: torch's version, its thread counts (float sums split differently over threads),
    the CPU kernels it dispatches to, its determinism switches, the environment variables that
    set them, and the ``seeds`` the caller names (``runtime_info(seed=3)``)."""
    info: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                            "cpu_count": os.cpu_count(),
                            "env": {k: os.environ[k] for k in DETERMINISM_ENV if k in os.environ}}
    if seeds:
        info["seeds"] = dict(seeds)
    try:
        import torch
    except ImportError:
        return info
    info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                torch_interop_threads=torch.get_num_interop_threads(),
                deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
                cudnn_deterministic=torch.backends.cudnn.deterministic, cudnn_benchmark=torch.backends.cudnn.benchmark,
                cuda=torch.version.cuda if torch.cuda.is_available() else None)
    with contextlib.suppress(AttributeError, RuntimeError):
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


def redact_argv(argv: list[str]) -> list[str]:
    """The command line with secrets masked (options, URL credentials and query values, key shapes);
    the rules live in one place, ``rlkd_bench.llm.redact``."""
    from rlkd_bench.llm.redact import redact_argv as _redact_argv

    return _redact_argv(argv)


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
    checksums: dict[str, str] = field(default_factory=dict)  # sha256 of each listed data file or dir
    status: str = "ok"  # "failed": the run wrote no usable product; ``error`` says why
    error: str | None = None
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
        """The manifest as plain data, secrets scrubbed (it goes into the card and to the Hub)."""
        from rlkd_bench.llm.redact import scrub

        return scrub({k: getattr(self, k) for k in self.__dataclass_fields__})

    def write(self, out_dir: str | os.PathLike) -> Path:
        path = Path(out_dir) / MANIFEST
        write_json(path, self.to_dict())
        return path


def check_test_size(test_size: float) -> float:
    """``--test-size`` is a fraction in [0, 1) or a whole number of rows (1, 2, ...); 1.5 is neither."""
    from rlkd_bench.errors import ConfigError

    if test_size < 0 or (test_size >= 1 and test_size != int(test_size)):
        raise ConfigError(f"--test-size must be a fraction between 0 and 1 or a whole number of rows, "
                          f"got {test_size:g}")
    return test_size


def split_sizes(n: int, test_size: float) -> int:
    """Number of test rows: a fraction (0 < x < 1) or a count (x >= 1); never all rows."""
    check_test_size(test_size)
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
                   title: str, summary: str, extra: str = "", error: str | None = None) -> dict[str, Any]:
    """Close a product: list its files with their sha256, stamp the wall time since ``t0``, write
    manifest.json and the README.md card built from it. Returns the manifest as a dict.

    With ``error`` the run failed: the manifest says so (``status: failed``) and lists only the
    files this run wrote, so it never describes outputs of an earlier run (``publish`` refuses it).
    """
    manifest.files = [*files, MANIFEST, CARD]
    manifest.checksums = {f: sha256_of(Path(out) / f) for f in files if (Path(out) / f).exists()}
    if error is not None:
        manifest.status, manifest.error = "failed", error
        summary = f"**This run failed: {error}** The files below are what it left for inspection.\n\n{summary}"
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
    if manifest.get("status", "ok") != "ok":
        lines.append(f"- Status: {manifest['status']} ({manifest.get('error')})")
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
