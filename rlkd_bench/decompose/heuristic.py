"""The heuristic decomposer: an offline, deterministic segmenter for reasoning traces.

No model is involved. The trace is cut into paragraphs, lines and sentences ("units"); each unit
is classified by its opening words (a discourse marker that opens a step such as "First", "Next",
"I need to", "To find", "Let me calculate", "What about"; a check such as "Wait", "Let me
double-check", "Hmm, is that right?"; a detour "Alternatively..."; a continuation "So", "That
means") and by whether it states a result (an equation ``... = 12`` or "... is 12"). A new step
opens at a step marker (or at a new paragraph that sets out new work) once the current step has
reached a result; checks, detours and a closing recap stay in the step they examine, and a
recap's "First ..., then ..." does not open steps. The opening paragraph that restates the
problem is not a step, nor is a "Right, so <the problem again>." sentence right after it, nor a
route set aside from its first words ("One tempting shortcut: ...", "First thought: ..."). A check
runs on over a paragraph it only announced, through a paragraph that opened with it until it
closes ("... Good.", "... is right.", "✓"), and through sentences whose purpose is a check ("...
to double-check."). In a worked list, each labelled line with a result ("Gene B: ... = 1/4")
opens a step.

Each step then becomes a triple: meta-reasoning = the step's intention sentence without its
result (cut before any relation sign, before the clause that states the step's answer, with no
dangling operator or unclosed bracket), sub-problem = a question made from that intention (its
object, "so <the quantity> is ...", a line's label, "... when <condition>", "let me <do X>", or
the equation's left side), answer = the last result the step states outside its checks and
detours (one an earlier step already gave yields to another of its own results). The final
answer comes from the trace's ``\\boxed{}`` (answer field first, then the reasoning), else from
an "the answer is ..." sentence; a trace with none gets an error, never a made-up answer.

It is the offline default annotator. ``bench/bench_structure.py`` scores its step boundaries
against the synthetic generator's truth and hand-written references (in-sample and held-out);
nothing yet scores the LLM annotators against it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlkd_bench.answers import last_boxed
from rlkd_bench.decompose import DecomposeResult
from rlkd_bench.structure import Decomposition, Step, contains_tag, render_steps, validate

NAME = "heuristic"
PROMPT_VERSION = "heuristic-v3"


class NoDecomposition(ValueError):
    """The trace cannot be decomposed (no text, no final answer); the message says why."""


# ----------------------------------------------------------------------------------------------
# units: paragraphs, lines, sentences

_PARA_RE = re.compile(r"\n[ \t]*\n\s*")
# A sentence ends at . ! ? (and closing quotes/brackets) followed by space and a non-lowercase
# character, so decimals (0.25) and "e.g. the" do not split.
_SENT_END_RE = re.compile(r"(?:[.?]|(?<!\d)!)[\"')\]]*[ \t]+(?=[^a-z\s=+\-×÷*/<>≤≥·])")
_ALNUM_RE = re.compile(r"[A-Za-z0-9]")


@dataclass(frozen=True)
class Unit:
    start: int
    end: int
    text: str
    para_start: bool  # first unit with words or numbers in its paragraph
    line_start: bool = False  # first unit of its line


def units(text: str) -> list[Unit]:
    """Cut ``text`` into sentence-sized units with their character spans."""
    out: list[Unit] = []
    para_bounds, pos = [], 0
    for m in _PARA_RE.finditer(text):
        para_bounds.append((pos, m.start()))
        pos = m.end()
    para_bounds.append((pos, len(text)))
    for p_start, p_end in para_bounds:
        first = True
        line_start = p_start
        for line in text[p_start:p_end].split("\n"):
            line_end = line_start + len(line)
            cuts = [line_start] + [line_start + m.end() for m in _SENT_END_RE.finditer(line)] + [line_end]
            for k, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
                raw = text[a:b]
                stripped = raw.strip()
                if not stripped:
                    continue
                a += len(raw) - len(raw.lstrip())
                b = a + len(stripped)
                has_words = bool(_ALNUM_RE.search(stripped))
                out.append(Unit(a, b, stripped, para_start=first and has_words, line_start=k == 0))
                if has_words:
                    first = False
            line_start = line_end + 1
    return out


# ----------------------------------------------------------------------------------------------
# classification

_FILLER_RE = re.compile(
    r"^(?:(?:okay|ok|alright|all right|so|and|well|hmm+|um+|oh|great|good|right)\b[\s,.!:;-]*)+",
    re.IGNORECASE,
)
_WAIT_RE = re.compile(r"^(?:but\s+)?(?:wait|hold on|hang on|actually|oops|no,|nope)\b", re.IGNORECASE)
_DETOUR_RE = re.compile(
    r"^(?:hmm+,?\s+)?(?:alternatively|another (?:way|approach|method)|or maybe|or,? alternatively"
    r"|maybe (?:i|we) (?:could|should|can)|i could also|what if (?:i|we)"
    # a route shown only to be set aside: "One tempting shortcut: ...", "My first thought was ..."
    r"|(?:one|a) (?:tempting|naive|common|possible) (?:shortcut|mistake|error|approach|idea)"
    r"|(?:my )?first (?:thought|instinct|idea)(?: was| would be|:)|(?:one|someone) might (?:think|be tempted)"
    r"|(?:if )?someone thought)(?:\b|(?<=:))",
    re.IGNORECASE,
)
_CHECK_RE = re.compile(
    r"^(?:let(?: me|'s| us)\s+(?:(?:just|quickly|also|now|again|then)\s+)*(?:double[- ]?check|check|verify|confirm|re-?check"
    r"|recheck|re-?verify|make sure|recap|go (?:over|through|back)|review|see if|sanity[- ]check|plug)"
    r"|(?:just\s+)?to (?:be sure|double[- ]?check|verify|check|confirm|make sure)|double[- ]?check"
    r"|checking|verif(?:y|ying)|(?:another|one more|a quick|quick|as a|sanity) check|is that (?:right|correct)|does (?:that|this) (?:make sense|check)"
    r"|that (?:seems|checks|looks|makes sense)|yes\b|yeah\b|yep\b|correct\b)",
    re.IGNORECASE,
)
# "Let me list all paths ... to double-check." : work whose stated purpose is a check
_CHECK_PURPOSE_RE = re.compile(
    r"\b(?:to (?:double[- ]?check|re-?check|verify|confirm)|as a (?:sanity |quick )?check)\b[^.?!]{0,20}[.?!:]?$",
    re.IGNORECASE,
)
# "Gene B: Bb × Bb gives ...", "3 women, 1 man: ...": a labelled line of a worked list
_LABEL_RE = re.compile(r"^(?P<label>[A-Za-z0-9][^:=\n]{0,30}?):\s+(?=\S)")
_CHECK_DONE_RE = re.compile(
    r"^(?:good|right|yes|yep|yeah|correct|great|perfect|ok(?:ay)?|that (?:checks out|works|matches))[.!]?$"
    r"|\b(?:(?:is|was|are) (?:right|correct)|checks out|adds up|all works)[.!]?$|✓\W{0,3}$",
    re.IGNORECASE,
)
_RETURN_RE = re.compile(
    r"\b(?:stick with|go with|keep (?:it|the|\$?\d)|back to|anyway|either way|doesn'?t change|same thing"
    r"|the direct way|not (?:needed|necessary)|overkill|more complicated)\b",
    re.IGNORECASE,
)
_INTENT_VERBS = (
    r"(?:find|figure out|calculate|compute|work out|determine|get|convert|solve(?: for)?|obtain|count"
    r"|add|subtract|multiply|divide|express|set up|evaluate|simplify|tackle|handle|look at|consider|use|apply"
    r"|try|make|write|list|plug|substitute|rewrite|define|expand|factor|recall|compare|check whether)"
)
_ENUM = r"(?:first(?:ly)?|second(?:ly)?|third(?:ly)?|then|finally|lastly|step\s*\d+|case\s*\d+|suppose|assume)"
_SOFT = r"(?:next|now|after that|afterwards|moving on|to start|to begin|the next (?:step|thing|part))"
_OPEN_RE = re.compile(
    rf"^(?:(?P<enum>{_ENUM})\b|(?P<soft>{_SOFT})\b"
    rf"|(?P<intent>to {_INTENT_VERBS}\b"
    rf"|let(?: me|'s| us) (?:now |first |next |then |also )?(?:start|begin|{_INTENT_VERBS}|move on|think about)\b"
    rf"|(?:i|we) (?:still |now |also |first |then )?(?:need|have to|want to|should|must|will need|'ll need"
    rf"|'ll {_INTENT_VERBS}|am going to|can now)\b"
    rf"|(?:what|how) about\b))",
    re.IGNORECASE,
)
_QUESTION_RE = re.compile(r"^(?:what|how (?:many|much|long|far)|which)\b[^?]*\?$", re.IGNORECASE)
_CONT_RE = re.compile(
    r"^(?:so|thus|therefore|hence|which|yes|yeah|yep|right|ok|okay|good|correct|but|overall|in (?:summary|conclusion)"
    r"|the (?:final )?answer (?:is|should|would|must)"
    r"|(?:that|this|it)(?:'s| is| was| gives| means| makes| checks)"
    r"|because|since|plugging|substituting|dividing|multiplying|adding|subtracting)\b",
    re.IGNORECASE,
)
_DEFINE_RE = re.compile(r"^the [\w' -]{2,60}? (?:is|are|would be|will be|comes to|equals)\b[^=]*=", re.IGNORECASE)
_INTENT_ANYWHERE_RE = re.compile(
    rf"\b(?:need to|have to|want to|to {_INTENT_VERBS}|let(?: me|'s) {_INTENT_VERBS}|i still need)\b",
    re.IGNORECASE,
)
_NUM = r"-?\$?\d(?:[\d,]*\d)?(?:\.\d+)?%?"
_VAL = rf"{_NUM}(?:/\d+(?!\d|\.\d))?"  # a number or a fraction, '3/16'
_EQ_RESULT_RE = re.compile(rf"[=≡≈]\s*(?:\\[a-z]+\{{)?\s*(?:(?P<num>{_VAL})(?![\w.]?\w)|(?P<txt>[^=\n,;]{{1,40}}?)(?=[,;]|\.(?:\s|$)|\s*$|\n|\\\]|\\\)|\s+(?:so|which|and)\b|\s+(?=[A-Z])))")
_PHRASE_RESULT_RE = re.compile(
    rf"\b(?:is|are|was|equals|gives|get|makes|comes to|totals?|that's|means|so)\s+(?:about\s+|exactly\s+)?"
    rf"(?P<val>{_VAL}(?:\s+(?!(?:and|so|then|which|is|are|for|of|to|in|at|but|because|if|the)\b)[a-z][a-z/-]*"
    rf"(?:\s+(?!(?:and|so|then|which|is|are|for|of|to|in|at|but|because|if|the)\b)[a-z][a-z/-]*)?)?)",
    re.IGNORECASE,
)
_MATH_ONLY_RE = re.compile(r"\b(?!(?:mod|sin|cos|tan|log|ln|max|min|gcd|lcm|det|exp|lim)\b)[A-Za-z]{2,}")
_LATEX_CMD_RE = re.compile(r"\\[A-Za-z]+")


def _strip_fillers(text: str) -> str:
    return _FILLER_RE.sub("", text).lstrip()


def _math_only(text: str) -> bool:
    return not _MATH_ONLY_RE.search(_LATEX_CMD_RE.sub("", text))


_CONCLUDE_RE = re.compile(
    r"^(?:so|thus|therefore|hence)\b|[,;]\s*(?:so|therefore|thus|hence)\b|\b(?:which|this|that) means\b|\bmust be\b",
    re.IGNORECASE,
)


def _has_result(text: str, conclusions: bool = True) -> bool:
    """A unit reaches a result: an equation or relation, "is 12", or (unless it states an
    intention, "So now I need to ...") a conclusion ("..., so C is a knave")."""
    return bool(
        _EQ_RESULT_RE.search(text) or _PHRASE_RESULT_RE.search(text) or (conclusions and _CONCLUDE_RE.search(text))
    )


OPEN, CHECK, DETOUR, CONT, PLAIN, MATH = "open", "check", "detour", "cont", "plain", "math"


def classify(text: str) -> tuple[str, bool]:
    """(kind, soft): kind of a unit by its opening words; ``soft`` marks an opener that is not a
    bare enumeration ("Now", "Next", "I need to"), the only kind allowed to open a step inside a
    check or recap."""
    if _math_only(text):
        return MATH, False
    if _DETOUR_RE.match(text):
        return DETOUR, False
    body = _strip_fillers(text)
    if _WAIT_RE.match(text) or _WAIT_RE.match(body):
        return CHECK, False
    if _DETOUR_RE.match(body):
        return DETOUR, False
    if _CHECK_RE.match(body) or _CHECK_PURPOSE_RE.search(body) or "✓" in body:
        return CHECK, False
    m = _OPEN_RE.match(body)
    if m:
        soft = m.group("enum") is None or bool(_INTENT_ANYWHERE_RE.search(body[m.end():]))
        if not soft and _CHECK_RE.match(_strip_fillers(body[m.end():].lstrip(" ,:"))):
            return CHECK, False  # "Then let me verify ..."
        return OPEN, soft
    if _QUESTION_RE.match(body):
        return OPEN, True
    if _CONT_RE.match(text) or _CONT_RE.match(body):
        return CONT, False
    return PLAIN, False


# ----------------------------------------------------------------------------------------------
# segmentation


@dataclass
class _StepUnits:
    units: list[tuple[Unit, str, str]]  # (unit, kind, mode when read)
    has_result: bool = False


_PREAMBLE_START_RE = re.compile(
    r"^(?:okay|ok|alright|all right|so|hmm|let'?s see|let me (?:read|see|think|try|understand|parse)"
    r"|the (?:problem|question)|we(?:'re| are) (?:given|asked|told)|i(?:'m| am) (?:given|asked|told)"
    r"|i (?:need|have) to|we (?:need|have) to|given)\b",
    re.IGNORECASE,
)
_WORD_RE = re.compile(r"[a-z]{3,}")


def _overlap(text: str, problem: str) -> float:
    words = set(_WORD_RE.findall(text.lower()))
    if not words or not problem:
        return 0.0
    return len(words & set(_WORD_RE.findall(problem.lower()))) / len(words)


def _preamble_length(us: list[Unit], problem: str) -> int:
    """How many leading units restate the problem rather than work on it."""
    if not us:
        return 0
    first_para = [u for u in us[1:] if u.para_start]
    n_first = us.index(first_para[0]) if first_para else len(us)
    head = us[:n_first]
    looks_like_preamble = bool(_PREAMBLE_START_RE.match(head[0].text)) or _overlap(head[0].text, problem) >= 0.5
    if not looks_like_preamble or n_first == len(us):
        return 0
    if _CALC_RE.search(head[0].text):
        return 0  # "First, I add 2 and 3: 2 + 3 = 5." works on the problem: the first step, not a restatement
    if not any(_EQ_RESULT_RE.search(u.text) for u in head):
        return n_first  # the whole first paragraph restates the problem
    n = 1  # the first sentence, then more until one works on something
    while n < n_first and classify(head[n].text)[0] != OPEN and not _has_result(head[n].text):
        n += 1
    return n


_CALC_RE = re.compile(rf"\d[\d.,]*(?:\s*[+\-−×÷*/·⋅]\s*\d[\d.,]*)+\s*=\s*(?P<rhs>{_NUM})")
_WORDS_RESULT_RE = re.compile(
    rf"\d[\d.,]*(?:\s+(?:times|plus|minus|divided by|multiplied by)\s+\d[\d.,]*)+\s+(?:is|are|equals|gives)\s+(?P<rhs>{_NUM})",
    re.IGNORECASE,
)
_ANY_NUM_RE = re.compile(_NUM)
_SLIP_RE = re.compile(r"\b(?:no|not right|mistake|wrong|miscalculated|messed up|off by)\b", re.IGNORECASE)


def _norm_num(text: str) -> str:
    text = text.replace("$", "").replace(",", "").replace("%", "").lstrip("+")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _numbers(text: str) -> set[str]:
    return {_norm_num(m.group(0)) for m in _ANY_NUM_RE.finditer(text)}


class _Seen:
    """Which numbers the problem and the text mention before a given position."""

    def __init__(self, text: str, problem: str) -> None:
        self.problem = _numbers(problem)
        self.first: dict[str, int] = {}
        for m in _ANY_NUM_RE.finditer(text):
            self.first.setdefault(_norm_num(m.group(0)), m.start())

    def before(self, number: str, pos: int) -> bool:
        return number in self.problem or self.first.get(number, pos) < pos


def _fresh_calc(u: Unit, seen: _Seen) -> bool:
    """True if the unit computes a number not mentioned before it: new work, not a check or a
    recap (those only repeat numbers already on the page)."""
    return any(
        not seen.before(_norm_num(m.group("rhs")), u.start)
        for rx in (_CALC_RE, _WORDS_RESULT_RE)
        for m in rx.finditer(u.text)
    )


_RESTATE_RE = re.compile(r"^(?:(?:right|alright|all right|okay|ok),?\s+)?so\b(?!\s+(?:that|far)\b)", re.IGNORECASE)


def _restates(u: Unit, seen: _Seen) -> bool:
    """A paragraph's opening sentence that says the problem again ("Right, so I need to solve
    ... ."): a restating opener, and no number the problem and the text before have not given."""
    if not (u.para_start and _RESTATE_RE.match(u.text)) or classify(u.text)[0] in (CHECK, DETOUR):
        return False
    found = [m.group("num") for m in _EQ_RESULT_RE.finditer(u.text) if m.group("num")]
    found += [m.group("val") for m in _PHRASE_RESULT_RE.finditer(u.text)]
    return not any(not seen.before(_norm_num(_ANY_NUM_RE.search(f).group(0)), u.start) for f in found)


