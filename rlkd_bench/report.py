"""Plots and a table of final figures from training runs' logs (``rlkd-bench report``).

A run is what ``make train-rlkd`` (or any TRL trainer) leaves: a directory with
``trainer_state.json``, whose ``log_history`` holds one dict per logging step. Runs differ in
what they log (an SFT baseline has no rewards, a GRPO baseline no structure reward, an old run
fewer keys), so every figure is drawn from the keys that exist and a missing key is a gap, not an
error. Several runs are overlaid in each plot, labelled by run name, so RLKD and its baselines
read side by side.

It also reads lm-eval results (``rlkd-bench eval ... --output-path DIR``): each DIR is one arm and
seed (``rlkd-gsrm-seed2``), each ``samples_<task>.jsonl`` line one eval problem. Every metric is
summarised per arm as mean ± sd over seeds, with a bootstrap interval over eval problems, so a gap
between arms can be read against both the seed noise and the problem-sampling noise.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlkd_bench.errors import ConfigError, DataError
from rlkd_bench.products import write_json, write_text

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
    runtime_s: float | None = None  # the trainer's train_runtime, from its closing log row
    notes: list[str] = field(default_factory=list)


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
            and any(_number(v) is not None for k, v in h.items() if k not in ("step", "epoch"))]
    end = next((h for h in reversed(logged) if any(k in h for k in END_KEYS)), {})
    run = Run(name=name or _default_name(Path(run_dir)), path=Path(run_dir), history=rows,
              global_step=state.get("global_step"), runtime_s=_number(end.get("train_runtime")))
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
    """Read every run; names that collide get their parent directory as a prefix."""
    if not run_dirs:
        raise ConfigError("give at least one RUN_DIR")
    runs = [load_run(d) for d in run_dirs]
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.name] = seen.get(r.name, 0) + 1
    for r in runs:
        if seen[r.name] > 1:
            r.name = f"{r.path.resolve().parent.name}/{r.name}"
    return runs


# ---- series and figures ---------------------------------------------------------------------------


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def series(run: Run, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key`` over the run; rows without it, or with NaN, are left out."""
    xs, ys = [], []
    for h in run.history:
        v = _number(h.get(key))
        if v is not None:
            xs.append(float(h["step"]))
            ys.append(v)
    return xs, ys


def final(run: Run, key: str) -> float | None:
    """The last finite value of ``key`` that the run logged."""
    _, ys = series(run, key)
    return ys[-1] if ys else None


