"""Read teacher traces from anywhere into the traces schema.

Sources: the bundled traces (default), a Hub dataset id (owner/name), or a local jsonl / parquet /
csv / tsv file, a saved-dataset directory or a folder of data files (``SOURCES_HELP``). Schemas:
our own traces product, OpenThoughts-114k (metadata config), OpenR1-Math-220k (the first
math-verify-correct generation is the teacher trace, as in the paper), or any table with
``--field name=column`` mappings.

Local jsonl is read line by line so every error names the file, the line and the field; everything
else goes through ``datasets.load_dataset`` (the same call for a Hub id and a local folder) and
errors name the row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rlkd_bench.errors import ConfigError, DataError
from rlkd_bench.structure import split_think

DOMAINS = ("math", "code", "science", "puzzle")
DOMAIN_ALIASES = {
    "mathematics": "math", "maths": "math", "algebra": "math", "geometry": "math",
    "physics": "science", "chemistry": "science", "biology": "science",
    "programming": "code", "coding": "code", "puzzles": "puzzle", "logic": "puzzle",
}
TRACE_FIELDS = ("id", "domain", "problem", "reasoning", "answer", "gold", "source", "verified")
FORMATS = ("auto", "traces", "openr1", "openthoughts", "generic")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
# local files read through `datasets` (builder, extra load_dataset arguments)
TABLE_SUFFIXES: dict[str, tuple[str, dict[str, Any]]] = {
    ".parquet": ("parquet", {}), ".csv": ("csv", {}), ".tsv": ("csv", {"delimiter": "\t"}),
}
SOURCES_HELP = ("a .jsonl/.json/.ndjson (JSON lines), .parquet, .csv or .tsv file, a saved dataset "
                "directory, a folder of such data files, a traces product directory, or a Hub dataset "
                "id (owner/name)")
BUNDLED = "bundled"
_NUMERIC_OK = {"id", "uuid", "gold", "answer"}


@dataclass
class LoadResult:
    """Rows in the traces schema, and the rows rejected (each with file, line, field, reason)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""
    fmt: str = ""


def bundled_traces_path() -> Path:
    return Path(str(resources.files("rlkd_bench") / "data" / "traces.jsonl"))


# ---- reading raw records -----------------------------------------------------------------------


Record = tuple[int | None, dict[str, Any] | DataError]  # (line or row number, record or its error)


def _read_jsonl(path: Path) -> Iterator[Record]:
    data = path.read_bytes()
    if not data.strip():
        raise DataError("the file is empty: no traces to read", file=str(path))
    lines = data.split(b"\n")
    last = len(lines) if lines[-1].strip() else len(lines) - 1
    for i, raw in enumerate(lines[:last], start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield i, DataError(f"not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})",
                               file=str(path), line=i)
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            why = "truncated last line" if i == last and not data.endswith(b"\n") else "malformed JSON"
            # some messages end in "at" already ("Unterminated string starting at")
            where = f"column {e.colno}" if e.msg.endswith(" at") else f"at column {e.colno}"
            yield i, DataError(f"{why} ({e.msg} {where})", file=str(path), line=i)
            continue
        if not isinstance(obj, dict):
            yield i, DataError(f"expected a JSON object, got {type(obj).__name__}", file=str(path), line=i)
            continue
        yield i, obj


def _read_dataset(source: str, *, split: str, config: str | None) -> Iterator[Record]:
    """Parquet, a saved dataset, a local data folder or a Hub id, through `datasets`."""
    import datasets

    p = Path(source)
    try:
        if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES:
            builder, extra = TABLE_SUFFIXES[p.suffix.lower()]
            ds = datasets.load_dataset(builder, data_files=str(p), split="train", **extra)
        elif p.is_dir() and ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()):
            ds = datasets.load_from_disk(str(p))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise ConfigError(f"{source}: no split {split!r} (has {', '.join(ds)})")
                ds = ds[split]
        else:  # a Hub id, or a local folder of data files: the same call
            ds = datasets.load_dataset(source, name=config, split=split)
    except ConnectionError as e:  # datasets' and huggingface_hub's "cannot reach the Hub"
        raise ConfigError(hub_unreachable(source, e)) from None
    except datasets.exceptions.DatasetGenerationError as e:  # a local file datasets cannot parse
        cause = e.__cause__ or e
        raise DataError(f"cannot read it as {p.suffix.lstrip('.') or 'data'}: {type(cause).__name__}: "
                        f"{' '.join(str(cause).split())[:300]}", file=source) from None
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"cannot load traces from {source!r}: {e}") from e
    if len(ds) == 0:
        raise DataError("the dataset is empty: no traces to read", file=source)
    for i, row in enumerate(ds, start=1):
        yield i, dict(row)