def _segment_units(text: str, us: list[Unit], problem: str = "") -> list[_StepUnits]:
    """Group units into steps. A step opens, once the current one has reached a result, at:
    a step marker (in a check only a non-enumerating one, "Now I need ..."); a new paragraph that
    sets out an intention or a result; "The X is ... ="; or a computation of a number the text
    has not mentioned before. Checks, detours, corrected slips and everything after "the answer
    is ..." stay in the step they belong to unless they compute something new."""
    start = _preamble_length(us, problem)
    seen = _Seen(text, problem)
    if 0 < start < len(us) and _restates(us[start], seen):
        start += 1  # "Right, so <the problem again>." after a planning paragraph is not a step either
    steps: list[_StepUnits] = []
    mode = "main"
    concluded = False  # the trace has said "the answer is ...": what follows checks it
    announced = False  # the last paragraph only announced a check: this one carries it out
    para_results = False
    check_para = False  # this paragraph opened with a check: its new numbers are the check's own
    for u in us[start:]:
        kind, soft = classify(u.text)
        if u.para_start:
            announced = mode == "check" and not para_results
            para_results = False
            check_para = kind == CHECK
            if kind not in (CHECK, DETOUR) and not (announced and not soft):
                mode = "main"
        result = _has_result(u.text) if mode == "main" or (mode == "check" and not para_results) else None
        para_results = para_results or bool(result)
        cur = steps[-1] if steps else None
        if cur is None:
            opens = True
        elif concluded:
            opens = kind in (OPEN, PLAIN) and _fresh_calc(u, seen)
        elif u.para_start and kind in (OPEN, PLAIN) and all(m == "detour" for _, _, m in cur.units):
            opens = True  # the work after a route set aside from the start
        elif (mode == "main" and u.line_start and not u.para_start and kind in (PLAIN, MATH)
              and cur.has_result and result and _LABEL_RE.match(u.text)):
            opens = True  # the next labelled line of a worked list
        elif not cur.has_result or kind in (MATH, CHECK, DETOUR, CONT):
            opens = False  # an intention without a result yet keeps gathering its work
        elif kind == OPEN:
            opens = (
                mode == "main"
                or (mode == "check" and (soft or (not (announced or check_para) and _fresh_calc(u, seen))))
                or (mode == "fix" and soft)
                or u.para_start
            )
        elif mode == "main":
            body = _strip_fillers(u.text)
            opens = (
                (u.para_start and (bool(_INTENT_ANYWHERE_RE.search(body)) or _has_result(body)))
                or bool(_DEFINE_RE.match(body))
                or _fresh_calc(u, seen)
            )
        else:  # inside a check only new work opens a step; a corrected slip or a detour never does
            opens = mode == "check" and not (announced or check_para) and _fresh_calc(u, seen)
        if opens:
            steps.append(_StepUnits([]))
            mode = "main"
        if kind == CHECK:
            mode = "fix" if _SLIP_RE.search(u.text) else "check"
        elif kind == DETOUR:
            mode = "detour"
        cur = steps[-1]
        cur.units.append((u, kind, mode))
        if mode == "main" and (
            _has_result(u.text, conclusions=kind != OPEN) if result is None or kind == OPEN else result
        ):
            cur.has_result = True
        if check_para and _CHECK_DONE_RE.search(u.text):
            check_para = False  # "... Good." closes the check: new numbers after it are new work
        if mode == "detour" and _RETURN_RE.search(u.text):
            mode = "main"  # "... Let me stick with the first way." ends the detour
        if mode != "detour" and _ANSWER_LINE_RE.match(_strip_fillers(u.text)):
            concluded = True
    kept = [s for s in steps if any(m != "detour" for _, _, m in s.units)]
    return kept or steps  # a route set aside from its first word is not a step


