"""verify_math: math-verify equivalence plus our extraction rule (the last \\boxed{} wins)."""

from __future__ import annotations

import pytest

from brorl.rewards import verify_math

CASES = [
    # (completion, gold, expected)
    ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),  # fraction vs decimal
    ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),  # decimal vs LaTeX fraction gold
    ("1/2", "0.5", 1.0),  # bare slash fraction
    ("The answer is \\boxed{\\frac12}", "1/2", 1.0),  # \frac12 shorthand
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", 1.0),  # simplified radical, gold given as bare LaTeX
    ("\\boxed{12}", "12.0", 1.0),  # integer vs float gold
    ("\\boxed{x=3}", "3", 1.0),  # equation answer, value compared
    ("so $x = 3$", "3", 1.0),  # inline math, no box
    ("\\boxed{3}", "3", 1.0),  # plain integer
    ("\\boxed{-7}", "-7", 1.0),  # negative
    ("\\boxed{\\dfrac{3}{4}}", "0.75", 1.0),  # \dfrac
    ("\\boxed{75\\%}", "75", 1.0),  # percent sign dropped
    ("\\boxed{\\pi}", "\\pi", 1.0),  # symbol
    ("\\boxed{2\\pi}", "6.283185307", 1.0),  # numeric comparison rounds to 6 decimals: 2π equals its float
    ("\\boxed{(1, 2)}", "(1,2)", 1.0),  # tuple
    ("\\boxed{x^2+2x+1}", "(x+1)^2", 1.0),  # expanded vs factored polynomial
    ("\\boxed{1e3}", "1000", 0.0),  # "e" notation is not LaTeX: math-verify does not read it as 1000
    ("\\boxed{1,000}", "1000", 1.0),  # thousands separator
    ("\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt{2}}{2}", 1.0),  # two spellings of the same radical
    ("\\boxed{4}", "5", 0.0),  # wrong
    ("\\boxed{0.51}", "0.5", 0.0),  # close but wrong
    ("\\boxed{-3}", "3", 0.0),  # wrong sign
    ("\\boxed{x^2+1}", "(x+1)^2", 0.0),  # wrong polynomial
    ("", "3", 0.0),  # empty completion
    ("I don't know", "3", 0.0),  # missing: no number at all
    ("\\boxed{}", "3", 0.0),  # empty box
    ("\\boxed{\\frac{1}{", "0.5", 0.0),  # malformed LaTeX: unbalanced box, nothing parsable
    ("\\boxed{\\frac{1}{2}", "0.5", 1.0),  # unbalanced box: no box extracted, math-verify still reads 1/2
    ("\\boxed{\\frac{}{}}", "0.5", 0.0),  # malformed fraction
    ("\\boxed{3} and then \\boxed{4}", "4", 1.0),  # several boxes: the last wins
    ("\\boxed{3} and then \\boxed{4}", "3", 0.0),  # ... so the first does not count
    ("\\boxed{\\boxed{5}}", "5", 1.0),  # nested boxes
    ("first 7, finally \\boxed{8}", "8", 1.0),  # box beats an earlier bare number
    ("\\boxed{3}", "not latex }{", 0.0),  # unparsable gold: 0, not an exception
]


@pytest.mark.parametrize(("completion", "gold", "expected"), CASES)
def test_verify_math_table(completion, gold, expected):
    assert verify_math(completion, gold) == expected


def test_table_has_at_least_30_cases():
    assert len(CASES) >= 30
