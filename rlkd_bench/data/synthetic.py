"""Seeded synthetic math word problems whose R1-style traces come with their true step structure.

Real teacher traces have no ground-truth segmentation, so an offline decomposer cannot be scored
on them. These traces can: each is written step by step from a plan (one computation per step),
so the generator knows, for every step, its meta-reasoning, sub-problem and answer and the
character offset where the step starts in the reasoning text. The text imitates R1 thinking
(first person, "Okay, so...", markers such as "First"/"Next", equations on their own lines,
"Wait, let me double-check" asides, abandoned "Alternatively..." detours, slips corrected with
"Wait, no", a closing re-check that walks through every step again), and roughly a quarter of
the steps open with no discourse marker at all, often mid-paragraph, so neither a segmenter that
only reads markers nor one that cuts at paragraphs can score perfectly.

That wording is the "r1" phrase bank, and the heuristic decomposer's rules were written around
its markers: scores on it are in-sample. The "unseen" bank (``generate(..., bank="unseen")``)
writes the same problems and the same step structure with other connectives and discourse
markers, none of which the heuristic reads as a step opener; it was written after the heuristic
was frozen and is never to be used to tune it. It is out-of-sample for the wording only: the
structure (one computation per step, the same asides and detours) is still this generator's.

Everything is drawn from ``random.Random`` instances seeded per trace (no global state): trace
``i`` of ``generate(n, seed)`` depends only on ``(seed, i)``, so ``generate(10, s)[:5] ==
generate(5, s)``.

``boundary_f1`` scores predicted step starts against the true ones (see ``DEFAULT_TOLERANCE``);
``BASELINES`` are the segmenters the heuristic is compared with (one step per paragraph, the same
without the restating first paragraph, and a step at every common step marker).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from rlkd_bench.structure import Decomposition, Step

SOURCE = "rlkd-bench/synthetic"

# A predicted step start matches a true one within this many characters. 40 characters is about
# one short sentence of these traces ("Next, I need to find the total cost." is 36): an off-by-one-
# sentence guess (a marker sentence such as "Moving on." or "Hmm." before the real opener) still
# counts, a guess a whole equation away does not.
DEFAULT_TOLERANCE = 40

F = Fraction


# ----------------------------------------------------------------------------------------------
# numbers and arithmetic


def fmt(x: Fraction) -> str:
    """A terminating fraction as the decimal a person writes: 12, 12.5, 0.75 (never 12.50)."""
    if x.denominator == 1:
        return str(x.numerator)
    for places in range(1, 7):
        scaled = x * 10**places
        if scaled.denominator == 1:
            sign = "-" if x < 0 else ""
            digits = str(abs(scaled.numerator)).rjust(places + 1, "0")
            return f"{sign}{digits[:-places]}.{digits[-places:]}"
    raise ValueError(f"{x} has no short decimal form")


def _money(x: Fraction) -> str:
    text = fmt(x)
    return f"${text}0" if "." in text and len(text.split(".")[1]) == 1 else f"${text}"


def _is_short_decimal(x: Fraction, places: int = 2) -> bool:
    return (x * 10**places).denominator == 1


_OP_WORDS = {"+": "plus", "-": "minus", "×": "times", "÷": "divided by"}


@dataclass(frozen=True)
class Calc:
    """One computation a step shows: ``op`` applied left to right over ``args``."""

    op: str  # one of + - × ÷
    args: tuple[Fraction, ...]

    @property
    def value(self) -> Fraction:
        acc = self.args[0]
        for a in self.args[1:]:
            if self.op == "+":
                acc += a
            elif self.op == "-":
                acc -= a
            elif self.op == "×":
                acc *= a
            else:
                acc /= a
        return acc

    def expr(self) -> str:
        return f" {self.op} ".join(fmt(a) for a in self.args)

    def words(self) -> str:
        return f" {_OP_WORDS[self.op]} ".join(fmt(a) for a in self.args)

    def equation(self) -> str:
        return f"{self.expr()} = {fmt(self.value)}"

    def check(self) -> str:
        """An independent equation that confirms the value (inverse operation or other order)."""
        v, a = self.value, self.args
        if self.op == "+":
            return f"{' + '.join(fmt(x) for x in reversed(a))} = {fmt(v)}"
        if self.op == "-" and len(a) == 2:
            return f"{fmt(v)} + {fmt(a[1])} = {fmt(a[0])}"
        if self.op == "×" and len(a) == 2 and a[1] != 0:
            return f"{fmt(v)} ÷ {fmt(a[1])} = {fmt(a[0])}"
        if self.op == "÷" and len(a) == 2:
            return f"{fmt(v)} × {fmt(a[1])} = {fmt(a[0])}"
        return self.equation()

    def alternative(self) -> str:
        """A detour: another way to the same number, sometimes with its own (correct) equation."""
        a = self.args
        if self.op == "×" and len(a) == 2 and a[1].denominator == 1 and a[1] > 2:
            return f"split it up as {fmt(a[0])} × {fmt(a[1] - 1)} + {fmt(a[0])} = {fmt(self.value)}"
        if self.op == "+" and len(a) > 2:
            return "add the numbers in a different order to make it easier"
        if self.op == "-":
            return f"count up from {fmt(a[-1])} instead"
        return "set the whole problem up as one big expression"


# ----------------------------------------------------------------------------------------------
# plans: what each template asks and which computation each step shows


@dataclass(frozen=True)
class _Plan:
    target: str  # noun phrase: "the cost of the notebooks"
    how: str  # what the step does, as a verb phrase: "multiply 4 notebooks by $3"
    calc: Calc
    unit: str = ""  # "hours"; "$" for money
    answer: str | None = None  # truth answer when it is not the value (an equation, "x = 8")
    question: str | None = None  # truth sub-problem when "What is <target>?" reads badly
    shown: str | None = None  # what the trace says it found, when not value + unit

    def value_text(self) -> str:
        v = self.calc.value
        if self.unit == "$":
            return _money(v)
        return f"{fmt(v)} {self.unit}".strip()

    def result_text(self) -> str:
        return self.shown or self.value_text()


@dataclass(frozen=True)
class _Problem:
    template: str
    problem: str
    restate: str  # the givens, as the trace restates them
    goal: str  # "find how much change Maya gets"
    plans: tuple[_Plan, ...]
    gold: Fraction
    unit: str
    params: dict[str, Any]


_NAMES = [
    ("Maya", "she", "her"), ("Liam", "he", "his"), ("Priya", "she", "her"), ("Omar", "he", "his"),
    ("Sofia", "she", "her"), ("Chen", "he", "his"), ("Ava", "she", "her"), ("Noah", "he", "his"),
    ("Zara", "she", "her"), ("Mateo", "he", "his"), ("Hana", "she", "her"), ("Ethan", "he", "his"),
]

_ITEMS = [
    ("notebooks", "notebook"), ("pens", "pen"), ("folders", "folder"), ("markers", "marker"),
    ("apples", "apple"), ("muffins", "muffin"), ("bottles of juice", "bottle of juice"),
    ("packs of stickers", "pack of stickers"), ("bananas", "banana"), ("erasers", "eraser"),
]
_PRICES = [F(1), F(2), F(3), F(4), F(5), F(3, 2), F(5, 2), F(3, 4), F(5, 4), F(7, 2)]


def _shopping(rng: random.Random) -> _Problem:
    name, pron, _ = rng.choice(_NAMES)
    k = rng.randint(2, 5)
    items = rng.sample(_ITEMS, k)
    qty = [rng.randint(2, 9) for _ in items]
    price = [rng.choice(_PRICES) for _ in items]
    costs = [Calc("×", (F(q), p)) for q, p in zip(qty, price, strict=True)]
    total = sum((c.value for c in costs), F(0))
    bill = next(b for b in (10, 20, 50, 100, 200) if b > total)
    bought = [f"{q} {plural} at {_money(p)} each" for q, (plural, _), p in zip(qty, items, price, strict=True)]
    listing = ", ".join(bought[:-1]) + f" and {bought[-1]}"
    plans = [
        _Plan(f"the cost of the {plural}", f"multiply {q} {plural} by {_money(p)}", c, "$")
        for (plural, _), q, p, c in zip(items, qty, price, costs, strict=True)
    ]
    plans.append(_Plan("the total cost", "add up what each kind of item costs",
                       Calc("+", tuple(c.value for c in costs)), "$"))
    change = Calc("-", (F(bill), total))
    plans.append(_Plan("the change", f"subtract the total from the {_money(F(bill))} bill", change, "$",
                       question=f"How much change does {name} get from {_money(F(bill))}?"))
    restate = f"{name} buys {listing}, and pays with a {_money(F(bill))} bill."
    return _Problem(
        "shopping", f"{restate} How much change does {pron} get?", restate,
        f"find how much change {name} gets", tuple(plans), change.value, "$",
        {"qty": qty, "price": [str(p) for p in price], "bill": bill},
    )


_TIME = [("weeks", "week", 7), ("days", "day", 24), ("hours", "hour", 60), ("minutes", "minute", 60)]
_FLOWS = [
    ("A leaky faucet drips {r} milliliters of water every {u}.", "How many liters of water drip out in {t}?",
     "milliliters", "liters", 1000),
    ("A snail crawls {r} centimeters every {u}.", "How many meters does it crawl in {t}?",
     "centimeters", "meters", 100),
    ("A machine packs {r} grams of rice every {u}.", "How many kilograms of rice does it pack in {t}?",
     "grams", "kilograms", 1000),
]


def _conversion(rng: random.Random) -> _Problem:
    start = rng.randint(0, 2)
    end = min(start + rng.randint(1, 3), 3)
    t = rng.randint(2, 6)
    rate = rng.randint(2, 9) if end == 3 else rng.randint(5, 40)
    rate_text, question, small, big, factor = rng.choice(_FLOWS)
    end_plural, end_single, _ = _TIME[end]
    start_plural = _TIME[start][0]
    plans, cur = [], F(t)
    for i in range(start, end):
        frm, _, mult = _TIME[i]
        to = _TIME[i + 1][0]
        calc = Calc("×", (cur, F(mult)))
        plans.append(_Plan(f"the number of {to} in {fmt(cur)} {frm}", f"multiply {fmt(cur)} by {mult}",
                           calc, to, question=f"How many {to} are in {fmt(cur)} {frm}?"))
        cur = calc.value
    total = Calc("×", (cur, F(rate)))
    plans.append(_Plan(f"the total amount in {small}", f"multiply {fmt(cur)} {end_plural} by {rate} {small}",
                       total, small, question=f"How many {small} is that in {fmt(cur)} {end_plural}?"))
    conv = Calc("÷", (total.value, F(factor)))
    plans.append(_Plan(f"that amount in {big}", f"divide by {factor}", conv, big,
                       question=f"How many {big} is {fmt(total.value)} {small}?"))
    span = f"{t} {start_plural}"
    restate = rate_text.format(r=rate, u=end_single)
    return _Problem(
        "conversion", f"{restate} {question.format(t=span)}", restate,
        f"convert the total over {span} into {big}", tuple(plans), conv.value, big,
        {"start": start_plural, "end": end_plural, "t": t, "rate": rate, "factor": factor},
    )


def _ages(rng: random.Random) -> _Problem:
    (a, _, _), (b, _, _), (c, _, _), (d, _, _) = rng.sample(_NAMES, 4)
    base = rng.randint(5, 14)
    mult = rng.randint(2, 3)
    younger = rng.randint(2, 9)
    with_d = rng.random() < 0.5
    older = rng.randint(1, 12)
    years = rng.randint(2, 10)
    plans = [_Plan(f"{b}'s age", f"multiply {a}'s age {base} by {mult}", Calc("×", (F(base), F(mult))), "years")]
    age_b = plans[-1].calc.value
    plans.append(_Plan(f"{c}'s age", f"subtract {younger} from {b}'s age",
                       Calc("-", (age_b, F(younger))), "years"))
    ages = [F(base), age_b, plans[-1].calc.value]
    givens = (f"{a} is {base} years old. {b} is {mult} times as old as {a}. "
              f"{c} is {younger} years younger than {b}.")
    if with_d:
        plans.append(_Plan(f"{d}'s age", f"add {older} to {c}'s age", Calc("+", (ages[-1], F(older))), "years"))
        ages.append(plans[-1].calc.value)
        givens += f" {d} is {older} years older than {c}."
    people = len(ages)
    now = Calc("+", tuple(ages))
    plans.append(_Plan("the sum of their ages now", "add the ages together", now, "years"))
    grow = Calc("×", (F(people), F(years)))
    plans.append(_Plan(f"the growth of the sum over {years} years", f"multiply {people} people by {years} years",
                       grow, "years", question=f"By how much does the sum of the ages grow in {years} years?"))
    later = Calc("+", (now.value, grow.value))
    plans.append(_Plan(f"the sum of their ages in {years} years", "add the growth to the current sum",
                       later, "years"))
    return _Problem(
        "ages", f"{givens} What will be the sum of their ages in {years} years?", givens,
        f"find the sum of all {people} ages in {years} years", tuple(plans), later.value, "",
        {"base": base, "mult": mult, "younger": younger, "older": older if with_d else None, "years": years},
    )


def _travel(rng: random.Random) -> _Problem:
    while True:
        s1, s2 = rng.randint(4, 18) * 5, rng.randint(4, 18) * 5
        t1, t2 = rng.randint(1, 5), rng.randint(1, 5)
        avg = F(s1 * t1 + s2 * t2, t1 + t2)
        if _is_short_decimal(avg):
            break
    vehicle = rng.choice(["train", "bus", "car", "cyclist"])
    d1, d2 = Calc("×", (F(s1), F(t1))), Calc("×", (F(s2), F(t2)))
    dist = Calc("+", (d1.value, d2.value))
    time = Calc("+", (F(t1), F(t2)))
    speed = Calc("÷", (dist.value, time.value))
    plans = (
        _Plan("the distance of the first part", f"multiply {s1} km/h by {t1} hours", d1, "km"),
        _Plan("the distance of the second part", f"multiply {s2} km/h by {t2} hours", d2, "km"),
        _Plan("the total distance", "add the two distances", dist, "km"),
        _Plan("the total time", "add the two durations", time, "hours"),
        _Plan("the average speed", "divide the total distance by the total time", speed, "km/h"),
    )
    givens = (f"A {vehicle} travels at {s1} km/h for {t1} hours and then at {s2} km/h "
              f"for {t2} hours.")
    return _Problem(
        "travel", f"{givens} What is its average speed for the whole trip, in km/h?", givens,
        "find the average speed over the whole trip", plans, speed.value, "km/h",
        {"s1": s1, "t1": t1, "s2": s2, "t2": t2},
    )


def _percent(rng: random.Random) -> _Problem:
    while True:
        price = F(rng.randint(2, 20) * 20)
        off, tax = rng.choice([10, 15, 20, 25, 30, 40]), rng.choice([5, 8, 10])
        coupon = rng.choice([0, 0, 5, 10])
        disc = Calc("×", (price, F(off, 100)))
        sale = Calc("-", (price, disc.value))
        plans = [
            _Plan("the discount", f"take {off}% of {_money(price)}", disc, "$"),
            _Plan("the sale price", "subtract the discount from the original price", sale, "$"),
        ]
        base = sale.value
        if coupon:
            cp = Calc("-", (base, F(coupon)))
            plans.append(_Plan("the price after the coupon", f"subtract the {_money(F(coupon))} coupon", cp, "$"))
            base = cp.value
        tax_c = Calc("×", (base, F(tax, 100)))
        plans.append(_Plan("the sales tax", f"take {tax}% of {_money(base)}", tax_c, "$"))
        final = Calc("+", (base, tax_c.value))
        plans.append(_Plan("the final price", "add the tax to the price before tax", final, "$"))
        if all(_is_short_decimal(p.calc.value) for p in plans):
            break
    item = rng.choice(["jacket", "pair of shoes", "bicycle", "lamp", "backpack", "guitar"])
    givens = f"A {item} costs {_money(price)}. It is on sale for {off}% off"
    givens += f", a {_money(F(coupon))} coupon is applied to the sale price" if coupon else ""
    givens += f", and then {tax}% sales tax is added."
    return _Problem(
        "percent", f"{givens} What is the final price?", givens, f"find the final price of the {item}",
        tuple(plans), final.value, "$", {"price": int(price), "off": off, "tax": tax, "coupon": coupon},
    )


def _equation(rng: random.Random) -> _Problem:
    if rng.random() < 0.5:
        x, k, j, b = rng.randint(2, 15), rng.randint(1, 3), rng.randint(1, 4), rng.randint(1, 20)
        a = k + j
        c = j * x + b
        ktext = "the number" if k == 1 else f"{k} times the number"
        kx = "x" if k == 1 else f"{k}x"
        jx = "x" if j == 1 else f"{j}x"
        givens = f"{a} times a number plus {b} is equal to {ktext} plus {c}."
        plans = [
            _Plan("the equation with the x terms on one side", f"subtract {kx} from both sides",
                  Calc("-", (F(a), F(k))), answer=f"{jx} + {b} = {c}", shown=f"{jx} + {b} = {c}",
                  question=f"What is {a}x + {b} = {kx} + {c} after moving the x terms to the left?"),
            _Plan("the value of the x term", f"subtract {b} from both sides", Calc("-", (F(c), F(b))),
                  answer=f"{jx} = {c - b}", shown=f"{jx} = {c - b}",
                  question=f"What is {jx} after subtracting {b} from both sides?"),
            _Plan("the number x", f"divide both sides by {j}", Calc("÷", (F(c - b), F(j))),
                  answer=f"x = {x}", shown=f"x = {x}", question="What is x?"),
        ]
        gold, ask = F(x), "What is the number?"
        if rng.random() < 0.5:
            plans.append(_Plan("the square of the number", f"multiply {x} by itself", Calc("×", (F(x), F(x))),
                               question=f"What is {x} squared?"))
            gold, ask = F(x * x), "What is the square of the number?"
        return _Problem(
            "equation", f"{givens} {ask}", givens, "solve the equation for the number", tuple(plans), gold, "",
            {"kind": "linear", "a": a, "b": b, "k": k, "c": c, "square": len(plans) == 4},
        )
    big, small = rng.randint(6, 30), rng.randint(1, 20)
    s, d = big + small, big - small
    plans = (
        _Plan("the sum of the two equations", "add a + b and a - b", Calc("+", (F(s), F(d))),
              answer=f"2a = {s + d}", shown=f"2a = {s + d}", question="What is 2a when the equations are added?"),
        _Plan("the larger number a", "divide by 2", Calc("÷", (F(s + d), F(2))), answer=f"a = {big}",
              shown=f"a = {big}", question="What is the larger number a?"),
        _Plan("the smaller number b", f"subtract a from {s}", Calc("-", (F(s), F(big))), answer=f"b = {small}",
              shown=f"b = {small}", question="What is the smaller number b?"),
        _Plan("the product of the two numbers", "multiply a by b", Calc("×", (F(big), F(small))),
              question="What is the product a × b?"),
    )
    givens = f"Two numbers add up to {s} and their difference is {d}."
    return _Problem(
        "equation", f"{givens} What is their product?", givens, "find the product of the two numbers",
        plans, F(big * small), "", {"kind": "system", "sum": s, "diff": d},
    )


def _garden(rng: random.Random) -> _Problem:
    while True:
        length, width = rng.randint(5, 30), rng.randint(4, 20)
        cover = rng.choice([5, 10, 20, 25])
        if (length * width) % cover == 0:
            break
    fence_price, bag_price = rng.randint(2, 9), rng.randint(3, 15)
    with_fence = rng.random() < 0.6
    area = Calc("×", (F(length), F(width)))
    bags = Calc("÷", (area.value, F(cover)))
    seed = Calc("×", (bags.value, F(bag_price)))
    plans = []
    if with_fence:
        per = Calc("+", (F(length), F(width), F(length), F(width)))
        fence = Calc("×", (per.value, F(fence_price)))
        plans += [
            _Plan("the perimeter", "add up all four sides", per, "meters"),
            _Plan("the cost of the fencing", f"multiply the perimeter by ${fence_price} per meter", fence, "$"),
        ]
    plans += [
        _Plan("the area", f"multiply {length} by {width}", area, "square meters"),
        _Plan("the number of bags of seed", f"divide the area by {cover}", bags, "bags",
              question="How many bags of seed are needed?"),
        _Plan("the cost of the seed", f"multiply the bags by ${bag_price}", seed, "$"),
    ]
    gold = seed.value
    givens = (f"A rectangular garden is {length} meters long and {width} meters wide. One bag of grass seed "
              f"covers {cover} square meters and costs ${bag_price}.")
    ask = "How much does the seed cost?"
    if with_fence:
        total = Calc("+", (plans[1].calc.value, seed.value))
        plans.append(_Plan("the total cost", "add the fencing and the seed", total, "$"))
        gold = total.value
        givens += f" Fencing costs ${fence_price} per meter."
        ask = "How much do the fencing around the garden and the seed for all of it cost together?"
    return _Problem(
        "garden", f"{givens} {ask}", givens, "find what the garden costs", tuple(plans), gold, "$",
        {"length": length, "width": width, "cover": cover, "bag_price": bag_price,
         "fence_price": fence_price if with_fence else None},
    )


def _savings(rng: random.Random) -> _Problem:
    name, pron, poss = rng.choice(_NAMES)
    wage, hours, days = rng.randint(8, 20), rng.randint(3, 8), rng.randint(3, 6)
    pct = rng.choice([20, 25, 40, 50])
    weeks = rng.randint(3, 12)
    have = rng.choice([0, 0, 50, 100, 120])
    daily = Calc("×", (F(wage), F(hours)))
    weekly = Calc("×", (daily.value, F(days)))
    saved = Calc("×", (weekly.value, F(pct, 100)))
    goal = saved.value * weeks + have
    plans = [
        _Plan(f"{poss} daily earnings", f"multiply ${wage} by {hours} hours", daily, "$"),
        _Plan(f"{poss} weekly earnings", f"multiply the daily amount by {days} days", weekly, "$"),
        _Plan(f"{poss} weekly savings", f"take {pct}% of the weekly earnings", saved, "$",
              question=f"How much does {name} save each week?"),
    ]
    need = goal
    if have:
        rest = Calc("-", (goal, F(have)))
        plans.append(_Plan("the amount still needed", f"subtract the {_money(F(have))} already saved", rest, "$"))
        need = rest.value
    plans.append(_Plan("the number of weeks", "divide the amount needed by the weekly savings",
                       Calc("÷", (need, saved.value)), "weeks",
                       question=f"How many weeks does {name} need to save?"))
    givens = (f"{name} earns ${wage} an hour and works {hours} hours a day, {days} days a week. "
              f"{pron.capitalize()} saves {pct}% of {poss} earnings")
    givens += f" and already has {_money(F(have))} saved." if have else "."
    return _Problem(
        "savings", f"{givens} How many weeks will it take {name} to save {_money(goal)}?",
        givens + f" The goal is {_money(goal)}.", f"find how many weeks {name} needs to reach {_money(goal)}",
        tuple(plans), F(weeks), "weeks",
        {"wage": wage, "hours": hours, "days": days, "pct": pct, "have": have, "goal": str(goal)},
    )


TEMPLATES: dict[str, Callable[[random.Random], _Problem]] = {
    "shopping": _shopping, "conversion": _conversion, "ages": _ages, "travel": _travel,
    "percent": _percent, "equation": _equation, "garden": _garden, "savings": _savings,
}


# ----------------------------------------------------------------------------------------------
# writing the trace


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


class _Writer:
    """Appends sentences with the separators R1 uses and remembers where each step starts."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.boundaries: list[int] = []

    def add(self, text: str, sep: str = " ", *, step_start: bool = False) -> None:
        if self.parts:
            self.parts.append(sep)
            self.length += len(sep)
        if step_start:
            self.boundaries.append(self.length)
        self.parts.append(text)
        self.length += len(text)

    def text(self) -> str:
        return "".join(self.parts)