def segment(reasoning: str, problem: str = "") -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the steps of ``reasoning``, in order.

    The opening restatement of the problem is left out, so the first span starts where the
    work starts. ``problem`` (optional) helps to recognise that restatement.
    """
    return [(s.units[0][0].start, s.units[-1][0].end) for s in _segment_units(reasoning, units(reasoning), problem)]


# ----------------------------------------------------------------------------------------------
# meta-reasoning, sub-problem, answer

_LEAD_RE = re.compile(
    rf"^(?:(?:okay|ok|alright|all right|so|and|well|hmm+|now that i have that"
    r"|let me start with this|let's start with this)\b[\s,.:;-]*"
    # "First, ...", "Next I need ..." but not the adjective in "First instinct: ..."
    rf"|(?:{_ENUM}|{_SOFT})(?:\s*[,:]\s*|\s+(?=(?:i|we|let|let's|to|the|it|that|this|there|i'll|we'll"
    rf"|{_INTENT_VERBS})\b)))+",
    re.IGNORECASE,
)
_MATH_RUN_RE = re.compile(r"[\s\d.,+\-−×÷*/^()\[\]{}$\\a-zA-Z]*$")
_TRAIL_RESULT_RE = re.compile(
    r"(?:[,;:]?\s*(?:which|that)(?:'s| is| gives| makes| equals)\b.*"
    r"|\s+(?:is|are|equals|gives|was|makes|comes to)\s*$|[\s,;:=]+$|\s+(?:that's|so|so that's|giving)\s*$)",
    re.IGNORECASE,
)
_OBJ_CHARS = r"(?:[^.,;:?!]|(?<=\d)[.,](?=\d)|\.\.)"
_QUANTITY_VERBS = ("find", "figure out", "calculate", "compute", "work out", "determine", "get", "obtain",
                   "count", "evaluate")
_OBJ_RE = re.compile(
    rf"\b(?:need to|have to|want to|should|must|to|let me|let's|i'll|we'll)\s+"
    rf"(?:first\s+|now\s+|also\s+|then\s+|just\s+)?(?P<verb>{_INTENT_VERBS})\s+(?P<obj>{_OBJ_CHARS}+)",
    re.IGNORECASE,
)
_NEED_RE = re.compile(rf"\b(?:i|we) (?:still |also |now )?need (?!to\b)(?P<obj>{_OBJ_CHARS}+)", re.IGNORECASE)
_IMPERATIVE_RE = re.compile(rf"^(?P<verb>{_INTENT_VERBS})\s+(?P<obj>{_OBJ_CHARS}+)", re.IGNORECASE)
_ABOUT_RE = re.compile(rf"\b(?:what|how) about\s+(?P<obj>{_OBJ_CHARS}+)", re.IGNORECASE)
_CASE_RE = re.compile(
    r"^(?:case\s*\d+\s*[:.)-]?\s*|suppose\s+(?:that\s+)?|assume\s+(?:that\s+)?|if\s+)(?P<cond>[^.?!:]{3,120})",
    re.IGNORECASE,
)
_INTENT_CLAUSE_RE = re.compile(
    rf"\b(?:(?:i|we)\s+(?:still\s+|now\s+|also\s+|first\s+|then\s+)?(?:need|have to|want to|should|must"
    rf"|will need|'ll need)|let(?: me|'s| us)\s+(?!see\b|think\b)\w+|to {_INTENT_VERBS})\b",
    re.IGNORECASE,
)
_CONCLUSION_RE = re.compile(
    r"(?:^|[,;:]\s*|\b)(?:so|therefore|thus|hence|which means|this means|that means)\s+(?:that\s+)?"
    r"(?P<c>(?:[^.;!?]|[.!?](?=\S)){3,80})",
    re.IGNORECASE,
)
_OBJ_CUT_RE = re.compile(
    r"(?:\s+(?:by|using|with|so that|so|and then|which|from here|in order to)\b.*"
    r"|\s+(?:first|now|next|then|here|again|too|as well)\s*)$",
    re.IGNORECASE,
)
_WH_RE = re.compile(r"^(?:how|what|when|where|whether|which|who|why)\b", re.IGNORECASE)
_NP_EQ_RE = re.compile(
    r"^(?!(?:it|this|that|there|he|she|they|we|i|you)\b)(?P<np>[A-Za-z](?:(?!\b(?:when|if|where|because|since)\b)"
    r"[A-Za-z0-9' ()-]){2,60}?)\s*(?:=|is\s+(?:about\s+)?-?\$?\d)",
    re.IGNORECASE,
)
_SUBJ_RE = re.compile(r"^(?P<np>the [\w' -]{2,60}?) (?:is|are|would be|will be|comes to|equals)\b", re.IGNORECASE)
_WORDS_CALC_RE = re.compile(
    r"(?P<expr>-?\d[\d.,]*(?:\s+(?:times|plus|minus|divided by|over|multiplied by)\s+-?\d[\d.,]*)+)\s+(?:is|are|equals|gives)\b",
    re.IGNORECASE,
)
_STOP_OBJ_RE = re.compile(r"^(?:it|this|that|them|these|those|the answer|the result|something)$", re.IGNORECASE)


_RELATION_RE = re.compile(r"[=≡≈→⇒]|\s(?:gives|yields)\s+-?\d")
# an operator, "√" or a joining word the cut left hanging at the end: 'C(5,3)·', 'so there'
_DANGLING_RE = re.compile(r"(?:\s*[+\-−×÷*/^·⋅√:,;]+|\s+(?:so|and|then|there|which|that|to|by|with|as))+$")


def _sentence(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip(" ,;:-")
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".?!" else text + "."


def _without_result(text: str) -> str:
    """The part of a sentence before its computation: 'The area is 17 × 10 = 170.' -> 'The area'."""
    cut = text
    rel = _RELATION_RE.search(cut)
    eq = rel.start() if rel else -1
    if eq >= 0:
        head = cut[:eq]
        m = _MATH_RUN_RE.search(head)
        # walk back over the math before '=', but keep words: stop at the last run of 3+ letters
        words = list(re.finditer(r"[A-Za-z]{3,}", head))
        stop = words[-1].end() if words else 0
        start = max(m.start() if m else eq, stop)
        cut = head[:start]
    m = _WORDS_CALC_RE.search(cut)
    if m:
        cut = cut[: m.start()]
    prev = None
    while prev != cut:
        prev = cut
        cut = _TRAIL_RESULT_RE.sub("", cut).rstrip()
        cut = re.sub(r"\s+(?:is|are|of)$", "", cut)
        cut = _DANGLING_RE.sub("", cut).rstrip()
        cut = _unclosed(cut)
    return cut.strip()


def _unclosed(text: str) -> str:
    """Cut an opening bracket the cut left unclosed: 'Round (A_' -> 'Round'."""
    for o, c in ("()", "[]", "{}"):
        if text.count(o) > text.count(c):
            text = text[: text.rfind(o)].rstrip()
    return text


def _object(text: str) -> tuple[str | None, str | None]:
    """What an intention sentence is after, and the verb: 'I need to find the total cost.' ->
    ('find', 'the total cost'); 'What about the area?' -> (None, 'the area')."""
    body = _LEAD_RE.sub("", text)
    for rx in (_ABOUT_RE, _NEED_RE, _OBJ_RE, _IMPERATIVE_RE):
        m = rx.search(body)
        if m:
            obj = _OBJ_CUT_RE.sub("", m.group("obj")).strip()
            obj = re.sub(r"^(?:my|our)\s+", "the ", obj, flags=re.IGNORECASE)
            if obj and not _STOP_OBJ_RE.match(obj) and len(obj) <= 120 and "=" not in obj:
                return (m.groupdict().get("verb") or None), obj
    m = _SUBJ_RE.match(body) or _NP_EQ_RE.match(body)
    if m and re.search(r"[A-Za-z]{3,}", m.group("np")):
        np = m.group("np").strip()
        return None, np[0].lower() + np[1:] if np[1:2].islower() else np
    return None, None


def _question(verb: str | None, obj: str) -> str:
    if verb and verb.lower() not in _QUANTITY_VERBS:
        if verb.lower().startswith("solve"):
            return f"What is {obj}?"
        return f"What do we get when we {verb.lower()} {obj}?"
    if _WH_RE.match(obj):
        return _sentence(obj).rstrip(".") + "?"
    return f"What is {obj[0].lower() + obj[1:] if obj[:4].lower() == 'the ' else obj}?"


def _meta(text: str) -> str:
    """The intention without its result; a trailing '..., so let me X' clause is the intention."""
    body = _LEAD_RE.sub("", text)
    case = _CASE_RE.match(text.strip())
    if case:
        return _sentence(f"Consider the case where {_without_result(case.group('cond')).rstrip(' ,;')}")
    m = _INTENT_CLAUSE_RE.search(body)
    if m and m.start() > 0 and not re.match(r"(?i)to\b", body):
        body = body[m.start():]
    return _sentence(_without_result(body))


# an expression of numbers, one-letter variables, short function names and operators
_EXPR_RE = re.compile(
    r"(?:(?:\d[\d.]*|\b[A-Za-z](?:_\w+)?(?![\w(])|\b[A-Za-z]{1,4}\(|[()\[\]√²³⁴^·⋅+\-−×÷*/!,])\s*)+$"
)
# '..., so its rate is ...', 'so one pencil costs 1.20 / 3 = ...': the quantity a conclusion names
_SO_NP_RE = re.compile(
    r"\bso\s+(?:that\s+)?(?P<np>(?:the|its|their|his|her|one|each|a|an)\s+[\w' -]{2,50}?)\s+"
    r"(?P<verb>is|are|was|equals|costs|comes to|=)\s",
    re.IGNORECASE,
)


def _equation_lhs(text: str) -> str | None:
    """The computation a unit shows: '... 17 × 10 = 170' -> '17 × 10'; '4 times 3 is 12' too."""
    eq = text.find("=")
    if eq > 0:
        head = text[:eq]
        m = re.search(r"[\d(][\d\s.,+\-−×÷*/^()xX]*$", head.rstrip())
        if m and re.search(r"[+\-−×÷*/^]", m.group(0)):
            return m.group(0).strip()
    m = _WORDS_CALC_RE.search(text)
    if m:
        return m.group("expr")
    for eq in (e.start() for e in re.finditer("=", text)):  # 'Then r² + s² + t² = ...', 'max(3, 2) + 5 = 8'
        m = _EXPR_RE.search(text[max(0, eq - 60) : eq].rstrip())  # the expression is short: look near
        expr = m.group(0).lstrip(" ,+−×÷*/^·⋅=").rstrip(" ,") if m else ""
        if re.search(r"[+\-−×÷*/^·⋅]", expr) and re.search(r"\w", expr) and len(expr) <= 40:
            return expr
    return None


def _result_of(text: str) -> str | None:
    """The brief result a unit states: the last equation's right side, else 'is 12 dollars'."""
    eqs = list(_EQ_RESULT_RE.finditer(text))
    if eqs:
        m = eqs[-1]
        rhs = (m.group("num") or m.group("txt")).strip().rstrip(".")
        lhs_m = re.search(r"(?:^|[\s:,(])([A-Za-z]\w?(?:\s*[+\-]\s*\d+)?|\d*[a-z](?:\s*[+\-]\s*\d+)?)\s*$",
                          text[: m.start()])
        if lhs_m and re.search(r"[a-z]", lhs_m.group(1)) and len(lhs_m.group(1)) <= 12:
            return f"{lhs_m.group(1).strip()} = {rhs}"  # an algebra step: 'x = 12', '2x + 4 = 28'
        return rhs or None
    phrases = list(_PHRASE_RESULT_RE.finditer(text))
    if phrases:
        return phrases[-1].group("val").strip()
    return None


