"""Plots and a table of final figures from training runs' logs (``rlkd-bench report``).

A run is what ``make train-rlkd`` (or any TRL trainer) leaves: a directory with
``trainer_state.json``, whose ``log_history`` holds one dict per logging step. Runs differ in
what they log (an SFT baseline has no rewards, a GRPO baseline no structure reward, an old run
fewer keys), so every figure is drawn from the keys that exist and a missing key is a gap, not an
error. Several runs are overlaid in each plot, labelled by run name, so RLKD and its baselines
read side by side.

It also reads lm-eval results (``rlkd-bench eval ... --output-path DIR``): each DIR is one arm and
seed (``rlkd-gsrm-seed2``), each ``samples_<task>.jsonl`` line one eval problem. Every metric is
summarised per arm as mean ± sd over seeds, with a bootstrap interval over eval problems; a gap
between two arms is judged by the paired test of ``rlkd_bench.stats`` (same problems, seeds and
problems resampled), never by whether two intervals overlap. A per-sample value that is None or
NaN is "not scored": counted, never averaged in as 0.

The report shows trouble rather than hiding it: an inf/NaN logged value is shown as such with a
warning naming the run and step, a run that stopped before ``max_steps`` is marked, the same run
given twice is refused, and ``--out`` may not be a product, a model or an input.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlkd_bench.errors import ConfigError, DataError
from rlkd_bench.products import MANIFEST, make_out_dir, product_of, write_json, write_text
from rlkd_bench.stats import ALPHA as STATS_ALPHA
from rlkd_bench.stats import POWER as STATS_POWER
from rlkd_bench.stats import TEST as STATS_TEST
from rlkd_bench.stats import PairedDiff, paired_diff

STATE = "trainer_state.json"
REWARD_KEY = re.compile(r"^rewards/(?P<name>[^/]+)/mean$")
TOTAL_REWARD = "reward"
LENGTH_KEYS = ("completions/mean_length", "completions/clipped_ratio")
LOSS_KEYS = ("loss", "mean_token_accuracy", "entropy")
END_KEYS = ("train_runtime", "train_loss")  # the trainer's closing row: a summary, not a step
REWARD_ORDER = ("accuracy", "format", "tag_count", "structure")  # the paper's; others follow by name


@dataclass
class Run:
    """One run's log: its label, where it came from, and the logged rows (train steps only)."""

    name: str
    path: Path
    history: list[dict[str, Any]]
    mode: str | None = None  # rlkd / grpo / sft, from the checkpoint's manifest when there is one
    global_step: int | None = None
    max_steps: int | None = None  # what the run was asked to do; a smaller global_step: it stopped early
    runtime_s: float | None = None  # the trainer's train_runtime, from its closing log row
    notes: list[str] = field(default_factory=list)

    @property
    def stopped(self) -> bool:
        """The run ended (interrupted, crashed, killed) before ``max_steps``."""
        return self.global_step is not None and bool(self.max_steps) and self.global_step < self.max_steps


# ---- reading --------------------------------------------------------------------------------------


def find_state(run_dir: str | Path) -> Path:
    """The ``trainer_state.json`` of a run: the file itself, ``DIR/trainer_state.json``, or the
    latest ``DIR/checkpoint-N/trainer_state.json`` (a run dir whose final checkpoint is missing)."""
    p = Path(run_dir)
    if not p.exists():
        raise ConfigError(f"{p}: no such run directory")
    if p.is_file():
        if p.name.endswith(".json"):
            return p
        raise DataError(f"not a run directory or a {STATE}", file=str(p))
    if (p / STATE).is_file():
        return p / STATE
    ckpts = sorted(p.glob(f"checkpoint-*/{STATE}"), key=lambda s: _step_of(s.parent.name))
    if ckpts:
        return ckpts[-1]
    raise DataError(
        f"no {STATE} here (nor in a checkpoint-N/ under it); expected the output_dir of "
        "`make train-rlkd` or a TRL checkpoint", file=str(p),
    )


def _step_of(name: str) -> int:
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else -1


def load_run(run_dir: str | Path, name: str | None = None) -> Run:
    """Read one run; only rows with a ``step`` and at least one number are kept."""
    state_path = find_state(run_dir)
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e.msg}", file=str(state_path), line=e.lineno) from None
    if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
        raise DataError("no 'log_history' list (not a trainer state)", file=str(state_path),
                        field="log_history")
    logged = [h for h in state["log_history"] if isinstance(h, dict) and isinstance(h.get("step"), (int, float))]
    rows = [h for h in logged if not any(k in h for k in END_KEYS)
            and any(_numeric(v) is not None for k, v in h.items() if k not in ("step", "epoch"))]
    end = next((h for h in reversed(logged) if any(k in h for k in END_KEYS)), {})
    steps = {k: v if isinstance(v, int) and not isinstance(v, bool) else None
             for k in ("global_step", "max_steps") for v in [state.get(k)]}
    run = Run(name=name or _default_name(Path(run_dir)), path=Path(run_dir), history=rows,
              global_step=steps["global_step"], max_steps=steps["max_steps"],
              runtime_s=_number(end.get("train_runtime")))
    manifest = state_path.parent / "manifest.json"
    if manifest.is_file():
        try:
            run.mode = (json.loads(manifest.read_text(encoding="utf-8")).get("params") or {}).get("mode")
        except json.JSONDecodeError:
            run.notes.append(f"{manifest}: not valid JSON; mode unknown")
    if not rows:
        run.notes.append(f"{state_path}: log_history has no logged training step")
    return run


def _default_name(p: Path) -> str:
    p = p.resolve()
    if p.is_file():
        p = p.parent
    return p.name