_FIRST = ["First, ", "First, ", "Okay, first, ", "To start, ", "Let me start with this: "]
_MIDDLE = ["Next, ", "Now, ", "Then, ", "Okay, now ", "Alright, next, ", "After that, ", "Moving on, ",
           "Now that I have that, "]
_LAST = ["Finally, ", "Now, ", "Lastly, ", "So now ", "Then, "]
_VERBS = ["find", "figure out", "calculate", "work out", "compute", "determine"]


def _opening(rng: random.Random, p: _Plan, j: int, n: int) -> tuple[str, bool]:
    """The step's first sentence, and whether it already shows the computation."""
    marker = rng.choice(_FIRST if j == 0 else _LAST if j == n - 1 else _MIDDLE)
    if j and rng.random() < 0.3:  # no discourse marker at all: the hard case for marker-based segmenters
        eq, target = p.calc.equation(), p.target
        return rng.choice([
            (f"{_cap(target)} is {eq}.", True),
            (f"What about {target}?", False),
            (f"I still need {target}.", False),
            (f"For {target}, {eq}.", True),
            (f"{eq} gives {target}.", True),
            (f"{_cap(p.calc.words())} is {fmt(p.calc.value)}, and that's {target}.", True),
            (f"And {target}: {eq}.", True),
        ])
    verb = rng.choice(_VERBS)
    style = rng.choice(["need", "need", "let", "to", "direct"])
    if style == "need":
        body = f"I need to {verb} {p.target}."
    elif style == "let":
        body = f"let me {verb} {p.target}."
    elif style == "to":
        body = f"to get {p.target}, I {p.how}."
    else:
        return _cap(f"{marker}{p.target} is {p.calc.equation()}."), True
    return _cap(marker + body), False