_CLAUSE_CUT_RE = re.compile(r"[:;]\s|,\s+(?:so|and|but|which)\b|\s+(?:so|because|since)\s")
_ANSWER_LINE_RE = re.compile(r"^(?:so,?\s+|therefore,?\s+|thus,?\s+)?(?:the\s+)?(?:final\s+)?answer\b", re.IGNORECASE)


def _conclusion(text: str) -> str | None:
    found = list(_CONCLUSION_RE.finditer(text))
    if not found:
        return None
    c = found[-1].group("c")
    return (c.rsplit(" ", 1)[0] if len(c) == 80 else c).strip(" ,")


def _answer(step: _StepUnits, main: list[tuple[Unit, str]], taken: frozenset[str] = frozenset()) -> str:
    """The last result outside checks and detours; else a conclusion ('so C is a knave'); else any
    result in the step; else its last number; else its last sentence, shortened. A result an
    earlier step already gave (``taken``; a recap repeating it) gives way to another own result."""
    own = [(u.text, k) for u, k in main if not _ANSWER_LINE_RE.match(u.text)]  # "So the answer is 26." last
    found = _first_answer(step, main, own)
    if found in taken:
        other = next((r for r in (_result_of(t) for t, _ in reversed(own)) if r and r not in taken), None)
        return other or found
    return found


