"""Where the lm-eval tasks get their problems: settings, the bundled eval set, and loaders.

Settings (decomposer, matcher, data source) come from the task metadata first (``lm_eval
--metadata '{"decomposer": ...}'``, ``TaskManager(metadata=...)``, ``rlkd-bench eval
--decomposer``), then the environment (``RLKD_DECOMPOSER``, ``RLKD_MATCHER``, ``RLKD_EVAL_DATA``,
``RLKD_<TASK>_DATA``), then the offline defaults. Whatever was used is stamped into every doc
(``scorer``), so the per-sample log says it, and ``rlkd-bench eval`` also writes it into the
results.

The bundled eval set (``data/eval/structure_eval.jsonl``) is held out from everything the
project trains on: synthetic problems from seed ``EVAL_SEED``, which no training path uses, in the
rlkd-data row schema, the teacher's steps computed by the heuristic decomposer (the offline
default, so a student that reproduces the teacher trace scores 1). Rebuild it with
``python -m rlkd_bench.tasks.evaldata``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from importlib import resources
from pathlib import Path
from typing import Any

from rlkd_bench.errors import ConfigError, DataError
from rlkd_bench.reward.scorer import as_decomposition
from rlkd_bench.rlkd_data import prompt_parts  # as the student was trained: one owner of the prompt

log = logging.getLogger("rlkd_bench.tasks")

EVAL_SEED = 8008  # held out: no training path may generate synthetic traces with this seed
EVAL_SIZE = 40
BUNDLED = "bundled"
EVAL_COLUMNS = ("id", "domain", "problem", "gold", "teacher_reasoning", "teacher_steps",
                "teacher_final_answer", "n_teacher_steps", "source")

DEFAULTS = {"decomposer": "heuristic", "matcher": "lexical", "eval_data": BUNDLED, "prompt": "rlkd",
            "timeout_s": 300}
ENV = {"decomposer": "RLKD_DECOMPOSER", "matcher": "RLKD_MATCHER", "eval_data": "RLKD_EVAL_DATA",
       "prompt": "RLKD_PROMPT", "timeout_s": "RLKD_SCORER_TIMEOUT", "gsrm_engine": "RLKD_GSRM_ENGINE",
       "gsrm_model": "RLKD_GSRM_MODEL", "judge_model": "RLKD_JUDGE_MODEL"}

# The paper's accuracy suite: Hub id, config, split, and the metadata key / env var for a local copy.
REASONING_SOURCES = {
    "rlkd_aime24": {"path": "HuggingFaceH4/aime_2024", "name": None, "split": "train",
                    "key": "aime24_data", "env": "RLKD_AIME24_DATA"},
    "rlkd_math500": {"path": "HuggingFaceH4/MATH-500", "name": None, "split": "test",
                     "key": "math500_data", "env": "RLKD_MATH500_DATA"},
    "rlkd_gpqa_diamond": {"path": "Idavidrein/gpqa", "name": "gpqa_diamond", "split": "train",
                          "key": "gpqa_data", "env": "RLKD_GPQA_DATA"},
}

GPQA_INSTRUCTION = ("Answer the following multiple-choice question. Think it through step by step, then "
                    "end your response with a line of the form 'Answer: X', where X is one of A, B, C, D.")


def setting(metadata: dict[str, Any], key: str, default: Any = None) -> Any:
    """``metadata[key]``, else the environment variable for ``key``, else ``default`` (or the
    project default for ``key``)."""
    for value in (metadata.get(key), os.environ.get(ENV[key]) if key in ENV else None):
        if value not in (None, ""):
            return value
    return default if default is not None else DEFAULTS.get(key)


def scorer_settings(metadata: dict[str, Any]) -> dict[str, Any]:
    """The structure metrics' settings as resolved now (what every doc records)."""
    try:
        timeout_s = float(setting(metadata, "timeout_s"))
    except (TypeError, ValueError):
        raise ConfigError(f"timeout_s must be a number of seconds, got {setting(metadata, 'timeout_s')!r}") from None
    out = {"decomposer": str(setting(metadata, "decomposer")), "matcher": str(setting(metadata, "matcher")),
           "timeout_s": timeout_s, "eval_data": str(setting(metadata, "eval_data"))}
    if setting(metadata, "gsrm_engine"):  # how a local GSRM checkpoint runs: transformers or vllm
        out["gsrm_engine"] = str(setting(metadata, "gsrm_engine"))
    for key in ("gsrm_model", "judge_model"):  # the served model at a gsrm:/judge: URL that lists several
        if setting(metadata, key):
            out[key] = str(setting(metadata, key))
    return out