def _compute(rng: random.Random, p: _Plan) -> list[tuple[str, str]]:
    """The computation as (sentence, separator before it) pairs; equations often get their own
    line, and now and then a slip is caught and corrected ("Wait, no")."""
    eq = p.calc.equation()
    out: list[tuple[str, str]] = []
    if p.calc.value.denominator == 1 and rng.random() < 0.08:
        slip = fmt(p.calc.value + rng.choice([-10, -2, -1, 1, 2, 10]))
        out.append((f"{_cap(p.calc.words())} is {slip}.", " "))
        out.append(("Wait, no, that's not right.", " "))
    form = rng.choice(["inline", "inline", "line", "display", "words"])
    if form == "inline":
        out.append((rng.choice([f"That's {eq}.", f"So {eq}.", f"That gives {eq}.", f"So that's {eq}."]), " "))
    elif form == "line":
        out.append((eq, "\n"))
    elif form == "display":
        out.append((f"\\[\n{eq}\n\\]", "\n\n"))
    else:
        out.append((f"{_cap(p.calc.words())} is {fmt(p.calc.value)}.", " "))
    return out


def _result(rng: random.Random, p: _Plan) -> str:
    r = p.result_text()
    return rng.choice([f"So {p.target} is {r}.", f"Okay, so that's {r}.", f"So {r}.", f"That means {r}."])


