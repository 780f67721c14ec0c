"""The answer table: gold, answer, our verdict, and why we differ from math-verify where we do.

Written before the answer module was rewritten (issue 14), so it states the rules rather than
reflecting the code. ``tests/test_answers.py`` checks every row against ``rlkd_bench.answers`` and
against math-verify's own verdict computed live (``math_verify_verdict``); ``bench/bench_answers.py``
prints the counts. A row's ``why`` is non-empty exactly when our verdict differs from math-verify's.

Rows of ``ROWS`` are final answers (what a completion's ``\\boxed{}`` or ``<answer>`` holds), checked
with ``answers.equal(gold, answer)``; rows of ``CHOICE_ROWS`` are the text after the thinking of a
multiple-choice completion, checked with ``answers.check(gold, answer, choices="ABCD")``. An
expected verdict of None means the gold itself cannot be scored.
"""

from __future__ import annotations

# why we differ from math-verify (one phrase per reason, reused by every row it explains)
EXACT = "two plain decimals are compared exactly; math-verify rounds to 6 significant places"
E_NOTATION = "1.5e3 is scientific notation; math-verify reads e as Euler's number"
CURRENCY = "\\$ is a currency sign; math-verify cannot parse it inside $...$"
PROSE = "prose is not an answer (several words around a number); math-verify pulls a number out of any text"
CONTROL = "a control character is garbage, never part of an answer; math-verify drops it"
TEXT = "a text answer is compared as text (case, spacing, a closing period and \\text{} set aside); " \
       "math-verify reads the letters as a product of symbols"
BLANK = "a blank gold cannot be scored (None), which is not a wrong answer"
CHOICE = "multiple choice: the letter the answer names (Answer: X, (X), \\boxed{X}) is what counts"
NO_CHOICE = "a gold letter outside the choices cannot be scored (None)"

Row = tuple[str, str, "bool | None", str]