# -- prompts -------------------------------------------------------------------------------------


# -- the bundled eval set ------------------------------------------------------------------------


def bundled_eval_path() -> Path:
    return Path(str(resources.files("rlkd_bench") / "data" / "eval" / "structure_eval.jsonl"))


def build_eval_rows(n: int = EVAL_SIZE, seed: int = EVAL_SEED, decomposer: str = "heuristic") -> list[dict]:
    """Held-out synthetic problems with the teacher's steps, in the rlkd-data row schema."""
    from rlkd_bench.data.synthetic import generate
    from rlkd_bench.decompose import get_decomposer
    from rlkd_bench.rlkd_data import rlkd_row

    traces = [t.to_trace_row() for t in generate(n, seed=seed)]
    results = get_decomposer(decomposer).decompose(traces)
    rows = []
    for trace, res in zip(traces, results, strict=True):
        if res.ok and res.decomposition.steps:  # type: ignore[union-attr]
            row = rlkd_row(trace, res)
            rows.append({k: row[k] for k in EVAL_COLUMNS})
    return rows


def read_jsonl_rows(path: Path) -> list[dict[str, Any]]:
    from rlkd_bench.sources import read_records

    rows = []
    for line, rec in read_records(str(path)):
        if isinstance(rec, DataError):
            raise rec
        rec.setdefault("_line", line)
        rows.append(rec)
    return rows


def _read_table(source: str, *, split: str, name: str | None = None) -> list[dict[str, Any]]:
    """Rows from a local .jsonl/.json/.parquet/.csv file, a saved dataset (or DatasetDict) dir, an
    rlkd-data product dir (its ``dataset/``), or a Hub id; the errors say which setting to change."""
    import datasets

    p = Path(source).expanduser()
    if p.is_dir() and (p / "dataset" / "dataset_dict.json").exists():  # an rlkd-data product
        p = p / "dataset"
    try:
        if p.is_file() and p.suffix in (".jsonl", ".ndjson"):
            return read_jsonl_rows(p)
        if p.is_file():
            kind = {".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(p.suffix)
            if kind is None:
                raise ConfigError(f"{source}: unknown file type (use .jsonl, .json, .parquet or .csv)")
            return [dict(r) for r in datasets.load_dataset(kind, data_files=str(p), split="train")]
        if p.is_dir() and ((p / "dataset_dict.json").exists() or (p / "dataset_info.json").exists()):
            ds = datasets.load_from_disk(str(p))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise ConfigError(f"{source}: no split {split!r} (has {', '.join(ds)})")
                ds = ds[split]
            return [dict(r) for r in ds]
        if not p.exists() and (source.startswith((".", "/", "~")) or p.suffix):
            raise ConfigError(f"no such file or directory: {source}")
        return [dict(r) for r in datasets.load_dataset(source, name=name, split=split)]
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"cannot load {source!r} (split {split!r}): {e}") from e