def _first_answer(step: _StepUnits, main: list[tuple[Unit, str]], own: list[tuple[str, str]]) -> str:
    for texts in (own, [(u.text, k) for u, k in main], [(u.text, k) for u, k, _ in step.units]):
        for t, _ in reversed(texts):  # the last result: an equation's right side, "is 12 dollars"
            found = _result_of(t)
            if found:
                return found
        for t, kind in reversed(texts):  # no result: a conclusion ("..., so C is a knave")
            found = _conclusion(t) if kind != OPEN else None
            if found:
                return found
    nums = _ANY_NUM_RE.findall(" ".join(u.text for u, _, _ in step.units))
    return nums[-1] if nums else _sentence(step.units[-1][0].text)[:80]


_VERB_LABEL_RE = re.compile(
    r"^(?:bring|move|factor|expand|square|cube|divide|multiply|add|subtract|substitute|plug|simplify|collect"
    r"|combine|cancel|rearrange|isolate|take|apply|use|set|write|solve)\b",
    re.IGNORECASE,
)
_WHEN_RE = re.compile(r"\bwhen\s+(?P<cond>[^:;,.?!]*?=[^:;,.?!]*?)(?=\s*[:;,.?!]|$)", re.IGNORECASE)
_SELF_RE = re.compile(
    r"^(?:let(?: me|'s| us)|i'll|we'll|i (?:need|have|want) to|we (?:need|have|want) to|i (?:can|should|will)"
    r"|we (?:can|should|will))\s+(?:(?:now|also|first|then|just)\s+)?(?P<rest>.+)$",
    re.IGNORECASE,
)