def load_runs(run_dirs: list[str | Path]) -> list[Run]:
    """Read every run; names that collide get their parent directory as a prefix. A run given
    twice (the same path, or two paths to the same log) is refused: it would be two rows."""
    if not run_dirs:
        raise ConfigError("give at least one RUN_DIR")
    seen_state: dict[Path, str | Path] = {}
    for d in run_dirs:
        state = find_state(d).resolve()
        if state in seen_state:
            first = seen_state[state]
            same = "given twice" if str(first) == str(d) else f"and {first} are the same run ({state})"
            raise ConfigError(f"RUN_DIR {d} {same}: each run may be given once")
        seen_state[state] = d
    runs = [load_run(d) for d in run_dirs]
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.name] = seen.get(r.name, 0) + 1
    for r in runs:
        if seen[r.name] > 1:
            r.name = f"{r.path.resolve().parent.name}/{r.name}"
    return runs


# ---- series and figures ---------------------------------------------------------------------------


def _numeric(v: Any) -> float | None:
    """A logged number as a float, inf and NaN included (a trainer logs them as such)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _number(v: Any) -> float | None:
    """A finite logged number, else None."""
    v = _numeric(v)
    return v if v is not None and math.isfinite(v) else None


def logged(run: Run, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of every number the run logged for ``key``, inf and NaN included."""
    xs, ys = [], []
    for h in run.history:
        v = _numeric(h.get(key))
        if v is not None:
            xs.append(float(h["step"]))
            ys.append(v)
    return xs, ys