ROWS: list[Row] = [
    # -- decimals ------------------------------------------------------------------------------
    ("1.5", "15", False, ""),
    ("15", "1.5", False, ""),
    ("3.14", "314", False, ""),
    ("0.25", "025", False, ""),
    ("1.5", "1.50", True, ""),
    ("1.50", "1.5", True, ""),
    ("2", "2.0", True, ""),
    ("3.0", "3", True, ""),
    ("0.1", ".1", True, ""),
    (".5", "0.5", True, ""),
    ("12", "12.", True, ""),
    ("5.", "5", True, ""),
    ("0.40", "0.4", True, ""),
    ("-0.5", "-.5", True, ""),
    ("-3", "3", False, ""),
    ("-3", "- 3", True, ""),
    ("3", "+3", True, ""),
    ("1", "1.0000001", False, ""),
    ("0.1234567", "0.1234568", False, EXACT),
    ("1.23456789", "1.23456788", False, EXACT),
    ("293.76", "293.76", True, ""),
    ("293.76", "29376", False, ""),
    ("67.5", "675", False, ""),
    ("5.04", "504", False, ""),
    ("0.36", "036", False, ""),
    ("0.6", "0.60", True, ""),
    ("100000000", "100000001", False, ""),
    ("1000000.5", "1000000.4", False, ""),
    ("2.5", "5/2", True, ""),
    ("1.25", "\\frac{5}{4}", True, ""),
    ("-0", "0", True, ""),
    ("0.5", "0.50000", True, ""),
    ("7.0", "7", True, ""),
    ("1.05", "1.5", False, ""),
    ("10.5", "105", False, ""),
    ("-1", "-1.0", True, ""),
    ("20", "\\frac{40}{2}", True, ""),
    # -- leading zeros -------------------------------------------------------------------------
    ("025", "25", True, ""),
    ("007", "7", True, ""),
    ("00.5", "0.5", True, ""),
    ("0.25", "00.25", True, ""),
    ("25", "0025", True, ""),
    ("0.05", "0.5", False, ""),
    ("0.005", "0.05", False, ""),
    ("05", "5", True, ""),
    ("0", "00", True, ""),
    ("100", "0100", True, ""),
    ("0.25", "0.025", False, ""),
    # -- fractions, \frac, \dfrac ----------------------------------------------------------------
    ("\\frac{1}{2}", "0.5", True, ""),
    ("0.5", "\\frac{1}{2}", True, ""),
    ("\\frac{1}{2}", "\\frac{2}{4}", True, ""),
    ("\\frac{1}{2}", "1/2", True, ""),
    ("1/2", "0.5", True, ""),
    ("\\frac{1}{2}", "1/3", False, ""),
    ("\\frac{1}{3}", "0.333", False, ""),
    ("\\frac{1}{3}", "0.3333333", True, ""),
    ("0.333333", "\\frac{1}{3}", True, ""),
    ("-\\frac{1}{2}", "\\frac{-1}{2}", True, ""),
    ("\\frac{3}{4}", "3:4", True, ""),
    ("\\frac{10}{4}", "\\frac{5}{2}", True, ""),
    ("\\frac{5}{2}", "2.5", True, ""),
    ("\\frac{1}{8}", "0.125", True, ""),
    ("\\frac{2}{3}", "0.67", False, ""),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}", True, ""),
    ("\\dfrac{3}{4}", "0.75", True, ""),
    ("\\dfrac{3}{4}", "\\frac34", True, ""),
    ("\\tfrac{3}{4}", "3/4", True, ""),
    ("\\frac{3}{4}", "\\dfrac{3}{4}", True, ""),
    ("\\dfrac{1}{2}", "\\dfrac{1}{3}", False, ""),
    ("\\dfrac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True, ""),
    ("\\dfrac{7}{2}", "3.5", True, ""),
    ("\\frac{1}{2}", "\\frac{1}{2}}", False, ""),
    ("\\frac{1}{2}", "\\frac{1}{", False, ""),
    ("\\frac{a}{b}", "a/b", True, ""),
    ("\\frac{1}{2}", "\\boxed{\\frac{1}{2}}", True, ""),
    # -- percents ------------------------------------------------------------------------------
    ("50\\%", "50", True, ""),
    ("50", "50\\%", True, ""),
    ("0.5", "50\\%", True, ""),
    ("50\\%", "0.5", True, ""),
    ("5\\%", "0.05", True, ""),
    ("5\\%", "5", True, ""),
    ("5\\%", "0.5", False, ""),
    ("12.5\\%", "\\frac{1}{8}", True, ""),
    ("12\\%", "0.12", True, ""),
    ("1.5\\%", "0.015", True, ""),
    ("0.015", "1.5%", True, ""),
    ("25\\%", "25%", True, ""),
    ("25\\%", "2.5\\%", False, ""),
    ("25\\%", "250\\%", False, ""),
    # -- units and currency --------------------------------------------------------------------
    ("5", "5 \\text{ meters}", True, ""),
    ("5", "5\\text{ cm}", True, ""),
    ("5", "5 cm", True, ""),
    ("5", "5 meters", True, ""),
    ("5", "5 apples", True, ""),
    ("30", "30^\\circ", True, ""),
    ("30^\\circ", "30", True, ""),
    ("30°", "30", True, ""),
    ("5", "6 \\text{ meters}", False, ""),
    ("18", "18\\text{ inches}", True, ""),
    ("\\frac{1}{2}\\text{ hours}", "0.5", True, ""),
    ("3", "3 dollars or more", False, PROSE),
    ("3", "3 \\text{ dollars or more}", False, PROSE),
    ("5", "5\\,\\text{m}", True, ""),
    ("12", "\\$12", True, CURRENCY),
    ("\\$5", "5", True, CURRENCY),
    ("$11.00", "11", True, ""),
    ("11", "\\$11.00", True, CURRENCY),
    ("2.5", "2.5\\text{ km}", True, ""),
    ("25", "2.5\\text{ km}", False, ""),
    # -- intervals -----------------------------------------------------------------------------
    ("[1,2)", "[1,2)", True, ""),
    ("[1,2)", "(1,2)", False, ""),
    ("(1,2)", "(1, 2)", True, ""),
    ("(-\\infty, 3]", "(-\\infty,3]", True, ""),
    ("(0,\\infty)", "(0, \\infty)", True, ""),
    ("[0,1]", "[0, 1]", True, ""),
    ("(-1,1)", "(-1, 1]", False, ""),
    ("[2,5]", "2\\le x\\le5", False, ""),
    ("x \\in [2,5]", "[2,5]", True, ""),
    ("\\mathbb{R}", "(-\\infty,\\infty)", True, ""),
    ("(-\\infty,0)\\cup(1,\\infty)", "(1,\\infty)\\cup(-\\infty,0)", True, ""),
    ("[0,1]", "[0,2]", False, ""),
    ("(2,3]", "(2,3)", False, ""),
    # -- sets ----------------------------------------------------------------------------------
    ("\\{1,2\\}", "\\{2,1\\}", True, ""),
    ("\\{1,2\\}", "1,2", True, ""),
    ("1,2", "2,1", True, ""),
    ("1, 2", "\\{1, 2\\}", True, ""),
    ("\\{1,2,3\\}", "\\{1,2\\}", False, ""),
    ("\\emptyset", "\\{\\}", True, ""),
    ("\\{1,2\\}", "\\{1,3\\}", False, ""),
    ("-2, 2", "2, -2", True, ""),
    ("\\pm 2", "2, -2", True, ""),
    ("x=\\pm 2", "\\pm 2", True, ""),
    ("\\{-1, 1\\}", "\\pm 1", True, ""),
    # -- tuples --------------------------------------------------------------------------------
    ("(1,2,3)", "(1,2,3)", True, ""),
    ("(1,2,3)", "(3,2,1)", False, ""),
    ("(1,2)", "(2,1)", False, ""),
    ("(3, \\frac{\\pi}{2})", "(3,\\pi/2)", True, ""),
    ("(0,0)", "(0, 0)", True, ""),
    ("(1,-1)", "(1, -1)", True, ""),
    ("(1,-1)", "(-1,1)", False, ""),
    ("(2,3,4)", "(2,3)", False, ""),
    ("(\\frac{1}{2}, 3)", "(0.5, 3)", True, ""),
    # -- equations -----------------------------------------------------------------------------
    ("x=3", "3", True, ""),
    ("3", "x=3", True, ""),
    ("x=3", "x = 3", True, ""),
    ("x=3", "y=3", False, ""),
    ("x=3", "x=3.0", True, ""),
    ("y=2x+1", "2x+1", True, ""),
    ("2x+1", "y=2x+1", True, ""),
    ("y = x", "y=x", True, ""),
    ("a=1, b=2", "b=2, a=1", True, ""),
    ("2, 3", "x=2, x=3", True, ""),
    ("x=2,3", "2,3", True, ""),
    ("2", "x=2 or x=3", False, ""),
    ("x=3", "x=4", False, ""),
    ("y=2x+1", "y=1+2x", True, ""),
    ("x^2+1", "1+x^2", True, ""),
    ("2x+1", "2x+2", False, ""),
    # -- scientific notation -------------------------------------------------------------------
    ("1.5\\times10^3", "1500", True, ""),
    ("1.5e3", "1500", True, E_NOTATION),
    ("1500", "1.5e3", True, E_NOTATION),
    ("1e-3", "0.001", True, E_NOTATION),
    ("2.5E-4", "0.00025", True, ""),
    ("6.02\\times10^{23}", "6.02e23", True, E_NOTATION),
    ("6.02 \\cdot 10^{23}", "6.02\\times 10^{23}", True, ""),
    ("10^{-3}", "0.001", True, ""),
    ("1.5\\times 10^{3}", "1.5e3", True, E_NOTATION),
    ("3\\times10^8", "3e8", True, E_NOTATION),
    ("3e8", "3\\times10^{9}", False, ""),
    ("1.5e3", "15e2", True, E_NOTATION),
    ("2e", "2e", True, ""),
    ("e", "2.718281828", True, ""),
    # -- text answers --------------------------------------------------------------------------
    ("isosceles", "Isosceles", True, TEXT),
    ("Yes", "yes", True, ""),
    ("yes", "no", False, ""),
    ("True", "true", True, TEXT),
    ("north", "North.", True, TEXT),
    ("\\text{Evelyn}", "Evelyn", True, ""),
    ("\\text{Evelyn}", "\\text{Evelyn}", True, ""),
    ("Evelyn", "\\text{evelyn}", True, ""),
    ("\\text{east}", "East", True, ""),
    ("\\text{Monday}", "monday", True, ""),
    ("\\text{no solution}", "No solution", True, ""),
    ("\\text{all real numbers}", "\\mathbb{R}", False, ""),
    ("NaN", "nan", True, ""),
    ("10", "ten", False, ""),
    ("Evelyn", "Evelin", False, ""),
    ("Tuesday afternoon", "tuesday  afternoon", True, ""),
    ("Tuesday afternoon", "Tuesday", False, ""),
    ("blue", "red", False, ""),
    ("right triangle", "right-triangle", False, ""),
    # -- garbage and control characters --------------------------------------------------------
    ("5", "5\x00", False, CONTROL),
    ("5", "garbage 5\x00 tail", False, CONTROL),
    ("5", "it is 5", False, ""),
    ("5", "\x005", False, ""),
    ("5\x00", "5", False, CONTROL),
    ("5", "\x0c5", False, CONTROL),
    ("\x07", "5", False, ""),
    ("5", "\x1b[0m5", False, ""),
    ("42", "The answer is 42", False, PROSE),
    ("42", "42 is the answer", False, ""),
    ("5", "5}", True, ""),
    ("5", "{5}", True, ""),
    ("5", "(5)", True, ""),
    ("5", "[5]", True, ""),
    ("5", "\\{5\\}", True, ""),
    ("5", "", False, ""),
    (" ", "5", None, BLANK),
    ("", "0", None, BLANK),
    ("5", " ", False, ""),
    ("x^2", "x**2", False, ""),
    ("5", "@#$%", False, ""),
    ("3", "3\n", True, ""),
    ("3", "\t3", True, ""),
    # -- other math ----------------------------------------------------------------------------
    ("\\sqrt{8}", "2\\sqrt{2}", True, ""),
    ("3\\sqrt{3}", "\\sqrt{27}", True, ""),
    ("\\sqrt{2}", "1.414", False, ""),
    ("\\sqrt{2}", "1.41421356", True, ""),
    ("\\pi", "3.14", False, ""),
    ("\\pi", "3.14159", False, ""),
    ("2\\pi", "6.28", False, ""),
    ("\\log_2 8", "3", True, ""),
    ("e^{2}", "e^2", True, ""),
    ("\\sqrt[3]{8}", "2", True, ""),
    ("10!", "3628800", True, ""),
    ("\\binom{5}{2}", "10", True, ""),
    ("2+3i", "3i+2", True, ""),
    ("i", "\\sqrt{-1}", False, ""),
    ("\\infty", "\\infty", True, ""),
    ("-\\infty", "-\\infty", True, ""),
    ("\\frac{1}{0}", "\\infty", False, ""),
    ("1,000", "1000", True, ""),
    ("1000", "1{,}000", True, ""),
    ("1,5", "1.5", False, ""),
    ("1{,}5", "15", False, ""),
    ("2,3", "23", False, ""),
    ("4", "\\boxed{4}", True, ""),
    ("\\boxed{4}", "4", True, ""),
]