def _label(text: str) -> str | None:
    """The label of a labelled line, 'Gene B: Bb × Bb ...' -> 'Gene B', if it has words."""
    m = _LABEL_RE.match(re.sub(r"(?i)^(?:now|and|then|next|so)\s+", "", _LEAD_RE.sub("", text)))
    if not m:
        return None
    label = re.sub(r"(?i)^(?:(?:then|now|so|and|next|also|from|by|with|using)\s+)+", "", m.group("label").strip())
    if not label:
        return None
    return None if _CHECK_RE.match(label) else label


def _label_question(label: str) -> str:
    low = label[0].lower() + label[1:] if label[1:2].islower() or len(label) == 1 else label
    if _VERB_LABEL_RE.match(label) and not re.match(r"(?i)\w+ing\b", label):
        return f"What do we get when we {low}?"
    if re.match(r"(?i)[a-z]+ing\b", label):
        return f"What do we get by {low}?"
    if re.fullmatch(r"[A-Za-z][a-z]+(?: [a-z]+){0,2}", label):  # 'Total', 'Round seeds'
        return f"What is the {label.lower()}?"
    if re.search(r"\bmod\b|^[A-Za-z]\(|^[^a-z]*$", label):  # '2026 mod 4', 'P(round and green)'
        return f"What is {label}?"
    return f"What do we get for {low}?"