def _aside(rng: random.Random, p: _Plan) -> str:
    r = p.result_text()
    return rng.choice([
        f"Wait, let me double-check that. {p.calc.check()}, so yes, {r} is right.",
        f"Hmm, let me verify: {p.calc.check()}. Yep.",
        f"Wait, is that right? {p.calc.check()}. Okay, that checks out.",
        f"Let me double-check: {p.calc.check()}. Good.",
        f"Hmm, that seems reasonable. Just to be sure, {p.calc.check()}. Right.",
    ])


def _detour(rng: random.Random, p: _Plan) -> str:
    alt = p.calc.alternative()
    return rng.choice([
        f"Alternatively, I could {alt}... but that's the same thing really. I'll keep {p.result_text()}.",
        f"Hmm, alternatively, maybe I should {alt}? No, that doesn't change anything here.",
        f"Alternatively, I might {alt}. Then I would need to redo the rest. Actually, no, the direct way is "
        "simpler. Let me stick with it.",
    ])


def _intro(rng: random.Random, prob: _Problem) -> str:
    return rng.choice([
        f"Okay, so I need to {prob.goal}. Let me read the problem again. {prob.restate} "
        "Hmm, let me break this down step by step.",
        f"Alright, let's see. The problem says: {prob.restate} I need to {prob.goal}.",
        f"Okay, let me try to solve this. {prob.restate} So the question is asking me to {prob.goal}. "
        "Let me think.",
    ])