def hub_unreachable(source: str, err: Exception) -> str:
    """What to do when a Hub id cannot be looked up: the Hub is offline or unreachable."""
    import os

    offline = any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
                  for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    why = ("offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)" if offline
           else f"the Hugging Face Hub is unreachable ({type(err).__name__})")
    return (f"--traces {source!r} is not a local path, and it cannot be looked up as a Hub dataset: {why}. "
            f"To use a local copy, download it where the Hub is reachable "
            f"(`hf download {source} --repo-type dataset --local-dir DIR`) and pass --traces DIR, "
            "or pass a local .jsonl/.parquet/.csv file")


def read_records(source: str, *, split: str = "train", config: str | None = None) -> Iterator[Record]:
    p = Path(source).expanduser()
    if p.is_dir() and (p / "traces.jsonl").exists():  # a traces product directory
        p = p / "traces.jsonl"
    if p.is_file() and p.suffix.lower() in JSONL_SUFFIXES:
        return _read_jsonl(p)
    if p.is_file() and p.suffix.lower() not in TABLE_SUFFIXES:
        raise ConfigError(f"--traces {source}: cannot read {p.suffix or 'a file without a suffix'}; "
                          f"use {SOURCES_HELP}")
    if not p.exists():
        if source.startswith((".", "/", "~")) or p.suffix:
            raise ConfigError(f"no such file or directory: {source}")
        if "/" not in source.strip("/"):
            raise ConfigError(f"--traces {source!r}: no such file or directory, and not a Hub dataset id "
                              f"(those read owner/name); use {SOURCES_HELP}")
    return _read_dataset(str(p) if p.exists() else source, split=split, config=config)


# ---- normalising one record into the traces schema ---------------------------------------------


class _Row:
    """Typed field access that raises DataError naming the field."""

    def __init__(self, rec: dict[str, Any], file: str, line: int | None):
        self.rec, self.file, self.line = rec, file, line

    def err(self, field_name: str, message: str) -> DataError:
        return DataError(message, file=self.file, line=self.line, field=field_name)

    def text(self, key: str, *, required: bool = True, default: str = "") -> str:
        if key not in self.rec or self.rec[key] is None:
            if required:
                raise self.err(key, "missing")
            return default
        value = self.rec[key]
        if key in _NUMERIC_OK and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # gold answers and ids are often numbers
        if not isinstance(value, str):
            raise self.err(key, f"expected text, got {type(value).__name__}")
        if required and not value.strip():
            raise self.err(key, "empty")
        return value

    def domain(self, key: str = "domain", default: str = "math") -> str:
        raw = self.text(key, required=False, default=default).strip().lower() or default
        dom = DOMAIN_ALIASES.get(raw, raw)
        if dom not in DOMAINS:
            raise self.err(key, f"unknown domain {raw!r} (expected one of {', '.join(DOMAINS)})")
        return dom

    def default_id(self, prefix: str) -> str:
        digest = hashlib.sha256(self.text("problem", required=False).encode()).hexdigest()[:12]
        return f"{prefix}-{digest}"


def _trace(row: _Row, *, id_: str, domain: str, problem: str, reasoning: str, answer: str,
           gold: str, source: str, verified: bool) -> dict[str, Any]:
    return {"id": id_, "domain": domain, "problem": problem, "reasoning": reasoning,
            "answer": answer, "gold": gold, "source": source, "verified": verified}


def _from_traces(row: _Row, origin: str) -> dict[str, Any]:
    verified = row.rec.get("verified", False)
    if not isinstance(verified, bool):
        raise row.err("verified", f"expected true or false, got {type(verified).__name__}")
    return _trace(
        row, id_=row.text("id", required=False) or row.default_id("trace"), domain=row.domain(),
        problem=row.text("problem"), reasoning=row.text("reasoning"),
        answer=row.text("answer", required=False), gold=row.text("gold", required=False),
        source=row.text("source", required=False) or origin, verified=verified,
    )