def _label_phrase(label: str) -> str:
    if re.fullmatch(r"[A-Za-z][a-z]+(?: [a-z]+){0,2}", label):
        return f"the {label.lower()}"
    return label[0].lower() + label[1:] if label[1:2].islower() else label


def _clause_question(meta: str) -> str | None:
    """A question from an intention clause: 'Let me do cases by X.' -> 'What do we get when we do
    cases by X?'; 'It lands when y(t) = 0.' -> 'When is y(t) = 0?'."""
    text = meta.rstrip(".?! ")
    m = _WHEN_RE.search(text)
    if m:
        return f"When is {m.group('cond').strip()}?"
    m = _SELF_RE.match(text)
    if m and len(m.group("rest")) >= 6:
        rest = _CLAUSE_CUT_RE.split(m.group("rest"), maxsplit=1)[0].strip()
        if re.match(r"(?i)(?:be|see|think|make sure|check|verify)\b", rest):
            return None
        return f"What do we get when we {rest}?"
    return None


def meta_states_answer(meta: str, answer: str) -> bool:
    """Whether a meta-reasoning gives away its step's answer: the answer, or the right side of an
    'x = 12' answer, appears in it as a whole token. The step format forbids this: the
    meta-reasoning says why the sub-problem is next, not what it comes to."""
    a = re.sub(r"\s+", " ", answer).strip().strip("$").rstrip(".").strip()
    found = {a}
    if "=" in a:
        found.add(a.rsplit("=", 1)[1].strip())
    m = re.sub(r"\s+", " ", meta)
    return any(c and _has_token(m, c) for c in found)


def _has_token(text: str, token: str) -> bool:
    """``token`` occurs in ``text`` not glued to a word or number on either side (no regex built per
    call: answers are many and different, and compiling each would dominate the run time)."""
    i = text.find(token)
    while i >= 0:
        before = text[i - 1] if i else " "
        after = text[i + len(token) : i + len(token) + 2]
        glued_after = bool(after) and (after[0].isalnum() or after[0] == "_" or (after[0] == "." and after[1:2].isdigit()))
        if not (before.isalnum() or before in "._") and not glued_after:
            return True
        i = text.find(token, i + 1)
    return False


_CLAUSE_BOUNDARY_RE = re.compile(
    r"[,;:]\s+|\s+(?:so|which|that|and|giving|gives|then)\s+|\s*[=≡≈→⇒]\s*|\s+(?:is|are|was|equals)\s+", re.IGNORECASE
)


def _without_answer(meta: str, answer: str, fallback: str) -> str:
    """``meta`` cut before the clause that states ``answer``; ``fallback`` if too little is left."""
    if not meta_states_answer(meta, answer):
        return meta
    head = meta
    while meta_states_answer(head, answer):
        bounds = [m.start() for m in _CLAUSE_BOUNDARY_RE.finditer(head)]
        if not bounds:
            head = ""
            break
        head = head[: bounds[-1]]
    head = _DANGLING_RE.sub("", _unclosed(head)).strip()
    if len(head.split()) >= 3 and not _math_only(head):
        return _sentence(head)
    return fallback if not meta_states_answer(fallback, answer) else "Work out the next quantity the solution needs."