def _recap(rng: random.Random, prob: _Problem) -> str:
    recap = [pl.calc.equation() for pl in prob.plans]
    if rng.random() < 0.5:
        walk = f"First, {recap[0]}. " + " ".join(f"Then {e}." for e in recap[1:])
    else:
        walk = ", ".join(recap) + "."
    return rng.choice([
        "Let me verify the whole thing once more.",
        "Wait, let me double-check everything from the start.",
        "Let me recap to make sure I didn't make a mistake.",
    ]) + f" {walk} " + rng.choice(["Everything checks out.", "Yep, that all adds up.", "Looks right."])


def _closing(rng: random.Random, gold_text: str) -> str:
    return rng.choice([f"So the answer is {gold_text}.", f"Therefore, the answer should be {gold_text}.",
                       f"So, the final answer is {gold_text}."])


@dataclass(frozen=True)
class PhraseBank:
    """The wording of a trace: how it opens, how each step opens, computes, states its result,
    checks itself, wanders off, re-checks everything and closes. The structure (which step
    starts where) does not depend on the bank, only the words do."""

    name: str
    intro: Callable[[random.Random, _Problem], str]
    opening: Callable[[random.Random, _Plan, int, int], tuple[str, bool]]
    compute: Callable[[random.Random, _Plan], list[tuple[str, str]]]
    result: Callable[[random.Random, _Plan], str]
    aside: Callable[[random.Random, _Plan], str]
    detour: Callable[[random.Random, _Plan], str]
    recap: Callable[[random.Random, _Problem], str]
    closing: Callable[[random.Random, str], str]


