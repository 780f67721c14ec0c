"""A small world whose reasoning structure is known, for RLKD in miniature (``make mini-study``).

A problem defines a few named quantities, some from numbers (``a=16-4``, ``b=8+8``) and some from
others (``z=a+b``; or ``u=a-b``, ``z=c+u``), one per line, and asks for ``z``. Its sub-problems
are the quantities; the dependencies between them leave 2, 6 or 8 valid orders (``a`` then ``b``,
or ``b`` then ``a``, before ``z``): the "implicit multi-branch structure" RLKD is about, with the
branches countable.

The programmatic teacher (``world:teacher``, an ``Engine`` so ``rlkd-bench traces --generate``
samples it like any model) writes short R1-style traces: it says what it needs, picks the next
quantity and says why (by a rule: the bigger numbers first; or at random, and then it says
so), computes it on its own line, sometimes checks a result or considers a branch that is not
ready yet. A sample sometimes slips on one sum and ends wrong; verification rejects it, as it
would a real teacher's wrong sample.

``parse`` is the world's exact decomposer: it reads a trace of this world back into steps in the
toolkit's step format, and gives, on every teacher trace, the decomposition the teacher wrote
(``Trace.truth``; tests/test_world.py checks that on 1,200 traces). It is a real algorithm for this
one world and is named as such (``--decomposer world``), never a stand-in for a model.

Numbers stay small (sums and differences under 100) so a tiny model can learn them. Everything
is drawn from ``random.Random`` seeded per item: problem ``i`` of ``problems(n, seed)`` depends
only on ``(seed, i)``, and a teacher sample only on the problem and its sampling seed.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import permutations
from typing import Any

from rlkd_bench.structure import Decomposition, Step

SOURCE = "rlkd-bench/world"
DOMAIN = "math"
TEACHER_MODEL = "teacher"
SHAPES = ("pair", "triple", "chain")
NO_REASON = "No reason given."
# The bundled eval set uses synthetic seed 8008; the study's worlds use their own seeds.


@dataclass(frozen=True)
class Quantity:
    """``name = args[0] op args[1] ...``; an arg is a number or another quantity's name."""

    name: str
    op: str  # "+" or "-"
    args: tuple[int | str, ...]

    def expr(self) -> str:
        return self.op.join(str(a) for a in self.args)

    @property
    def deps(self) -> tuple[str, ...]:
        return tuple(a for a in self.args if isinstance(a, str))