def series(run: Run, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key`` that can be drawn: rows without it, or with inf/NaN, left out
    (the plots mark those steps; ``warnings`` names them)."""
    xs, ys = logged(run, key)
    keep = [i for i, y in enumerate(ys) if math.isfinite(y)]
    return [xs[i] for i in keep], [ys[i] for i in keep]


def final(run: Run, key: str) -> float | None:
    """The last value of ``key`` that the run logged, as logged: inf or NaN if that is what the
    last step gave (a previous finite value would hide the trouble); None if never logged."""
    _, ys = logged(run, key)
    return ys[-1] if ys else None


def warnings(runs: Sequence[Run]) -> list[str]:
    """Trouble the figures must not hide: every non-finite value (run, metric, steps) and every
    run that stopped before its ``max_steps``."""
    out = []
    for run in runs:
        if run.stopped:
            out.append(f"{run.name}: stopped at step {run.global_step} of {run.max_steps} "
                       "(interrupted or failed); its figures are those of an unfinished run.")
        keys: list[str] = []
        for h in run.history:
            keys += [k for k in h if k not in keys and k not in ("step", "epoch")]
        for key in keys:
            xs, ys = logged(run, key)
            bad = [(int(x), y) for x, y in zip(xs, ys, strict=True) if not math.isfinite(y)]
            if not bad:
                continue
            kinds = "/".join(sorted({_fmt(y) for _, y in bad}))
            if len(bad) == len(ys):
                out.append(f"{run.name}: {key} is {kinds} at every logged step ({len(ys)}).")
            else:
                steps = ", ".join(str(x) for x, _ in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
                last = " (its last logged value)" if not math.isfinite(ys[-1]) else ""
                out.append(f"{run.name}: {key} is {kinds} at step{'s' if len(bad) > 1 else ''} {steps}{last}.")
    return out


def reward_keys(runs: list[Run]) -> list[str]:
    """``rewards/<name>/mean`` keys of any run, in the order the runs logged them; total last."""
    names = {m["name"] for run in runs for h in run.history for k in h if (m := REWARD_KEY.match(k))}
    ordered = [n for n in REWARD_ORDER if n in names] + sorted(names - set(REWARD_ORDER))
    keys = [f"rewards/{n}/mean" for n in ordered]
    if any(logged(r, TOTAL_REWARD)[0] for r in runs):
        keys.append(TOTAL_REWARD)
    return keys


def structure_keys(runs: list[Run]) -> list[str]:
    """Structure alignment and its detail metrics: every key naming "structure" (no std)."""
    keys: list[str] = []
    for run in runs:
        for h in run.history:
            for k in h:
                if "structure" in k and not k.endswith("/std") and k not in keys:
                    keys.append(k)
    main = "rewards/structure/mean"
    return ([main] if main in keys else []) + sorted(k for k in keys if k != main)


def present(runs: list[Run], keys: tuple[str, ...] | list[str]) -> list[str]:
    """The keys some run logged a number for (NaN throughout counts: it is shown, not dropped)."""
    return [k for k in keys if any(logged(r, k)[0] for r in runs)]


def plot_panels(runs: list[Run], keys: list[str], path: Path, title: str) -> Path:
    """One panel per key, every run a labelled line; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlkd_bench.products import atomic_path

    n = len(keys)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        drawn = False
        for i, run in enumerate(runs):
            xs, ys = series(run, key)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=run.name, color=f"C{i % 10}")
                drawn = True
            lx, ly = logged(run, key)
            bad = [(x, y) for x, y in zip(lx, ly, strict=True) if not math.isfinite(y)]
            if bad:  # a non-finite value cannot be drawn: an x on the bottom edge at its step, named
                kinds = "/".join(sorted({_fmt(y) for _, y in bad}))
                what = f"{kinds} throughout" if not xs else f"{kinds} at {len(bad)} step{'s' if len(bad) > 1 else ''}"
                ax.scatter([x for x, _ in bad], [0.03] * len(bad), marker="x", color=f"C{i % 10}",
                           transform=ax.get_xaxis_transform(), clip_on=False, label=f"{run.name}: {what}")
                drawn = True
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            seen = any(key in h for r in runs for h in r.history)
            ax.text(0.5, 0.5, "logged, but never a number\n(every completion failed)" if seen else "not logged",
                    ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


# ---- the table and the report ---------------------------------------------------------------------


def _fmt(v: float | None) -> str:
    if v is None:
        return "–"
    if not math.isfinite(v):
        return "nan" if math.isnan(v) else "inf" if v > 0 else "-inf"
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"


def final_table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of final figures: steps, every reward, length, structure detail, loss."""
    cols = [*reward_keys(runs), *present(runs, LENGTH_KEYS)]
    cols += [k for k in structure_keys(runs) if k not in cols]
    cols += present(runs, LOSS_KEYS)
    header = ["run", "mode", "steps", "train time (s)", *cols]
    rows = []
    for r in runs:
        steps = r.global_step if r.global_step is not None else (int(r.history[-1]["step"]) if r.history else 0)
        shown = f"stopped at step {steps} of {r.max_steps}" if r.stopped else str(steps)
        rows.append([r.name, r.mode or "–", shown, _fmt(r.runtime_s), *[_fmt(final(r, k)) for k in cols]])
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join([":---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def summary_lines(runs: list[Run]) -> list[str]:
    """A few sentences: what each run reached, and which run leads on reward and structure."""
    out = []
    for r in runs:
        bits = [f"{len(r.history)} logged steps"]
        if r.stopped:
            bits.append(f"**stopped at step {r.global_step} of {r.max_steps}**")
        for key, label in ((TOTAL_REWARD, "reward"), ("rewards/accuracy/mean", "accuracy"),
                           ("rewards/structure/mean", "structure"), ("loss", "loss"),
                           ("completions/mean_length", "mean completion length")):
            v = final(r, key)
            if v is not None:
                bits.append(f"final {label} {_fmt(v)}")
        out.append(f"- **{r.name}**{f' ({r.mode})' if r.mode else ''}: " + ", ".join(bits) + ".")
    # the total reward sums different rewards in different arms, so runs are ranked on the parts
    # they share: accuracy, and structure alignment where it was scored
    for key, label in (("rewards/accuracy/mean", "accuracy reward"), ("rewards/structure/mean", "structure alignment")):
        scored = [(final(r, key), r.name) for r in runs]
        scored = [(v, n) for v, n in scored if v is not None and math.isfinite(v)]
        if len(scored) > 1:
            v, n = max(scored)
            leaders = [name for value, name in scored if value == v]
            out.append(f"- Highest final {label}: {n} ({_fmt(v)})." if len(leaders) == 1 else
                       f"- Final {label}: {', '.join(leaders)} tie at {_fmt(v)}.")
    for r in runs:
        out += [f"- note: {n}" for n in r.notes]
    return out


# ---- evaluation results ---------------------------------------------------------------------------

RESULTS = "results.json"
SEED_SUFFIX = re.compile(r"^(?P<arm>.+?)[-_](?:seed|s)(?P<seed>\d+)$")
# lm-eval's own CLI stamps its file names (samples_<task>_2025-01-31T12-00-00.123456.jsonl)
SAMPLES_FILE = re.compile(r"^samples_(?P<task>.+?)(?:_\d{4}-\d{2}-\d{2}T[\d-]+(?:\.\d+)?)?\.jsonl$")
NOT_METRICS = frozenset({"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter",
                         "metrics", "doc_hash", "prompt_hash", "target_hash"})
RESULT_META = frozenset({"name", "alias", "sample_len", "samples"})
BOOTSTRAP_N = 2000
CI_LEVEL = 0.95
MAX_EVAL_PANELS = 12  # more panels than this are unreadable; pass metrics= to choose


@dataclass
class EvalRun:
    """One eval dir: the arm and seed it stands for and, per ``<task>/<metric>``, its values."""

    name: str
    path: Path
    arm: str
    seed: int | None
    docs: dict[str, dict[str, float]]  # metric -> doc key -> value (NaN: not scored), from samples_<task>.jsonl
    aggregates: dict[str, float]  # metric -> value (NaN: nothing scored), from results.json, where no doc was logged
    higher_is_better: dict[str, bool] = field(default_factory=dict)  # "<task>/<metric>" -> bool

    def metrics(self) -> list[str]:
        """Every metric this dir has a number for, per-doc ones first, in the order found."""
        return [*self.docs, *(m for m in self.aggregates if m not in self.docs)]

    def value(self, metric: str) -> float | None:
        """This seed's figure: the mean over the docs scored for it (NaN when none was), else
        results.json's; None where this dir has no such metric."""
        docs = self.docs.get(metric)
        if not docs:
            return self.aggregates.get(metric)
        scored = [v for v in docs.values() if math.isfinite(v)]
        return statistics.fmean(scored) if scored else math.nan

    def unscored(self, metric: str) -> int:
        """Docs logged for ``metric`` without a value (None or NaN: the metric measured nothing)."""
        return sum(not math.isfinite(v) for v in (self.docs.get(metric) or {}).values())


def parse_arm_seed(name: str) -> tuple[str, int | None]:
    """``rlkd-gsrm-seed2`` -> (``rlkd-gsrm``, 2); a name without ``-seed<N>``/``-s<N>`` is one seed."""
    m = SEED_SUFFIX.match(name)
    return (m["arm"], int(m["seed"])) if m else (name, None)


def doc_key(row: Mapping[str, Any]) -> str | None:
    """What identifies an eval problem across seeds: ``doc_id``, and the doc's own ``id`` if any."""
    doc = row.get("doc")
    inner = doc.get("id") if isinstance(doc, dict) else None
    parts = [str(x) for x in (row.get("doc_id"), inner) if x is not None]
    return "|".join(parts) if parts else None


def _filtered(task: str, metric: str, flt: str, filters: set[str]) -> str:
    """``<task>/<metric>``; the filter is named only where a task logged more than one."""
    return f"{task}/{metric}" + (f",{flt}" if len(filters) > 1 else "")


def _row_metrics(row: dict[str, Any], path: Path, line: int) -> list[str]:
    names = row.get("metrics")
    if names is None:  # an older or hand-made log: every top-level number is a metric
        return [k for k, v in row.items() if k not in NOT_METRICS and (v is None or _number(v) is not None)]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError("'metrics' is not a list of metric names", file=str(path), line=line, field="metrics")
    return names


def read_samples(path: Path, task: str) -> dict[str, dict[str, float]]:
    """Per-doc values of one samples file: ``{<task>/<metric>: {doc key: value}}``.

    A None or NaN means the doc was not scored for that metric: it is kept as NaN (so it is counted
    as unscored, and left out of every mean), never as 0. A value that is no number at all (a list,
    a string) is not a per-doc figure and is skipped. A doc logged twice (same
    filter) counts once, at the mean of its scored values."""
    rows: list[tuple[str, str, list[str], dict[str, Any]]] = []
    with path.open(encoding="utf-8") as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(f"not valid JSON: {e.msg}", file=str(path), line=line) from None
            if not isinstance(row, dict):
                raise DataError("not a JSON object (one lm-eval sample per line)", file=str(path), line=line)
            key = doc_key(row)
            if key is None:
                raise DataError("no doc_id", file=str(path), line=line, field="doc_id")
            rows.append((key, str(row.get("filter", "")), _row_metrics(row, path, line), row))
    filters = {flt for _, flt, _, _ in rows}
    cells: dict[str, dict[str, list[float]]] = {}
    for key, flt, names, row in rows:
        for metric in names:
            raw = row.get(metric)
            v = _numeric(raw)
            if raw is not None and v is None:
                continue  # a list, a string: not a per-problem number (results.json has its aggregate)
            scored = cells.setdefault(_filtered(task, metric, flt, filters), {}).setdefault(key, [])
            if v is not None and math.isfinite(v):
                scored.append(v)
    return {m: {k: statistics.fmean(vs) if vs else math.nan for k, vs in docs.items()} for m, docs in cells.items()}


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e.msg}", file=str(path), line=e.lineno) from None