# The bank the heuristic decomposer was developed with: its discourse markers ("First", "Next",
# "Wait, let me double-check", "Alternatively", "Let me verify the whole thing") are the ones the
# heuristic's rules look for, so scores on it are in-sample.
R1_BANK = PhraseBank("r1", _intro, _opening, _compute, _result, _aside, _detour, _recap, _closing)


# ---- a second bank, written after the heuristic was frozen and never used to tune it: other
# connectives and discourse markers for the same moves (none of the heuristic's step, check or
# detour openers), so a segmenter that has learned the first bank's words gets no help from them.

_U_FIRST = ["To kick things off, {t} is what I'm after.", "Piece one is {t}.",
            "Before anything else I want {t}.", "The natural place to begin is {t}."]
_U_MIDDLE = ["Onward to {t}.", "The following piece is {t}.", "With that settled, {t} comes up.",
             "Once that's done, {t} is what matters.", "Turning to {t}.", "My attention goes to {t}."]
_U_LAST = ["The closing piece is {t}.", "All that remains is {t}.", "Wrapping up with {t}.",
           "The last thing to pin down is {t}."]


def _u_opening(rng: random.Random, p: _Plan, j: int, n: int) -> tuple[str, bool]:
    pool = _U_FIRST if j == 0 else _U_LAST if j == n - 1 else _U_MIDDLE
    if j and rng.random() < 0.3:  # no opener at all
        eq, target = p.calc.equation(), p.target
        return rng.choice([
            (f"{_cap(target)} works out as {eq}.", True),
            (f"{eq} gives {target}.", True),
            (f"For {target}, I get {eq}.", True),
            (f"{_cap(p.calc.words())} makes {fmt(p.calc.value)}, which is {target}.", True),
        ])
    if rng.random() < 0.25:
        return _cap(f"for {p.target}, I get {p.calc.equation()}."), True
    return _cap(rng.choice(pool).format(t=p.target)), False