@dataclass(frozen=True)
class Problem:
    """One world problem: quantities in the order the text lists them, and the one asked for."""

    id: str
    quantities: tuple[Quantity, ...]
    goal: str

    @property
    def by_name(self) -> dict[str, Quantity]:
        return {q.name: q for q in self.quantities}

    def text(self) -> str:
        # one definition per line, as the trace writes its equations: the same tokens, easy to copy
        return "Let\n" + "\n".join(f"{q.name}={q.expr()}" for q in self.quantities) + f"\nFind {self.goal}."

    def values(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name in self.order_of_evaluation():
            q = self.by_name[name]
            vals = [out[a] if isinstance(a, str) else a for a in q.args]
            out[name] = apply(q.op, vals)
        return out

    @property
    def gold(self) -> int:
        return self.values()[self.goal]

    def parent(self, name: str) -> str | None:
        return next((q.name for q in self.quantities if name in q.deps), None)

    def order_of_evaluation(self) -> list[str]:
        """One valid order (leaves first, listing order): enough to compute the values."""
        done: list[str] = []
        while len(done) < len(self.quantities):
            for q in self.quantities:
                if q.name not in done and all(d in done for d in q.deps):
                    done.append(q.name)
        return done

    def valid_orders(self) -> list[tuple[str, ...]]:
        """Every order of the sub-problems that respects the dependencies (the branches)."""
        names = [q.name for q in self.quantities]
        return [p for p in permutations(names) if respects(self, p)]

    def row(self) -> dict[str, Any]:
        """The problem as a traces-input row (``rlkd-bench traces --generate`` reads it)."""
        return {"id": self.id, "domain": DOMAIN, "problem": self.text(), "gold": str(self.gold),
                "n_valid_orders": len(self.valid_orders())}


def apply(op: str, values: list[int]) -> int:
    acc = values[0]
    for v in values[1:]:
        acc = acc + v if op == "+" else acc - v
    return acc


def respects(problem: Problem, order: Iterable[str]) -> bool:
    """Whether ``order`` names every quantity once, each after the ones it needs."""
    order = list(order)
    names = {q.name for q in problem.quantities}
    if len(order) != len(names) or set(order) != names:
        return False
    seen: set[str] = set()
    for name in order:
        if not set(problem.by_name[name].deps) <= seen:
            return False
        seen.add(name)
    return True


# ---- problems ----------------------------------------------------------------------------------


def _rng(*parts: Any) -> random.Random:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _leaf(rng: random.Random, name: str) -> Quantity:
    if rng.random() < 0.5:
        return Quantity(name, "+", (rng.randint(1, 9), rng.randint(1, 9)))
    x = rng.randint(10, 18)
    return Quantity(name, "-", (x, rng.randint(1, 9)))


def _combine(rng: random.Random, name: str, args: list[str], values: dict[str, int]) -> Quantity:
    """``+`` of the inputs, or ``-`` when that stays at or above zero."""
    if len(args) == 2 and values[args[0]] >= values[args[1]] and rng.random() < 0.5:
        return Quantity(name, "-", tuple(args))
    return Quantity(name, "+", tuple(args))


def make_problem(seed: int, index: int) -> Problem:
    """Problem ``index`` of world ``seed``: a shape and small numbers. The inputs are named a, b, c
    in the order listed, a combination of two of them u, the goal z: the names say the role, the
    numbers and the shape say the order (a tiny model need not learn to copy arbitrary names)."""
    rng = _rng("world", seed, index)
    shape = rng.choice(SHAPES)
    n_leaves = 2 if shape == "pair" else 3
    leaves = [_leaf(rng, name) for name in "abc"[:n_leaves]]
    values = {q.name: apply(q.op, list(q.args)) for q in leaves}  # type: ignore[arg-type]
    names = [q.name for q in leaves]
    if shape == "pair":
        composite = [_combine(rng, "z", names, values)]
    elif shape == "triple":
        composite = [Quantity("z", "+", tuple(names))]
    else:
        pair = sorted(rng.sample(names, 2))
        rest = next(n for n in names if n not in pair)
        u = _combine(rng, "u", pair, values)
        values[u.name] = apply(u.op, [values[a] for a in u.deps])
        last = [u.name, rest]
        rng.shuffle(last)
        composite = [u, _combine(rng, "z", last, values)]
    quantities = tuple(leaves + composite)
    return Problem(id=f"world-{seed}-{index}", quantities=quantities, goal="z")


def problems(n: int, seed: int) -> list[Problem]:
    return [make_problem(seed, i) for i in range(n)]


_DEF = re.compile(r"\b([a-z])=([0-9a-z]+(?:[+-][0-9a-z]+)+)")
_GOAL = re.compile(r"Find ([a-z])\.")


def read_problem(text: str, id: str = "") -> Problem | None:
    """A problem back from its text (what the teacher and the parser see); None if not one."""
    defs = _DEF.findall(text or "")
    goal = _GOAL.search(text or "")
    if not defs or not goal:
        return None
    quantities = []
    for name, expr in defs:
        op = "-" if "-" in expr else "+"
        args = tuple(int(a) if a.isdigit() else a for a in re.split(r"[+-]", expr))
        quantities.append(Quantity(name, op, args))
    problem = Problem(id=id, quantities=tuple(quantities), goal=goal.group(1))
    names = {q.name for q in quantities}
    if problem.goal not in names or any(d not in names for q in quantities for d in q.deps):
        return None
    return problem


# ---- the teacher -------------------------------------------------------------------------------


def meta_text(problem: Problem, name: str | None) -> str:
    """The canonical meta-reasoning of a step that works out ``name``: what it is for."""
    if name is None:
        return NO_REASON
    if name not in problem.by_name:
        return f"Find {name}."
    parent = problem.parent(name)
    return f"Find {name}, the goal." if parent is None else f"Find {name} for {parent}."


def subproblem_text(name: str, expr: str) -> str:
    return f"{name}={expr}"


def _names(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _size(q: Quantity, values: dict[str, int]) -> int:
    return max(values[a] if isinstance(a, str) else a for a in q.args)


@dataclass(frozen=True)
class Trace:
    """A teacher trace: the reasoning text, the answer part, and the steps it really took."""

    reasoning: str
    answer: str
    truth: Decomposition
    order: tuple[str, ...]
    correct: bool

    def completion(self) -> str:
        return f"<think>\n{self.reasoning}\n</think>\n\n{self.answer}"


def teach(problem: Problem, seed: int, *, slip_rate: float = 0.15) -> Trace:
    """One teacher sample for ``problem`` with sampling seed ``seed``."""
    rng = _rng("teacher", problem.text(), seed)
    values = problem.values()
    slipped = rng.random() < slip_rate
    slip_on = rng.choice([q.name for q in problem.quantities if not q.deps]) if slipped else None
    eager = rng.random() < 0.5  # a ready combination goes before the leaves still to do
    by_rule = rng.random() < 0.7
    got: dict[str, int] = {}
    lines = [f"Okay, {problem.goal} needs {_names(list(problem.by_name[problem.goal].deps))}."]
    for q in problem.quantities:
        if q.deps and q.name != problem.goal:
            lines.append(f"And {q.name} needs {_names(list(q.deps))}.")
    steps, order = [], []
    while len(order) < len(problem.quantities):
        ready = [q for q in problem.quantities if q.name not in got and all(d in got for d in q.deps)]
        combos = [q for q in ready if q.deps]
        leaves = [q for q in ready if not q.deps]
        if combos and (eager or not leaves):
            pick = combos[0]
            known = _names(list(pick.deps))
            lines.append(f"Now {pick.name}, from {known}.")
        else:
            if by_rule:
                pick = max(leaves, key=lambda q: (_size(q, values), -leaves.index(q)))
                if not order:
                    lines.append(f"{pick.name} is bigger, so {pick.name} first.")
                else:
                    lines.append(f"Next {pick.name}, bigger.")
            else:
                pick = rng.choice(leaves)
                lines.append(f"Let me start with {pick.name}." if not order else f"Then {pick.name}.")
            waiting = [q for q in problem.quantities if q.deps and q.name not in got]
            if waiting and rng.random() < 0.15:
                w = waiting[0]
                missing = [d for d in w.deps if d not in got and d != pick.name] or [pick.name]
                lines.append(f"Could I do {w.name} now? No, it needs {_names(missing)}.")
        args = [got[a] if isinstance(a, str) else a for a in pick.args]
        value = apply(pick.op, args) + (1 if pick.name == slip_on else 0)
        shown = "=".join([pick.name, pick.expr()] + ([pick.op.join(map(str, args))] if pick.deps else [])
                         + [str(value)])
        lines.append(shown + ".")
        if not pick.deps and pick.name != slip_on and rng.random() < 0.2:
            a, b = pick.args
            check = f"{value}-{b}={a}" if pick.op == "+" else f"{value}+{b}={a}"
            lines.append(f"Check: {check}. Good.")
        got[pick.name] = value
        order.append(pick.name)
        steps.append(Step(meta_text(problem, pick.name), subproblem_text(pick.name, pick.expr()), str(value)))
    final = got[problem.goal]
    lines.append(f"So {problem.goal} is {final}.")
    truth = Decomposition(steps=tuple(steps), final_answer=str(final))
    return Trace(reasoning="\n".join(lines), answer=f"The final answer is \\boxed{{{final}}}.", truth=truth,
                 order=tuple(order), correct=final == values[problem.goal])


# ---- the exact decomposer ----------------------------------------------------------------------

_CHOICE = re.compile(r"(?:\bso ([a-z]) first\b|^Next ([a-z])\b|^Now ([a-z])\b|\bstart with ([a-z])\b|^Then ([a-z])\b)")
_EQUATION = re.compile(r"^([a-z])=([0-9a-z+-]+?)(?:=[0-9+-]+)?=(-?\d+)\.?$")


def parse(problem_text: str, reasoning: str) -> Decomposition | None:
    """The steps of a trace of this world (None when it has none).

    A step is a line ``v=expr[=numbers]=value``; its meta-reasoning is the quantity the
    text last chose ("so v first", "Next v", "Now v", "start with v", "Then v") before it,
    written canonically (what it is for), or ``NO_REASON``; its sub-problem is ``v = expr`` as
    the trace wrote it; its answer the value. Checks ("Check: ...") and asides are not steps.
    """
    problem = read_problem(problem_text) or Problem(id="", quantities=(), goal="")
    chosen: str | None = None
    steps: list[Step] = []
    for raw in (reasoning or "").split("</think>")[0].splitlines():
        line = raw.strip()
        m = _EQUATION.match(line)
        if m:
            name, expr = m.group(1), m.group(2)
            steps.append(Step(meta_text(problem, chosen), subproblem_text(name, expr), m.group(3)))
            chosen = None
            continue
        c = _CHOICE.search(line)
        if c:
            chosen = next(g for g in c.groups() if g)
    if not steps:
        return None
    return Decomposition(steps=tuple(steps), final_answer=steps[-1].answer)


def true_structure(problem: Problem, decomposition: Decomposition | None) -> dict[str, float]:
    """How a decomposition agrees with the problem's true structure.

    ``valid_plan``: 1 when the steps work out every quantity once, as the problem defines it, in
    an order the dependencies allow, each chosen for that quantity (the meta names it); else 0.
    ``steps_right``: the share of the problem's quantities that some step defines correctly.
    """
    if decomposition is None or not decomposition.steps:
        return {"valid_plan": 0.0, "steps_right": 0.0}
    defs = {subproblem_text(q.name, q.expr()): q.name for q in problem.quantities}
    order, right = [], set()
    ok = True
    for step in decomposition.steps:
        name = defs.get(step.subproblem)
        if name is None or step.meta != meta_text(problem, name):
            ok = False
        if name is not None:
            right.add(name)
            order.append(name)
    ok = ok and respects(problem, order)
    return {"valid_plan": float(ok), "steps_right": len(right) / len(problem.quantities)}


# ---- the teacher as an engine ------------------------------------------------------------------


class WorldTeacher:
    """``world:teacher``: the programmatic teacher behind the one model-access interface.

    Reads the problem from the last user turn and writes a sample chosen by the request's
    ``seed``. Not a model: its usage is zero tokens and zero cost, and it answers instantly.
    """

    kind = "world"

    def __init__(self, model: str = TEACHER_MODEL, options: Any = None):
        if model != TEACHER_MODEL:
            from rlkd_bench.errors import ConfigError

            raise ConfigError(f"the world has one teacher: world:{TEACHER_MODEL} (got world:{model})")
        self.model = model
        self.options = options

    def generate(self, requests: list[Any], *, progress: bool = True,
                 on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
        from rlkd_bench.llm.base import Completion

        out = []
        for i, req in enumerate(requests):
            user = next((m["content"] for m in reversed(req.messages) if m.get("role") == "user"), "")
            problem = read_problem(user.split("\n\n")[0])
            if problem is None:
                comp = Completion(None, error="not a problem of this world (Let v=..., Find v.)",
                                  custom_id=req.custom_id, retryable=False)
            else:
                comp = Completion(teach(problem, int(req.params.get("seed", 0))).completion(),
                                  custom_id=req.custom_id, finish_reason="stop")
            if on_result is not None:
                on_result(i, comp)
            out.append(comp)
        return out

    def summary(self) -> dict[str, Any]:
        return {"engine": "world", "model": self.model}


class WorldDecomposer:
    """``--decomposer world``: ``parse`` behind the decomposer interface."""

    name = "world"
    prompt_version = "world-parser-v1"

    def decompose(self, items: list[dict[str, Any]]) -> list[Any]:
        from rlkd_bench.decompose import DecomposeResult

        out = []
        for item in items:
            d = parse(str(item.get("problem") or ""), str(item.get("reasoning") or ""))
            out.append(DecomposeResult(d) if d is not None else
                       DecomposeResult(None, error="no step of the world's form (v=expr=value)",
                                       retryable=False))
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "exact parser of the world's traces", "prompt_version": self.prompt_version}


def tokenizer_texts(n: int = 300, seed: int = 4242) -> list[str]:
    """What a tiny model of this world learns its vocabulary from: world problems, teacher traces
    and their decompositions (from a seed no study uses for problems), the prompts, the tags."""
    from rlkd_bench.prompting import R1_INSTRUCTION, load_prompt
    from rlkd_bench.structure import render_steps

    # the prompts come before every example: repeated here so BPE merges their words (short prompts)
    texts = [load_prompt(name).text for name in ("rlkd_system", "gsrm")] * n + [R1_INSTRUCTION] * n
    texts.append("<think>\n</think>\n<answer>\nThe final answer is \\boxed{}.\n</answer> "
                 "[Meta-reasoning 1]: [Sub-problem 1]: [Answer 1]: So the final answer is:")
    for p in problems(n, seed):
        t = teach(p, 0)
        texts += [p.text(), t.completion(), render_steps(t.truth)]
    return texts