CHOICE_ROWS: list[Row] = [
    ("C", "C", True, ""),
    ("C", "(C)", True, ""),
    ("C", "c", True, ""),
    ("C", "\\boxed{C}", True, ""),
    ("C", "\\boxed{\\text{C}}", True, ""),
    ("C", "Answer: C", True, CHOICE),
    ("C", "The answer is (C)", True, CHOICE),
    ("C", "Answer: B", False, ""),
    ("C", "B", False, ""),
    ("C", "Answer: E", False, ""),
    ("C", "The answer is a prime.", False, ""),
    ("A", "\\text{A}", True, ""),
    ("B", "Answer: (B)", True, CHOICE),
    ("B", "I am not sure", False, ""),
    ("A", "", False, ""),
    ("B", "B.", True, CHOICE),
    ("A", "\\boxed{A} or \\boxed{B}", False, ""),
    ("E", "E", None, NO_CHOICE),
]


def math_verify_verdict(gold: str, answer: str) -> bool:
    """math-verify's own verdict, used as documented: each side wrapped in ``$...$`` (unless it has
    its own delimiters or a ``\\boxed``), parsed with the default extraction, ``verify(gold, answer)``
    with the default settings; its errors count as False."""
    from math_verify import parse, verify

    def wrap(s: str) -> str:
        s = s.strip()
        return s if any(d in s for d in ("$", "\\(", "\\[", "\\boxed")) else f"${s}$"

    try:
        return bool(verify(parse(wrap(gold)), parse(wrap(answer))))
    except Exception:  # math-verify raises on some inputs: no verdict is a False one
        return False