def read_results(path: Path) -> tuple[dict[str, float], dict[str, bool]]:
    """lm-eval's ``results.json``: each task's aggregate metrics, and which are higher-is-better."""
    data = _load_json(path)
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict):
        raise DataError("no 'results' dict (not an lm-eval results file)", file=str(path), field="results")
    values: dict[str, float] = {}
    for task, figures in results.items():
        if not isinstance(figures, dict):
            continue
        keys = [(*k.partition(",")[::2], v) for k, v in figures.items()
                if k not in RESULT_META and "_stderr" not in k]
        filters = {flt for _, flt, _ in keys}
        for metric, flt, v in keys:
            if v is None or (x := _numeric(v)) is not None:  # None/NaN: the metric measured nothing
                values[_filtered(task, metric, flt, filters)] = math.nan if v is None or not math.isfinite(x) else x
    higher = {f"{task}/{m}": bool(b) for task, d in (data.get("higher_is_better") or {}).items()
              if isinstance(d, dict) for m, b in d.items()}
    return values, higher


def load_eval(eval_dir: str | Path) -> EvalRun:
    """One ``rlkd-bench eval --output-path`` dir (or its ``results.json``): per-doc values from every
    ``samples_<task>.jsonl``, and results.json's aggregates for metrics no sample logged."""
    p = Path(eval_dir)
    if p.is_file() and p.name == RESULTS:
        p = p.parent
    if not p.is_dir():
        raise ConfigError(f"{p}: no such eval directory")
    files: dict[str, Path] = {}
    for f in sorted(p.glob("samples_*.jsonl")):  # a stamped name sorts after an older stamp
        if m := SAMPLES_FILE.match(f.name):
            files[m["task"]] = f
    if not (p / RESULTS).is_file() and not files:
        raise DataError(f"no {RESULTS} and no samples_<task>.jsonl here; expected the --output-path of "
                        "`rlkd-bench eval`", file=str(p))
    docs: dict[str, dict[str, float]] = {}
    for task in sorted(files):
        docs.update(read_samples(files[task], task))
    aggregates, higher = read_results(p / RESULTS) if (p / RESULTS).is_file() else ({}, {})
    name = p.resolve().name
    arm, seed = parse_arm_seed(name)
    return EvalRun(name=name, path=p, arm=arm, seed=seed, docs=docs,
                   aggregates={m: v for m, v in aggregates.items() if m not in docs}, higher_is_better=higher)


def load_evals(eval_dirs: Sequence[str | Path]) -> list[EvalRun]:
    """Read every eval dir; two dirs that claim the same arm and seed are an error."""
    if not eval_dirs:
        raise ConfigError("give at least one eval DIR")
    given: dict[Path, str | Path] = {}
    for d in eval_dirs:
        p = Path(d)
        where = (p.parent if p.is_file() and p.name == RESULTS else p).resolve()
        if where in given:
            first = given[where]
            same = "given twice" if str(first) == str(d) else f"and {first} are the same eval ({where})"
            raise ConfigError(f"--eval {d} {same}: each eval dir may be given once")
        given[where] = d
    evals = [load_eval(d) for d in eval_dirs]
    seen: dict[tuple[str, int | None], EvalRun] = {}
    for e in evals:
        if (first := seen.get((e.arm, e.seed))) is not None:
            seed = "no seed" if e.seed is None else f"seed {e.seed}"
            raise ConfigError(f"{first.path} and {e.path} are both arm {e.arm!r}, {seed}; "
                              "rename one (DIR names end in -seed<N>)")
        seen[(e.arm, e.seed)] = e
    return evals