def _from_openthoughts(row: _Row, origin: str) -> dict[str, Any]:
    from rlkd_bench.answers import last_boxed

    gold_text = row.text("ground_truth_solution", required=False)
    gold = last_boxed(gold_text) or gold_text.strip()
    return _trace(
        row, id_=row.default_id("openthoughts"), domain=row.domain(),
        problem=row.text("problem"), reasoning=row.text("deepseek_reasoning"),
        answer=row.text("deepseek_solution", required=False), gold=gold, source=origin,
        verified=False,
    )


def _from_openr1(row: _Row, origin: str) -> dict[str, Any]:
    gens, marks = row.rec.get("generations"), row.rec.get("correctness_math_verify")
    if not isinstance(gens, list) or not gens:
        raise row.err("generations", "missing or not a non-empty list")
    if not isinstance(marks, list) or len(marks) != len(gens):
        raise row.err("correctness_math_verify",
                      f"must be a list as long as generations ({len(gens)})")
    correct = [i for i, ok in enumerate(marks) if ok is True]
    if not correct:
        raise row.err("correctness_math_verify", "no math-verify-correct generation")
    # the teacher trace is the first correct generation that has reasoning: one that opens with
    # </think> (or is empty) has nothing to decompose
    first = next((i for i in correct if isinstance(gens[i], str) and split_think(gens[i]).thinking), None)
    if first is None:
        raise row.err("generations", f"no math-verify-correct generation has reasoning before </think> "
                                     f"(generation(s) {', '.join(map(str, correct))} empty, not text, or "
                                     "starting with </think>)")
    parts = split_think(gens[first])
    uid = row.text("uuid", required=False)
    return _trace(
        row, id_=f"openr1-{uid}" if uid else row.default_id("openr1"), domain="math",
        problem=row.text("problem"), reasoning=parts.thinking,
        answer=parts.answer if parts.closed else "", gold=row.text("answer"),
        source=f"{origin}#generation{first}", verified=True,
    )


def _generic(fields: dict[str, str]) -> Callable[[_Row, str], dict[str, Any]]:
    missing = [k for k in ("problem", "reasoning") if k not in fields]
    if missing:
        raise ConfigError(f"generic format needs --field for {', '.join(missing)} "
                          "(e.g. --field problem=question --field reasoning=thinking)")
    unknown = set(fields) - set(TRACE_FIELDS)
    if unknown:
        raise ConfigError(f"unknown --field target(s) {sorted(unknown)}; use {', '.join(TRACE_FIELDS)}")

    def convert(row: _Row, origin: str) -> dict[str, Any]:
        mapped = _Row({k: row.rec.get(col) for k, col in fields.items()}, row.file, row.line)
        for k, col in fields.items():  # report the user's column name, not ours
            if col not in row.rec:
                raise row.err(col, f"missing (mapped to {k})")
        return _from_traces(mapped, origin)

    return convert


def _problem(fmt: str) -> Callable[[_Row, str], dict[str, Any]]:
    """Problems only (for teacher generation): id, domain, problem, gold; no reasoning needed."""
    from rlkd_bench.answers import last_boxed

    def convert(row: _Row, origin: str) -> dict[str, Any]:
        if fmt == "openr1":
            uid = row.text("uuid", required=False)
            id_, domain, gold = (f"openr1-{uid}" if uid else row.default_id("openr1"), "math",
                                 row.text("answer"))
        elif fmt == "openthoughts":
            text = row.text("ground_truth_solution", required=False)
            id_, domain, gold = row.default_id("openthoughts"), row.domain(), last_boxed(text) or text.strip()
        else:
            id_ = row.text("id", required=False) or row.default_id("problem")
            domain, gold = row.domain(), row.text("gold", required=False)
        return {"id": id_, "domain": domain, "problem": row.text("problem"), "gold": gold,
                "source": origin}

    return convert


def _generic_problem(fields: dict[str, str]) -> Callable[[_Row, str], dict[str, Any]]:
    if "problem" not in fields:
        raise ConfigError("generic format needs --field problem=COLUMN")
    base = _problem("generic")

    def convert(row: _Row, origin: str) -> dict[str, Any]:
        for col in fields.values():
            if col not in row.rec:
                raise row.err(col, "missing")
        return base(_Row({k: row.rec.get(c) for k, c in fields.items()}, row.file, row.line), origin)

    return convert