def _fill(step: _StepUnits, taken: frozenset[str] = frozenset()) -> Step:
    main = [(u, k) for u, k, mode in step.units if mode in ("main", "fix") and k != CHECK] or [
        (u, k) for u, k, _ in step.units
    ]
    intent, intent_kind = next(  # the sentence that says what the step is after
        ((u, k) for u, k in main
         if not _ANSWER_LINE_RE.match(_strip_fillers(u.text))
         and (k == OPEN or _INTENT_ANYWHERE_RE.search(u.text) or _SUBJ_RE.match(_LEAD_RE.sub("", u.text)))),
        main[0],
    )
    meta = _meta(intent.text)
    verb, obj = _object(intent.text)
    lhs = next((x for x in (_equation_lhs(u.text) for u, _ in main) if x), None)
    label = _label(intent.text) or _label(main[0][0].text)
    so_np = _SO_NP_RE.search(intent.text)
    when = _WHEN_RE.search(intent.text)
    case = _CASE_RE.match(intent.text.strip())
    if obj:
        question = _question(verb, obj)
    elif case:
        question = f"What follows if {_without_result(case.group('cond')).rstrip(' ,;')}?"
    elif when:
        question = f"When is {when.group('cond').strip()}?"
    elif so_np:
        np = so_np.group("np")
        question = f"What does {np} cost?" if so_np.group("verb") == "costs" else f"What is {np}?"
    elif label and re.search(r"[A-Za-z]{3,}|\bmod\b", label):
        question = _label_question(label)
    elif lhs:
        question = f"What is {lhs}?"
    else:
        question = _clause_question(meta) or _clause_question(intent.text)
        if question is None:
            clause = _CLAUSE_CUT_RE.split(meta.rstrip(".?!"), maxsplit=1)[0] if meta else ""
            clause = re.sub(r"^(?:from|by|using|with|given)\s+", "", clause, flags=re.IGNORECASE)
            clause = clause[0].lower() + clause[1:] if clause[1:2].islower() else clause
            question = f"What follows from {clause}?" if len(clause) >= 8 else "What does this step establish?"
    if obj and not verb and intent_kind != OPEN and not _INTENT_ANYWHERE_RE.search(intent.text):
        meta = _sentence(f"Work out {obj}")  # a bare noun phrase ("Molar mass.") says little
    weak = not meta or len(meta) < 8 or _math_only(meta) or len(meta.split()) < 3
    if weak and label:
        meta = _sentence(f"Work out {_label_phrase(label)}")
    elif weak:
        meta = f"Work out {obj}." if obj else f"Compute {lhs}." if lhs else _sentence(step.units[0][0].text)[:200]
    answer = _answer(step, main, taken)
    fallback = _sentence(f"Work out {obj}") if obj else _sentence(f"Next: {question[0].lower()}{question[1:]}")
    meta = _without_answer(meta, answer, fallback)
    return Step(meta=_safe(meta), subproblem=_safe(question), answer=_safe(answer))


def _safe(field: str) -> str:
    """A field as the step format will read it back: one line, no markdown bold, no text that
    looks like a step tag (so ``parse_steps(render_steps(d)) == d``)."""
    field = re.sub(r"\s+", " ", field.replace("**", "")).strip()
    if "[" in field and contains_tag(field):
        field = field.replace("[", "(").replace("]", ")")
    return re.sub(r"(?:\s+-+)+$|^[\s-]+$", "", field).strip() or "?"


_FINAL_PHRASE_RE = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|should be|would be|=|:)\s*:?\s*(?P<ans>[^\n]+?)\s*(?:\.(?:\s|$)|$|\n)",
    re.IGNORECASE,
)


def final_answer(reasoning: str, answer: str = "") -> str | None:
    """The trace's final answer: ``\\boxed{}`` in the answer field, then in the reasoning, then the
    last "the answer is ..." sentence of either; None when there is none."""
    for text in (answer, reasoning):
        boxed = last_boxed(text) if text else None
        if boxed:
            return boxed
    for text in (answer, reasoning):
        found = list(_FINAL_PHRASE_RE.finditer(text or ""))
        if found:
            ans = found[-1].group("ans").strip().strip("*$ ")
            if ans:
                return ans
    return None


def decompose_trace(problem: str, reasoning: str, answer: str = "") -> Decomposition:
    """Decompose one trace; raises ``NoDecomposition`` with the reason when it cannot."""
    if not reasoning or not reasoning.strip():
        raise NoDecomposition("the reasoning is empty")
    final = final_answer(reasoning, answer)
    if final is None:
        raise NoDecomposition("no final answer: no \\boxed{} and no 'the answer is ...' in the answer or reasoning")
    us = units(reasoning)
    steps = _segment_units(reasoning, us, problem)
    if not steps:  # only a restatement: take it all as one step rather than nothing
        steps = [_StepUnits([(u, classify(u.text)[0], "main") for u in us])]
    if not steps[0].units:
        raise NoDecomposition("the reasoning has no sentences")
    filled: list[Step] = []
    for s in steps:
        filled.append(_fill(s, frozenset(f.answer for f in filled)))
    decomposition = Decomposition(steps=tuple(filled), final_answer=_safe(final))
    problems = validate(decomposition)
    if problems:
        raise NoDecomposition("; ".join(problems))
    return decomposition


class HeuristicDecomposer:
    """The offline decomposer behind ``--annotator heuristic`` (see the module docstring)."""

    name = NAME
    prompt_version = PROMPT_VERSION

    def decompose(self, items: list[dict[str, Any]],
                  on_result: Callable[[int, DecomposeResult], None] | None = None) -> list[DecomposeResult]:
        """One result per item, in order; ``on_result(i, result)`` is called as each finishes."""
        results = []
        for i, item in enumerate(items):
            try:
                d = decompose_trace(str(item.get("problem") or ""), str(item.get("reasoning") or ""),
                                    str(item.get("answer") or ""))
                res = DecomposeResult(decomposition=d, raw=render_steps(d))
            except NoDecomposition as exc:
                res = DecomposeResult(decomposition=None, error=str(exc))
            results.append(res)
            if on_result is not None:
                on_result(i, res)
        return results

    def describe(self) -> dict[str, Any]:
        return {
            "name": NAME,
            "model": None,
            "prompt_version": PROMPT_VERSION,
            "params": {"algorithm": "discourse markers + equations", "deterministic": True},
        }