def load_structure_rows(source: str, *, decomposer: str = "heuristic") -> list[dict[str, Any]]:
    """Eval rows with problem, gold and teacher steps. ``source``: ``bundled``, a file, a saved
    dataset, an rlkd-data product dir (its test split) or a Hub id (split ``test``). Rows with a
    teacher reasoning but no steps (a traces file) are decomposed here, once, by ``decomposer``."""
    rows = read_jsonl_rows(bundled_eval_path()) if source == BUNDLED else _read_table(source, split="test")
    where = "bundled eval set" if source == BUNDLED else source
    if not rows:
        raise DataError("no rows to evaluate", file=where)
    out, to_decompose, no_gold = [], [], []
    for i, r in enumerate(rows, start=1):
        line = r.pop("_line", i)
        problem = str(r.get("problem") or "").strip()
        if not problem:
            raise DataError("missing or empty", file=where, line=line, field="problem")
        if not str(r.get("gold") or "").strip():
            no_gold.append(line)
        steps = r.get("teacher_steps")
        reasoning = str(r.get("teacher_reasoning") or r.get("reasoning") or "")
        if not steps and not reasoning.strip():
            raise DataError("no teacher steps and no teacher reasoning to decompose", file=where, line=line,
                            field="teacher_steps")
        try:
            teacher = as_decomposition(steps or [])
        except DataError as e:
            raise DataError(e.reason, file=where, line=line, field="teacher_steps") from None
        row = {"id": str(r.get("id") or f"row-{i}"), "problem": problem, "gold": str(r.get("gold") or ""),
               "teacher_steps": [st.to_dict() for st in teacher.steps]}
        if not steps:
            to_decompose.append((row, reasoning, str(r.get("answer") or "")))
        out.append(row)
    if no_gold:
        raise_no_gold(where, no_gold, len(rows), "lines" if source == BUNDLED or is_jsonl(source) else "rows")
    if to_decompose:
        from rlkd_bench.decompose import get_decomposer

        results = get_decomposer(decomposer).decompose(
            [{"id": row["id"], "problem": row["problem"], "reasoning": reasoning, "answer": answer}
             for row, reasoning, answer in to_decompose])
        for (row, _, _), res in zip(to_decompose, results, strict=True):
            if res.ok:
                row["teacher_steps"] = [s.to_dict() for s in res.decomposition.steps]  # type: ignore[union-attr]
        failed = sum(not r["teacher_steps"] for r in out)
        if failed:
            log.warning("%s: %d of %d teacher traces could not be decomposed by %s; left out", where, failed,
                        len(out), decomposer)
        out = [r for r in out if r["teacher_steps"]]
        if not out:
            raise DataError(f"no teacher trace could be decomposed by {decomposer!r}", file=where)
    return out


def raise_no_gold(where: str, lines: list[int], total: int, unit: str = "rows") -> None:
    """Accuracy and pass@k need a gold answer on every row: without one they would read 0 where
    nothing was measured, so such eval data is refused, naming the rows."""
    shown = ", ".join(map(str, lines[:10])) + (f" and {len(lines) - 10} more" if len(lines) > 10 else "")
    raise DataError(f"no gold answer in {len(lines)} of {total} rows ({unit} {shown}); accuracy and pass@k "
                    "need one on every row: add it or leave those rows out",
                    file=where, line=lines[0] if len(lines) == 1 else None, field="gold")


_SETTINGS: dict[str, dict[str, Any]] = {}  # stamp (secrets redacted) -> the settings themselves


def public_spec(spec: str) -> str:
    """A decomposer/matcher/data spec as files may show it: any URL in it without credentials or
    query (``judge:http://u:key@h/v1`` -> ``judge:http://h/v1``); its secrets are registered, so
    log lines and results are scrubbed of them too."""
    from rlkd_bench.llm.redact import register_url_secrets, safe_url

    head, sep, rest = spec.partition(":")
    for prefix, url in (("", spec), (head + sep, rest)):
        if url.startswith(("http://", "https://")):
            register_url_secrets(url)
            return prefix + str(safe_url(url))
    return spec


def stamp_settings(settings: dict[str, Any]) -> str:
    """The settings as stamped into every doc (and so the per-sample log), secrets redacted."""
    public = {k: public_spec(v) if isinstance(v, str) else v for k, v in settings.items()}
    stamp = json.dumps(public, sort_keys=True)
    _SETTINGS[stamp] = dict(settings)
    return stamp


def settings_of(stamp: str) -> dict[str, Any]:
    """The settings behind a doc's stamp (the stamp itself when it hid nothing)."""
    return _SETTINGS.get(stamp) or json.loads(stamp)