def choose_metrics(evals: Sequence[EvalRun], metrics: Sequence[str] | None = None) -> list[str]:
    """The columns: ``metrics`` as given (a bare metric name is fine when one task has it), else
    every metric found, tasks by name, each task's metrics in the order it logs them."""
    found: list[str] = []
    for e in evals:
        found += [m for m in e.metrics() if m not in found]
    if metrics is None:
        return sorted(found, key=lambda m: m.split("/", 1)[0])
    chosen = []
    for want in metrics:
        hits = [want] if want in found else [m for m in found if m.split("/", 1)[-1] == want]
        if len(hits) != 1:
            why = "names several" if hits else "is not in any eval dir"
            options = ", ".join(hits or found) or "none found"
            raise ConfigError(f"metric {want!r} {why}; choose from: {options}")
        if hits[0] not in chosen:
            chosen.append(hits[0])
    return chosen


# ---- statistics: pure, on plain lists -------------------------------------------------------------


def seed_spread(per_seed_means: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample sd over seeds: the sd is how far another training seed may move the figure
    (None with one seed, where it cannot be told)."""
    if not per_seed_means:
        raise ValueError("no seed to summarise")
    mean = statistics.fmean(per_seed_means)
    return mean, statistics.stdev(per_seed_means) if len(per_seed_means) > 1 else None


def doc_means(per_seed_docs: Sequence[Mapping[str, float]]) -> list[float]:
    """Each doc's value averaged over the seeds that scored it, in doc-key order: the eval problem,
    not the (problem, seed) pair, is what the bootstrap resamples. An unscored (NaN) value is
    left out; a doc no seed scored has no mean."""
    pooled: dict[str, list[float]] = {}
    for docs in per_seed_docs:
        for key, v in docs.items():
            if math.isfinite(v):
                pooled.setdefault(key, []).append(v)
    return [statistics.fmean(pooled[k]) for k in sorted(pooled)]


def bootstrap_ci(values: Sequence[float], *, n: int = BOOTSTRAP_N, seed: int = 0,
                 level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile interval of the mean over ``n`` resamples of ``values`` with replacement: how much
    the figure owes to which eval problems were drawn. A fixed seed keeps the report reproducible."""
    import numpy as np

    if not values:
        raise ValueError("no value to resample")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if min(values) == max(values):  # exact, without float noise from summing
        return float(values[0]), float(values[0])
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // len(data))  # bounded memory for long eval sets
    means = np.concatenate([data[rng.integers(0, len(data), size=(min(chunk, n - i), len(data)))].mean(axis=1)
                            for i in range(0, n, chunk)])
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(lo), float(hi)


def metric_stats(evals: Sequence[EvalRun], metric: str) -> dict[str, Any] | None:
    """One arm's figures on one metric (``evals`` are its seeds); None where no seed has it."""
    per_seed = {e.seed: v for e in sorted(evals, key=_seed_order) if (v := e.value(metric)) is not None}
    if not per_seed:
        return None
    finite = [v for v in per_seed.values() if math.isfinite(v)]
    mean, sd = seed_spread(finite) if finite else (math.nan, None)
    per_doc = [e.docs[metric] for e in evals if e.docs.get(metric)]
    docs = doc_means(per_doc)
    return {"mean": mean, "sd": sd, "ci": list(bootstrap_ci(docs)) if docs else None,
            "n_seeds": len(per_seed), "n_docs": len(docs) if per_doc else None,
            "n_unscored": sum(e.unscored(metric) for e in evals), "per_seed": per_seed}


def _seed_order(e: EvalRun) -> tuple[bool, int]:
    return e.seed is not None, e.seed or 0


def arms(evals: Sequence[EvalRun]) -> dict[str, list[EvalRun]]:
    """Eval dirs grouped by arm, arms in the order first seen."""
    grouped: dict[str, list[EvalRun]] = {}
    for e in evals:
        grouped.setdefault(e.arm, []).append(e)
    return grouped


def summarise(evals: Sequence[EvalRun], metrics: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{arm: {metric: stats}}``; a metric an arm never logged is left out of that arm."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for arm, runs in arms(evals).items():
        out[arm] = {m: s for m in metrics if (s := metric_stats(runs, m)) is not None}
    return out


def eval_summary(eval_dirs: Sequence[str | Path], *, metrics: Sequence[str] | None = None) -> dict[str, Any]:
    """The statistics of ``write_report``'s evaluation section, without writing anything:
    ``{arm: {metric: {mean, sd, ci, n_seeds, n_docs, per_seed}}}``."""
    evals = load_evals(eval_dirs)
    return summarise(evals, choose_metrics(evals, metrics))


# ---- evaluation table, plot and words -------------------------------------------------------------


def eval_cell(stats: Mapping[str, Any] | None) -> str:
    """``0.412 ± 0.031 [0.35, 0.47]``: mean ± sd over seeds [bootstrap CI]; the sd is left out with
    one seed, the interval where no per-doc values were logged; ``(3 unscored)`` counts the
    (problem, seed) values the metric could not score; ``nan`` where it scored nothing."""
    if stats is None or stats.get("mean") is None:
        return "–"
    unscored = f" ({stats['n_unscored']} unscored)" if stats.get("n_unscored") else ""
    if not math.isfinite(stats["mean"]):
        return "nan (nothing scored)" + unscored
    cell = f"{stats['mean']:.3f}"
    if stats.get("sd") is not None:
        cell += f" ± {stats['sd']:.3f}"
    if stats.get("ci") is not None:
        lo, hi = stats["ci"]
        cell += f" [{lo:.2f}, {hi:.2f}]"
    return cell + unscored


def eval_table(summary: Mapping[str, Mapping[str, Any]], metrics: Sequence[str],
               evals: Sequence[EvalRun]) -> str:
    """``eval_table.md``: a note on the cell format, then one row per arm and one column per metric."""
    seeds = {arm: len(runs) for arm, runs in arms(evals).items()}
    n_docs = sorted({s["n_docs"] for figs in summary.values() for s in figs.values() if s["n_docs"]})
    docs = ("–" if not n_docs else str(n_docs[0]) if len(n_docs) == 1 else f"{n_docs[0]}–{n_docs[-1]}")
    note = (f"Each cell: mean ± sd over seeds [{CI_LEVEL:.0%} bootstrap interval over eval problems: "
            f"each problem's value averaged over the seeds that scored it, {BOOTSTRAP_N} resamples]. "
            "No sd with one seed; no interval where no per-problem values were logged; – where an arm "
            "has no value; \"unscored\": values the metric could not score (left out, not counted as 0). "
            f"Differences between arms: the paired test in REPORT.md. Seeds per arm: {', '.join(f'{a} {n}' for a, n in seeds.items())}. "
            f"Eval problems per metric: {docs}.")
    rows = [[arm, str(seeds[arm]), *[eval_cell(figs.get(m)) for m in metrics]]
            for arm, figs in summary.items()]
    return note + "\n\n" + markdown_table(["arm", "seeds", *metrics], rows)


def plot_eval(summary: Mapping[str, Mapping[str, Any]], metrics: Sequence[str], path: Path) -> Path:
    """One panel per metric: a bar per arm at its mean over seeds, the bootstrap interval as an
    error bar, each seed's figure as a dot; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlkd_bench.products import atomic_path

    names = list(summary)
    n = max(1, len(metrics))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(5.0, 0.9 * len(names) + 2) * cols, 3.6 * rows),
                             squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for x, arm in enumerate(names):
            s = summary[arm].get(metric)
            if s is None:
                continue
            if not math.isfinite(s["mean"]):
                ax.text(x, 0, "nan", ha="center", va="bottom", fontsize=8)
                continue
            ax.bar(x, s["mean"], width=0.6, color=f"C{x % 10}", alpha=0.6)
            if s["ci"] is not None:
                lo, hi = s["ci"]
                ax.errorbar(x, (lo + hi) / 2, yerr=(hi - lo) / 2, color="black", capsize=4, linewidth=1)
            seeds = list(s["per_seed"].values())
            ax.scatter([x + o for o in _spread(len(seeds))], seeds, color="black", s=14, zorder=3)
        ax.set_title(metric, fontsize=10)
        tilt = len(names) > 3
        ax.set_xticks(range(len(names)), names, rotation=30 if tilt else 0, ha="right" if tilt else "center",
                      fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    if not metrics:
        ax = axes.flat[0]
        ax.set_visible(True)
        ax.axis("off")
        ax.text(0.5, 0.5, "no metric found", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"Evaluation: mean over seeds, {CI_LEVEL:.0%} bootstrap interval over eval problems, "
                 "a dot per seed", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def _spread(k: int, width: float = 0.3) -> list[float]:
    """x offsets for ``k`` seed dots on one bar, so equal values do not hide each other."""
    return [0.0] if k == 1 else [width * (i / (k - 1) - 0.5) for i in range(k)]


def _higher(evals: Sequence[EvalRun], metric: str) -> bool:
    base = metric.split(",", 1)[0]
    return next((e.higher_is_better[base] for e in evals if base in e.higher_is_better), True)


def leader_line(metric: str, figures: Mapping[str, Mapping[str, Any]], *, higher: bool = True,
                paired: Callable[[str, str], PairedDiff | str] | None = None) -> str:
    """Which arm leads on ``metric`` (``figures``: arm -> stats) and whether the paired test
    (``paired(leader, runner_up)``) supports the gap; nothing beyond that is claimed."""
    nothing = sorted(a for a, s in figures.items() if not math.isfinite(s["mean"]))
    figures = {a: s for a, s in figures.items() if math.isfinite(s["mean"])}
    ranked = sorted(figures.items(), key=lambda a: -a[1]["mean"] if higher else a[1]["mean"])
    also = f" Nothing scored (nan): {', '.join(nothing)}." if nothing else ""
    if not ranked:
        return f"- `{metric}`: no arm has a value.{also}"
    if len(ranked) == 1:
        return f"- `{metric}`: only {ranked[0][0]} has a value ({ranked[0][1]['mean']:.3f}).{also}"
    (arm, best), (arm2, second) = ranked[:2]
    if best["mean"] == second["mean"]:
        tied = [a for a, s in ranked if s["mean"] == best["mean"]]
        return f"- `{metric}`: {', '.join(tied)} tie at {best['mean']:.3f}."
    side = "highest" if higher else "lowest (lower is better)"
    line = (f"- `{metric}`: {arm} has the {side} mean ({best['mean']:.3f}); "
            f"runner-up {arm2} ({second['mean']:.3f}). ")
    test = paired(arm, arm2) if paired is not None else "no per-problem values"
    if isinstance(test, str):
        return line + f"No paired test ({test}).{also}"
    verdict = ("the paired test supports it." if test.supported else
               "the paired test does not support it" + (" (the gap is below the MDE)." if abs(test.diff) < test.mde
                                                         else "."))
    return line + (f"Paired difference {test.diff:+.3f} [{test.ci[0]:+.3f}, {test.ci[1]:+.3f}], "
                   f"p {_p(test.p)}, MDE {test.mde:.3f}: {verdict}{also}")


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def compare_arms(evals_a: Sequence[EvalRun], evals_b: Sequence[EvalRun], metric: str) -> PairedDiff | str:
    """Arm A minus arm B on ``metric`` by the paired test (``rlkd_bench.stats``), from each seed's
    per-problem values; a string says why there is no test (no per-problem values, other problems)."""
    a = [e.docs[metric] for e in sorted(evals_a, key=_seed_order) if e.docs.get(metric)]
    b = [e.docs[metric] for e in sorted(evals_b, key=_seed_order) if e.docs.get(metric)]
    if not a or not b:
        return "no per-problem values"
    try:
        return paired_diff(a, b, n_boot=BOOTSTRAP_N, seed=0, level=CI_LEVEL)
    except ValueError as e:
        return str(e)


def differences(evals: Sequence[EvalRun], metrics: Sequence[str],
                pairs: Sequence[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """The paired test for each pair of arms (``(A, B)``: A minus B; default every arm minus every
    arm given after it, in the order the arms were given) on each metric."""
    grouped = arms(evals)
    names = list(grouped)
    if pairs is None:
        pairs = [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]
    unknown = sorted({x for pair in pairs for x in pair} - set(names))
    if unknown:
        raise ConfigError(f"no eval dir of arm(s) {', '.join(unknown)}; arms: {', '.join(names)}")
    rows = []
    for a, b in pairs:
        for m in metrics:
            r = compare_arms(grouped[a], grouped[b], m)
            rows.append({"a": a, "b": b, "metric": m,
                         **(r.to_dict() if isinstance(r, PairedDiff) else {"untested": r})})
    return rows


def diff_cells(row: Mapping[str, Any]) -> list[str]:
    """A differences-table row's figures: difference (bold where the paired test supports it),
    interval, p, MDE, and the design (problems x seeds of A/B, unscored values)."""
    if "untested" in row:
        return ["–", f"no test: {row['untested']}", "", "", ""]
    diff = f"{row['diff']:+.3f}"
    unscored = sum(row["n_unscored"])
    design = f"{row['n_problems']} × {row['n_seeds'][0]}/{row['n_seeds'][1]}" + (
        f" ({unscored} unscored)" if unscored else "")
    return [f"**{diff}**" if row["supported"] else diff, f"[{row['ci'][0]:+.3f}, {row['ci'][1]:+.3f}]",
            _p(row["p"]).removeprefix("= "), f"{row['mde']:.3f}", design]


def differences_note(n_tests: int) -> str:
    """What the differences table's numbers are (the same words for the report and the study)."""
    return (f"Paired test: both arms on the same eval problems. Difference: mean over problems of (A − B), "
            f"each problem averaged over an arm's seeds. Interval ({CI_LEVEL:.0%}) and p: {STATS_TEST} "
            f"({BOOTSTRAP_N} replicates, seeded). MDE: the smallest true difference this design detects "
            f"with {STATS_POWER:.0%} power at a two-sided {STATS_ALPHA:.0%} level ((z₀.₉₇₅ + z₀.₈) × SE). "
            f"**Bold**: p < {STATS_ALPHA} and an interval that excludes 0 (the only differences called real). "
            f"Design: problems × seeds of A/B. p is per comparison, not corrected for the {n_tests} made here.")


def differences_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """``| A − B | metric | difference | 95% paired CI | p | MDE | problems × seeds |``."""
    header = ["A − B", "metric", "difference", f"{CI_LEVEL:.0%} paired CI", "p", f"MDE ({STATS_POWER:.0%})",
              "problems × seeds"]
    body = [[f"{r['a']} − {r['b']}", r["metric"], *diff_cells(r)] for r in rows]
    return markdown_table(header, body)


def eval_section(evals: Sequence[EvalRun], summary: Mapping[str, Mapping[str, Any]], metrics: Sequence[str],
                 table: str, plotted: Sequence[str], diffs: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """The ``## Evaluation`` lines of REPORT.md: where the results came from, table, plot, leaders."""
    where = ", ".join(f"{a} ({', '.join(f'`{e.name}`' for e in runs)})" for a, runs in arms(evals).items())
    doc = ["## Evaluation", "", f"lm-eval results by arm: {where}.", "", table, "![Evaluation](eval.png)", "",
           f"Bars: mean over seeds; error bars: {CI_LEVEL:.0%} bootstrap interval over eval problems; "
           "dots: each seed.", ""]
    if left := [m for m in metrics if m not in plotted]:
        doc += [f"Not plotted (more than {MAX_EVAL_PANELS} metrics; choose them with --metric): "
                + ", ".join(f"`{m}`" for m in left) + ".", ""]
    grouped = arms(evals)
    doc += [leader_line(m, {a: figs[m] for a, figs in summary.items() if m in figs}, higher=_higher(evals, m),
                        paired=lambda a, b, m=m: compare_arms(grouped[a], grouped[b], m))
            for m in metrics]
    if diffs:
        doc += ["", "### Differences between arms", "", differences_note(sum("untested" not in r for r in diffs)),
                "", differences_table(diffs)]
    return doc


# ---- the report -----------------------------------------------------------------------------------


def check_report_out(out: Path, inputs: Sequence[str | Path] = ()) -> None:
    """Refuse an ``--out`` that is, or lies inside, a checkpoint or data product (a manifest.json,
    a model's config.json, a trainer_state.json) or one of the report's own inputs: the report's
    files would mix into it, and ``publish`` would upload them with it."""
    here = out.absolute().resolve()
    for d in (here, *here.parents):
        if not d.is_dir():
            continue
        what = (f"a {product_of(d) or 'non-rlkd-bench'} product ({MANIFEST})" if (d / MANIFEST).is_file() else
                "a model (config.json and weights)" if _is_model_dir(d) else
                f"a training run ({STATE})" if (d / STATE).is_file() else None)
        if what:
            where = "is" if d == here else f"is inside {d}, which is"
            raise ConfigError(f"--out {out} {where} {what}: report files would mix into it (and be "
                              "published with it); use another --out, e.g. outputs/report")
    for src in inputs:
        there = Path(src).absolute().resolve()
        there = there.parent if there.is_file() else there
        if here == there or there in here.parents:
            raise ConfigError(f"--out {out} {'is' if here == there else 'is inside'} the input {src}; "
                              "use another --out, e.g. outputs/report")


def _is_model_dir(d: Path) -> bool:
    """A transformers checkpoint: config.json beside weights (publish's test for a model)."""
    return (d / "config.json").is_file() and any(
        next(d.glob(f"*{ext}"), None) is not None for ext in (".safetensors", ".bin", ".gguf", ".pt"))


def write_report(run_dirs: Sequence[str | Path], out: str | Path, *, eval_dirs: Sequence[str | Path] = (),
                 metrics: Sequence[str] | None = None, pairs: Sequence[tuple[str, str]] | None = None
                 ) -> dict[str, Any]:
    """Plots, ``table.md``, ``REPORT.md`` and ``summary.json`` in ``out``; returns what was written.

    With ``eval_dirs`` also ``eval_table.md``, ``eval.png`` and an evaluation section (``metrics``
    chooses and orders its columns) with the paired test for ``pairs`` of arms (A, B: A minus B;
    default every arm minus each arm given after it); with only ``eval_dirs`` there are no
    training sections. ``out`` may not be a product or an input (``check_report_out``).
    Everything is read and checked before anything is written."""
    if not run_dirs and not eval_dirs:
        raise ConfigError("give at least one RUN_DIR or --eval DIR")
    out = Path(out)
    check_report_out(out, [*run_dirs, *eval_dirs])
    runs = load_runs(list(run_dirs)) if run_dirs else []
    evals = load_evals(eval_dirs) if eval_dirs else []
    chosen = choose_metrics(evals, metrics) if evals else []
    make_out_dir(out)
    if runs:
        result, doc = _write_training(runs, out)
    else:
        result = {"out": str(out), "runs": [], "plots": [], "table": None, "report": "REPORT.md", "final": {}}
        doc = ["# Evaluation report"]
    if evals:
        summary = summarise(evals, chosen)
        table = eval_table(summary, chosen, evals)
        write_text(out / "eval_table.md", table)
        plotted = chosen if metrics is not None else chosen[:MAX_EVAL_PANELS]
        plot_eval(summary, plotted, out / "eval.png")
        while doc and not doc[-1].strip():
            doc.pop()
        diffs = differences(evals, chosen, pairs)
        doc += ["", *eval_section(evals, summary, chosen, table, plotted, diffs)]
        result.update(plots=sorted([*result["plots"], "eval.png"]), eval_table="eval_table.md", eval=summary,
                      differences=diffs)
    write_text(out / "REPORT.md", "\n".join(doc).rstrip() + "\n")
    write_json(out / "summary.json", result)
    return result


def _write_training(runs: list[Run], out: Path) -> tuple[dict[str, Any], list[str]]:
    """The training plots and ``table.md``; returns the summary and REPORT.md's lines so far."""
    plots: dict[str, str] = {}
    groups = (
        ("rewards.png", reward_keys(runs), "Reward components"),
        ("completion_length.png", present(runs, LENGTH_KEYS), "Completion length"),
        ("structure.png", structure_keys(runs), "Structure alignment to the teacher"),
        ("loss.png", present(runs, LOSS_KEYS), "Training loss"),
    )
    for fname, keys, title in groups:
        if keys:
            plot_panels(runs, keys, out / fname, title)
            plots[fname] = title
    header, rows = final_table(runs)
    table = markdown_table(header, rows)
    write_text(out / "table.md", table)
    summary = summary_lines(runs)
    missing = [t for f, _, t in groups if f not in plots]
    trouble = warnings(runs)
    doc = ["# Training report", "", "Runs: " + ", ".join(f"`{r.name}` ({r.path})" for r in runs), ""]
    if trouble:
        doc += ["## Warnings", "", *[f"- **{w}**" for w in trouble], ""]
    doc += ["## Summary", "", *summary, "", "## Final figures", "",
            "Last logged value of each metric, as logged (inf or nan where that is what the run logged "
            "last; – where a run did not log it).", "", table]
    for fname, title in plots.items():
        doc += [f"## {title}", "", f"![{title}]({fname})", ""]
    if missing:
        doc += ["", "Not plotted (no run logged them): " + ", ".join(missing) + "."]
    result = {"out": str(out), "runs": [r.name for r in runs], "plots": sorted(plots),
              "table": "table.md", "report": "REPORT.md", "warnings": trouble,
              "stopped": {r.name: {"global_step": r.global_step, "max_steps": r.max_steps} for r in runs if r.stopped},
              "final": {r.name: {h: c for h, c in zip(header[1:], row[1:], strict=True)}
                        for r, row in zip(runs, rows, strict=True)}}
    return result, doc