def reward_keys(runs: list[Run]) -> list[str]:
    """``rewards/<name>/mean`` keys of any run, in the order the runs logged them; total last."""
    names = {m["name"] for run in runs for h in run.history for k in h if (m := REWARD_KEY.match(k))}
    ordered = [n for n in REWARD_ORDER if n in names] + sorted(names - set(REWARD_ORDER))
    keys = [f"rewards/{n}/mean" for n in ordered]
    if any(final(r, TOTAL_REWARD) is not None for r in runs):
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
    return [k for k in keys if any(series(r, k)[0] for r in runs)]


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
        for run in runs:
            xs, ys = series(run, key)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=run.name)
                drawn = True
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            logged = any(key in h for r in runs for h in r.history)
            ax.text(0.5, 0.5, "logged, but never a number\n(every completion failed)" if logged else "not logged",
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
        rows.append([r.name, r.mode or "–", str(steps), _fmt(r.runtime_s), *[_fmt(final(r, k)) for k in cols]])
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
        scored = [(v, n) for v, n in scored if v is not None]
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
    docs: dict[str, dict[str, float]]  # metric -> doc key -> value, from samples_<task>.jsonl
    aggregates: dict[str, float]  # metric -> value, from results.json, where no doc was logged
    higher_is_better: dict[str, bool] = field(default_factory=dict)  # "<task>/<metric>" -> bool

    def metrics(self) -> list[str]:
        """Every metric this dir has a number for, per-doc ones first, in the order found."""
        return [*self.docs, *(m for m in self.aggregates if m not in self.docs)]

    def value(self, metric: str) -> float | None:
        """This seed's figure: the mean over the docs scored for it, else results.json's."""
        docs = self.docs.get(metric)
        return statistics.fmean(docs.values()) if docs else self.aggregates.get(metric)


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

    A None, NaN or non-number means the doc was not scored for that metric: it is left out, not
    counted as 0. A doc logged twice (same filter) counts once, at its mean."""
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
            v = _number(row.get(metric))
            if v is not None:
                cells.setdefault(_filtered(task, metric, flt, filters), {}).setdefault(key, []).append(v)
    return {m: {k: statistics.fmean(vs) for k, vs in docs.items()} for m, docs in cells.items()}


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
            if (x := _number(v)) is not None:
                values[_filtered(task, metric, flt, filters)] = x
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
    not the (problem, seed) pair, is what the bootstrap resamples."""
    pooled: dict[str, list[float]] = {}
    for docs in per_seed_docs:
        for key, v in docs.items():
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
    mean, sd = seed_spread(list(per_seed.values()))
    docs = doc_means([e.docs[metric] for e in evals if e.docs.get(metric)])
    return {"mean": mean, "sd": sd, "ci": list(bootstrap_ci(docs)) if docs else None,
            "n_seeds": len(per_seed), "n_docs": len(docs) if docs else None, "per_seed": per_seed}


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
    one seed, the interval where no per-doc values were logged."""
    if stats is None or stats.get("mean") is None:
        return "–"
    cell = f"{stats['mean']:.3f}"
    if stats.get("sd") is not None:
        cell += f" ± {stats['sd']:.3f}"
    if stats.get("ci") is not None:
        lo, hi = stats["ci"]
        cell += f" [{lo:.2f}, {hi:.2f}]"
    return cell


def eval_table(summary: Mapping[str, Mapping[str, Any]], metrics: Sequence[str],
               evals: Sequence[EvalRun]) -> str:
    """``eval_table.md``: a note on the cell format, then one row per arm and one column per metric."""
    seeds = {arm: len(runs) for arm, runs in arms(evals).items()}
    n_docs = sorted({s["n_docs"] for figs in summary.values() for s in figs.values() if s["n_docs"]})
    docs = ("–" if not n_docs else str(n_docs[0]) if len(n_docs) == 1 else f"{n_docs[0]}–{n_docs[-1]}")
    note = (f"Each cell: mean ± sd over seeds [{CI_LEVEL:.0%} bootstrap interval over eval problems: "
            f"each problem's value averaged over the seeds that scored it, {BOOTSTRAP_N} resamples]. "
            "No sd with one seed; no interval where no per-problem values were logged; – where an arm "
            f"has no value. Seeds per arm: {', '.join(f'{a} {n}' for a, n in seeds.items())}. "
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


def leader_line(metric: str, figures: Mapping[str, Mapping[str, Any]], *, higher: bool = True) -> str:
    """Which arm leads on ``metric`` (``figures``: arm -> stats) and whether its interval overlaps
    the runner-up's; nothing beyond that is claimed."""
    ranked = sorted(figures.items(), key=lambda a: -a[1]["mean"] if higher else a[1]["mean"])
    if not ranked:
        return f"- `{metric}`: no arm has a value."
    if len(ranked) == 1:
        return f"- `{metric}`: only {ranked[0][0]} has a value ({ranked[0][1]['mean']:.3f})."
    (arm, best), (arm2, second) = ranked[:2]
    if best["mean"] == second["mean"]:
        tied = [a for a, s in ranked if s["mean"] == best["mean"]]
        return f"- `{metric}`: {', '.join(tied)} tie at {best['mean']:.3f}."
    side = "highest" if higher else "lowest (lower is better)"
    line = (f"- `{metric}`: {arm} has the {side} mean ({best['mean']:.3f}); "
            f"runner-up {arm2} ({second['mean']:.3f}). ")
    if best["ci"] is None or second["ci"] is None:
        return line + "No interval to compare (no per-problem values)."
    (lo, hi), (lo2, hi2) = best["ci"], second["ci"]
    overlap = lo <= hi2 and lo2 <= hi
    return line + (f"Their {CI_LEVEL:.0%} intervals [{lo:.2f}, {hi:.2f}] and [{lo2:.2f}, {hi2:.2f}] "
                   + ("overlap." if overlap else "do not overlap."))


def eval_section(evals: Sequence[EvalRun], summary: Mapping[str, Mapping[str, Any]], metrics: Sequence[str],
                 table: str, plotted: Sequence[str]) -> list[str]:
    """The ``## Evaluation`` lines of REPORT.md: where the results came from, table, plot, leaders."""
    where = ", ".join(f"{a} ({', '.join(f'`{e.name}`' for e in runs)})" for a, runs in arms(evals).items())
    doc = ["## Evaluation", "", f"lm-eval results by arm: {where}.", "", table, "![Evaluation](eval.png)", "",
           f"Bars: mean over seeds; error bars: {CI_LEVEL:.0%} bootstrap interval over eval problems; "
           "dots: each seed.", ""]
    if left := [m for m in metrics if m not in plotted]:
        doc += [f"Not plotted (more than {MAX_EVAL_PANELS} metrics; choose them with --metric): "
                + ", ".join(f"`{m}`" for m in left) + ".", ""]
    doc += [leader_line(m, {a: figs[m] for a, figs in summary.items() if m in figs}, higher=_higher(evals, m))
            for m in metrics]
    return doc


# ---- the report -----------------------------------------------------------------------------------


def write_report(run_dirs: Sequence[str | Path], out: str | Path, *, eval_dirs: Sequence[str | Path] = (),
                 metrics: Sequence[str] | None = None) -> dict[str, Any]:
    """Plots, ``table.md``, ``REPORT.md`` and ``summary.json`` in ``out``; returns what was written.

    With ``eval_dirs`` also ``eval_table.md``, ``eval.png`` and an evaluation section (``metrics``
    chooses and orders its columns); with only ``eval_dirs`` there are no training sections.
    Everything is read and checked before anything is written."""
    if not run_dirs and not eval_dirs:
        raise ConfigError("give at least one RUN_DIR or --eval DIR")
    runs = load_runs(list(run_dirs)) if run_dirs else []
    evals = load_evals(eval_dirs) if eval_dirs else []
    chosen = choose_metrics(evals, metrics) if evals else []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
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
        doc += ["", *eval_section(evals, summary, chosen, table, plotted)]
        result.update(plots=sorted([*result["plots"], "eval.png"]), eval_table="eval_table.md", eval=summary)
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
    doc = ["# Training report", "", "Runs: " + ", ".join(f"`{r.name}` ({r.path})" for r in runs), "",
           "## Summary", "", *summary, "", "## Final figures", "",
           "Last logged value of each metric (– where a run did not log it).", "", table]
    for fname, title in plots.items():
        doc += [f"## {title}", "", f"![{title}]({fname})", ""]
    if missing:
        doc += ["", "Not plotted (no run logged them): " + ", ".join(missing) + "."]
    result = {"out": str(out), "runs": [r.name for r in runs], "plots": sorted(plots),
              "table": "table.md", "report": "REPORT.md",
              "final": {r.name: {h: c for h, c in zip(header[1:], row[1:], strict=True)}
                        for r, row in zip(runs, rows, strict=True)}}
    return result, doc