def structure_docs(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """The docs of rlkd_structure / rlkd_diversity: rows + the prompt + the settings used."""
    settings = scorer_settings(metadata)
    style = str(setting(metadata, "prompt"))
    rows = load_structure_rows(settings["eval_data"], decomposer=settings["decomposer"])
    stamp = stamp_settings(settings)
    docs = []
    for r in rows:
        system, user = prompt_parts(r["problem"], style)
        docs.append({**r, "n_teacher_steps": len(r["teacher_steps"]), "system": system, "prompt": user,
                     "scorer": stamp})
    return docs


# -- the accuracy suite --------------------------------------------------------------------------


def _first(row: dict[str, Any], *names: str) -> Any:
    for n in names:
        if row.get(n) not in (None, ""):
            return row[n]
    return None


def reasoning_source(task: str, metadata: dict[str, Any]) -> tuple[str, str | None, str]:
    """(source, config, split) for an accuracy task: a local copy named by ``<key>`` metadata or
    ``RLKD_<TASK>_DATA``, else the Hub default."""
    spec = REASONING_SOURCES[task]
    local = metadata.get(spec["key"]) or os.environ.get(spec["env"])
    if local:
        return str(local), spec["name"], str(metadata.get(f"{spec['key']}_split") or spec["split"])
    return spec["path"], spec["name"], spec["split"]


def is_jsonl(source: str) -> bool:
    """Rows from this source carry their file line (``_line``), not just their position."""
    return Path(source).expanduser().suffix in (".jsonl", ".ndjson")


def load_reasoning_rows(task: str, metadata: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """(rows, where they come from): the local copy's path, or the Hub id, for error messages;
    rows from a .jsonl file carry their line as ``_line``."""
    source, name, split = reasoning_source(task, metadata)
    spec = REASONING_SOURCES[task]
    try:
        rows = _read_table(source, split=split, name=name)
    except ConfigError as e:
        raise ConfigError(f"{task}: {e}. Point it at a local copy with --metadata '{{\"{spec['key']}\": "
                          f"\"PATH\"}}' or {spec['env']}=PATH (a .jsonl/.parquet file or a saved dataset, "
                          f"in the schema of {spec['path']})") from e
    if not rows:
        raise DataError("no rows to evaluate", file=source)
    return rows, source


def math_docs(task: str, metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """MATH-500 / AIME rows (problem, answer) as docs with the zero-shot prompt."""
    style = str(setting(metadata, "prompt", "r1"))
    docs = []
    rows, where = load_reasoning_rows(task, metadata)
    for i, r in enumerate(rows, start=1):
        line = r.pop("_line", i)
        problem, gold = _first(r, "problem", "Problem", "question"), _first(r, "answer", "Answer", "gold")
        if problem is None or gold is None:
            raise DataError(f"row has no problem/answer (has {', '.join(map(str, r)) or 'nothing'}; the schema of "
                            f"{REASONING_SOURCES[task]['path']})", file=where, line=line)
        system, user = prompt_parts(str(problem), style)
        docs.append({"id": str(_first(r, "unique_id", "id", "ID") or i), "problem": str(problem),
                     "gold": str(gold), "system": system, "prompt": user})
    return docs


def shuffled_choices(question: str, correct: str, wrong: list[str]) -> tuple[list[str], str]:
    """The four options in an order fixed by the question text (the same on every run and
    machine), and the letter of the correct one."""
    options = [correct, *wrong]
    seed = int(hashlib.sha256(question.encode("utf-8")).hexdigest()[:16], 16)
    random.Random(seed).shuffle(options)
    return options, "ABCD"[options.index(correct)]


def gpqa_docs(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """GPQA rows (Question, Correct Answer, Incorrect Answer 1-3) as lettered multiple choice."""
    style = str(setting(metadata, "prompt", "r1"))
    docs = []
    rows, where = load_reasoning_rows("rlkd_gpqa_diamond", metadata)
    for i, r in enumerate(rows, start=1):
        line = r.pop("_line", i)
        cells = [_first(r, "Question"), _first(r, "Correct Answer"),
                 *[_first(r, f"Incorrect Answer {k}") for k in (1, 2, 3)]]
        if any(c is None for c in cells):
            raise DataError("row lacks Question / Correct Answer / Incorrect Answer 1-3 (the schema of "
                            "Idavidrein/gpqa)", file=where, line=line)
        question, correct, *wrong = (str(c).strip() for c in cells)
        options, gold = shuffled_choices(question, correct, wrong)
        body = question + "\n\n" + "\n".join(f"{letter}) {opt}" for letter, opt in zip("ABCD", options,
                                                                                        strict=True))
        if style == "r1":
            system, user = "", f"{GPQA_INSTRUCTION}\n\n{body}"
        else:
            system, user = prompt_parts(body, style)
        docs.append({"id": str(_first(r, "Record ID", "id") or i), "problem": body, "choices": options,
                     "gold": gold, "system": system, "prompt": user})
    return docs


def main() -> None:  # pragma: no cover - a maintenance command
    """Rebuild the bundled eval set (``python -m rlkd_bench.tasks.evaldata [N]``)."""
    import sys

    from rlkd_bench.products import write_jsonl

    n = int(sys.argv[1]) if len(sys.argv) > 1 else EVAL_SIZE
    path = bundled_eval_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    count = write_jsonl(path, build_eval_rows(n))
    print(f"wrote {count} rows to {path}")


if __name__ == "__main__":
    main()