def _u_compute(rng: random.Random, p: _Plan) -> list[tuple[str, str]]:
    eq = p.calc.equation()
    out: list[tuple[str, str]] = []
    if p.calc.value.denominator == 1 and rng.random() < 0.08:
        slip = fmt(p.calc.value + rng.choice([-10, -2, -1, 1, 2, 10]))
        out.append((f"{_cap(p.calc.words())} makes {slip}.", " "))
        out.append(("Scratch that, I slipped.", " "))
    form = rng.choice(["inline", "inline", "line", "display", "words"])
    if form == "inline":
        out.append((rng.choice([f"Computing: {eq}.", f"Arithmetic: {eq}.", f"This comes to {eq}.",
                                f"Numerically, {eq}."]), " "))
    elif form == "line":
        out.append((eq, "\n"))
    elif form == "display":
        out.append((f"\\[\n{eq}\n\\]", "\n\n"))
    else:
        out.append((f"{_cap(p.calc.words())} makes {fmt(p.calc.value)}.", " "))
    return out


def _u_result(rng: random.Random, p: _Plan) -> str:
    r = p.result_text()
    return rng.choice([f"{_cap(p.target)} therefore equals {r}.", f"Result: {r}.",
                       f"That leaves {r} for {p.target}.", f"Call it {r}."])


def _u_aside(rng: random.Random, p: _Plan) -> str:
    r = p.result_text()
    return rng.choice([
        f"Reversing it: {p.calc.check()}, consistent with {r}.",
        f"Sanity pass: {p.calc.check()}. Fine.",
        f"Running it backwards, {p.calc.check()}. Consistent.",
        f"Redoing that a different way, {p.calc.check()}. Matches.",
    ])


def _u_detour(rng: random.Random, p: _Plan) -> str:
    alt = p.calc.alternative()
    return rng.choice([
        f"Another route would be to {alt}, though it ends in the same place; {p.result_text()} stands.",
        f"One could also {alt}. It changes nothing here.",
        f"There's a second path, namely to {alt}, but it isn't any shorter. Staying with the plan.",
    ])


def _u_intro(rng: random.Random, prob: _Problem) -> str:
    return rng.choice([
        f"The task: {prob.goal}. Restating the data: {prob.restate} Time to work through it.",
        f"Reading carefully. {prob.restate} The goal is to {prob.goal}.",
        f"Here is what's given. {prob.restate} The target: to {prob.goal}.",
    ])


def _u_recap(rng: random.Random, prob: _Problem) -> str:
    recap = [pl.calc.equation() for pl in prob.plans]
    walk = "In order: " + "; ".join(recap) + "."
    return rng.choice([
        "Running through the whole chain again from the top.",
        "Retracing every step for safety.",
        "One final pass over the entire calculation.",
    ]) + f" {walk} " + rng.choice(["All consistent.", "Nothing is off.", "The numbers hold together."])


def _u_closing(rng: random.Random, gold_text: str) -> str:
    return rng.choice([f"Final result: {gold_text}.", f"The result to report is {gold_text}."])


UNSEEN_BANK = PhraseBank("unseen", _u_intro, _u_opening, _u_compute, _u_result, _u_aside, _u_detour,
                         _u_recap, _u_closing)
BANKS = {b.name: b for b in (R1_BANK, UNSEEN_BANK)}


def _write(rng: random.Random, prob: _Problem, gold_text: str, bank: PhraseBank = R1_BANK
           ) -> tuple[str, list[int]]:
    w = _Writer()
    w.add(bank.intro(rng, prob))
    n = len(prob.plans)
    after = " "  # the separator the previous sentence asks for (a line equation ends its line)

    def add(text: str, sep: str, *, step_start: bool = False) -> None:
        nonlocal after
        if after != " " and sep == " ":
            sep = after
        w.add(text, sep, step_start=step_start)
        if text.endswith("\\]"):  # a display equation is a paragraph of its own
            after = "\n\n"
        elif text[-1:] not in ".?!":  # an equation on its own line: what follows starts a new line
            after = "\n"
        else:
            after = " "

    for j, p in enumerate(prob.plans):
        sep = "\n\n" if j == 0 or rng.random() < 0.7 else " "
        opening, computed = bank.opening(rng, p, j, n)
        add(opening, sep, step_start=True)
        if not computed:
            for sentence, csep in bank.compute(rng, p):
                add(sentence, csep)
        if p.shown or rng.random() < 0.6:  # an equation step always says the equation it reached
            add(bank.result(rng, p), " ")
        if rng.random() < 0.3:
            add(bank.aside(rng, p), rng.choice(["\n\n", " "]))
        if j and rng.random() < 0.15:
            add(bank.detour(rng, p), rng.choice(["\n\n", " "]))
    if rng.random() < 0.6:  # a closing re-check that walks through the steps again (part of the last step)
        add(bank.recap(rng, prob), "\n\n")
    add(bank.closing(rng, gold_text), rng.choice(["\n\n", " "]))
    return w.text(), w.boundaries


# ----------------------------------------------------------------------------------------------
# public API


