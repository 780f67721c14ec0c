"""Plots and a table of final figures from training runs' logs (``rlkd-bench report``).

A run is what ``make train-rlkd`` (or any TRL trainer) leaves: a directory with
``trainer_state.json``, whose ``log_history`` holds one dict per logging step. Runs differ in
what they log (an SFT baseline has no rewards, a GRPO baseline no structure reward, an old run
fewer keys), so every figure is drawn from the keys that exist and a missing key is a gap, not an
error. Several runs are overlaid in each plot, labelled by run name, so RLKD and its baselines
read side by side.
"""

from __future__ import annotations

import json
import math
import re
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


def write_report(run_dirs: list[str | Path], out: str | Path) -> dict[str, Any]:
    """Plots, ``table.md``, ``REPORT.md`` and ``summary.json`` in ``out``; returns what was written."""
    runs = load_runs(run_dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
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
    write_text(out / "REPORT.md", "\n".join(doc).rstrip() + "\n")
    result = {"out": str(out), "runs": [r.name for r in runs], "plots": sorted(plots),
              "table": "table.md", "report": "REPORT.md",
              "final": {r.name: {h: c for h, c in zip(header[1:], row[1:], strict=True)}
                        for r, row in zip(runs, rows, strict=True)}}
    write_json(out / "summary.json", result)
    return result