_CONVERTERS: dict[str, Callable[[_Row, str], dict[str, Any]]] = {
    "traces": _from_traces, "openr1": _from_openr1, "openthoughts": _from_openthoughts,
}


def detect_format(rec: dict[str, Any]) -> str | None:
    keys = set(rec)
    if {"generations", "correctness_math_verify"} <= keys:
        return "openr1"
    if "deepseek_reasoning" in keys:
        return "openthoughts"
    if "problem" in keys:  # our schema; a missing reasoning is then reported by name
        return "traces"
    return None


def parse_field_mappings(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``("problem=question", ...)`` -> ``{"problem": "question"}``; bad syntax is a usage error."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, column = pair.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise ConfigError(f"--field expects name=column, got {pair!r}")
        name = name.strip()
        if name in out:
            raise ConfigError(f"--field {name} is given twice ({name}={out[name]} and {pair}); "
                              "map each field once")
        out[name] = column.strip()
    if "problem" in out and out.get("reasoning") == out["problem"]:
        raise ConfigError(f"--field problem and --field reasoning both read column {out['problem']!r}; "
                          "the reasoning trace must be a column of its own")
    return out


def load_traces(
    source: str | None = None,
    *,
    fmt: str = "auto",
    fields: dict[str, str] | None = None,
    split: str = "train",
    config: str | None = None,
    on_error: str = "stop",
    limit: int | None = None,
    verify: bool = False,
    problems_only: bool = False,
) -> LoadResult:
    """Load and normalise teacher traces. ``source=None`` means the bundled traces.

    ``problems_only=True`` reads just id, domain, problem and gold (the input of teacher
    generation), so sources without reasoning traces work too.

    ``on_error="stop"`` raises the first DataError (nothing has been written yet);
    ``"skip"`` records each bad row in ``rejects`` with its reason and goes on.
    ``verify=True`` checks each row's answer against its gold (``answers.check``) and rejects misses.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if on_error not in ("stop", "skip"):
        raise ConfigError(f"--on-error must be stop or skip, got {on_error!r}")
    origin = source or BUNDLED
    path = bundled_traces_path() if source in (None, BUNDLED) else None
    records = read_records(str(path) if path else source, split=split, config=config)
    label = str(path) if path else source
    if fields:
        fmt = "generic"
    if problems_only:
        convert = None if fmt == "auto" else _generic_problem(fields) if fields else _problem(fmt)
    else:
        convert = _generic(fields or {}) if fmt == "generic" else _CONVERTERS.get(fmt)
    result = LoadResult(source=origin, fmt=fmt)
    seen: set[str] = set()

    def reject(err: DataError, rec: dict | None) -> None:
        if on_error == "stop":
            raise err
        result.rejects.append({
            "id": (rec or {}).get("id") or (rec or {}).get("uuid") or f"{label}:{err.line}",
            "stage": "load", "file": err.file, "line": err.line, "field": err.field,
            "reason": err.reason,
        })

    for line, rec in records:
        if limit is not None and len(result.rows) >= limit:
            break
        if isinstance(rec, DataError):
            reject(rec, None)
            continue
        row = _Row(rec, label, line)
        conv = convert
        if conv is None:
            detected = detect_format(rec)
            if detected is None:
                raise DataError(
                    f"cannot tell the schema from columns {sorted(rec)[:12]}; pass --format or "
                    "--field problem=COL --field reasoning=COL", file=label, line=line)
            result.fmt, conv = detected, _problem(detected) if problems_only else _CONVERTERS[detected]
            convert = conv
        try:
            trace = conv(row, origin)
            if trace["id"] in seen:
                raise row.err("id", f"duplicate id {trace['id']!r}")
            if verify and trace["gold"] and not problems_only:
                from rlkd_bench.answers import check

                trace["verified"] = check(trace["gold"], trace["answer"] or trace["reasoning"][-2000:]) is True
                if not trace["verified"]:
                    raise row.err("answer", f"does not match gold {trace['gold']!r} (answers.check: math-verify first)")
        except DataError as e:
            reject(e, rec)
            continue
        seen.add(trace["id"])
        result.rows.append(trace)
    return result