@dataclass(frozen=True)
class SyntheticTrace:
    """A generated problem, its R1-style reasoning and its true structure."""

    id: str
    template: str
    problem: str
    reasoning: str
    answer: str  # a short solution ending in \boxed{gold}
    gold: str
    truth: Decomposition
    boundaries: list[int]  # where each true step starts in ``reasoning`` (character offsets)
    params: dict[str, Any] = field(default_factory=dict)
    equations: tuple[str, ...] = ()  # the main "expr = value" of each step, in order

    def to_trace_row(self) -> dict[str, Any]:
        """A row of the traces product (see DESIGN.md)."""
        return {
            "id": self.id, "domain": "math", "problem": self.problem, "reasoning": self.reasoning,
            "answer": self.answer, "gold": self.gold, "source": SOURCE, "verified": True,
        }


def make_trace(seed: int, index: int, template: str | None = None, bank: str = "r1") -> SyntheticTrace:
    """Trace ``index`` of seed ``seed``; depends on nothing else (no global random state). The same
    ``(seed, index)`` gives the same problem in every phrase ``bank``, worded differently."""
    if bank not in BANKS:
        raise ValueError(f"unknown phrase bank {bank!r}; known: {sorted(BANKS)}")
    rng = random.Random(f"rlkd-bench/synthetic:{seed}:{index}")
    name = template or rng.choice(sorted(TEMPLATES))
    prob = TEMPLATES[name](rng)
    gold = fmt(prob.gold)
    gold_text = _money(prob.gold) if prob.unit == "$" else f"{gold} {prob.unit}".strip()
    reasoning, boundaries = _write(rng, prob, gold_text, BANKS[bank])
    steps = tuple(
        Step(
            meta=f"To {prob.goal}, I need {p.target}, so I {p.how}.",
            subproblem=p.question or f"What is {p.target}?",
            answer=p.answer or p.value_text(),
        )
        for p in prob.plans
    )
    solution = "\n".join(f"{_cap(p.target)}: {p.calc.equation()}." for p in prob.plans)
    return SyntheticTrace(
        id=f"synth-{seed}-{index}" if bank == "r1" else f"synth-{bank}-{seed}-{index}", template=name, problem=prob.problem, reasoning=reasoning,
        answer=f"{solution}\n\nThe answer is $\\boxed{{{gold}}}$.", gold=gold,
        truth=Decomposition(steps=steps, final_answer=gold), boundaries=boundaries,
        params=prob.params, equations=tuple(p.calc.equation() for p in prob.plans),
    )


def generate(n: int, seed: int = 0, bank: str = "r1") -> list[SyntheticTrace]:
    """``n`` synthetic traces; the same ``(n, seed, bank)`` always gives the same traces."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [make_trace(seed, i, bank=bank) for i in range(n)]


# ----------------------------------------------------------------------------------------------
# scoring


def boundary_f1(pred: Sequence[int], true: Sequence[int], tolerance: int = DEFAULT_TOLERANCE
                ) -> tuple[float, float, float]:
    """Precision, recall and F1 of predicted step starts against true ones.

    A predicted boundary matches at most one unmatched true boundary at most ``tolerance``
    characters away. Both lists are sorted and matched greedily left to right, which gives a
    maximum matching for points on a line with a fixed window. An empty prediction has
    precision 1 (it claims nothing false); an empty truth has recall 1.
    """
    p_sorted, t_sorted = sorted(pred), sorted(true)
    matched, j = 0, 0
    for b in p_sorted:
        while j < len(t_sorted) and t_sorted[j] < b - tolerance:
            j += 1
        if j < len(t_sorted) and abs(t_sorted[j] - b) <= tolerance:
            matched += 1
            j += 1
    precision = matched / len(p_sorted) if p_sorted else 1.0
    recall = matched / len(t_sorted) if t_sorted else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def paragraph_boundaries(text: str, *, skip_first: bool = False) -> list[int]:
    """The naive baseline: every paragraph (text after a blank line, and the first) starts a step.
    ``skip_first`` leaves out the first paragraph, which in R1 traces restates the problem."""
    out, pos = [], 0
    for chunk in text.split("\n\n"):
        if chunk.strip():
            out.append(pos + len(chunk) - len(chunk.lstrip()))
        pos += len(chunk) + 2
    return out[1:] if skip_first else out


# The markers-only baseline: a step starts at every sentence that opens with a common step marker
# (after an optional "Okay," / "Alright," / "So,"). A generic list, not the heuristic's rules: no
# checks, results, detours or restatements are recognised.
STEP_MARKERS = (
    "first", "firstly", "second", "secondly", "third", "next", "then", "now", "finally", "lastly",
    "after that", "afterwards", "moving on", "to start", "to begin", "let me", "let's", "let us",
    "i need to", "we need to", "i have to", "to find", "to get", "step",
)
_MARKER_RE = re.compile(
    r"(?:^|(?<=[.?!:])[ \t]+|\n\s*)(?:(?:okay|ok|alright|so),?\s+)?(?:"
    + "|".join(re.escape(m) for m in STEP_MARKERS) + r")\b",
    re.IGNORECASE,
)


def marker_boundaries(text: str) -> list[int]:
    """The markers-only baseline: the start of every sentence that opens with a ``STEP_MARKERS``
    phrase."""
    out = []
    for m in _MARKER_RE.finditer(text):
        start = m.start() + len(m.group(0)) - len(m.group(0).lstrip())
        if not out or out[-1] != start:
            out.append(start)
    return out


BASELINES: dict[str, Callable[[str], list[int]]] = {
    "paragraphs": paragraph_boundaries,
    "paragraphs - restatement": lambda text: paragraph_boundaries(text, skip_first=True),
    "markers only": marker_boundaries,
}
