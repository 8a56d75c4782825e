"""Answer extraction and matching on what models really write.

Each case is ``(generation, gold, expected_correct, reason)``: the
correctness reward of ``generation`` against ``gold`` must be
``expected_correct``, for the one-line ``reason`` given.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from multireward_grpo.rewards import (
    answers_match,
    extract_answer,
    extract_gold_answer,
    normalize_answer,
    parse_number,
    reward_correctness,
)

GSM8K_GOLD = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"

CASES = [
    # --- boxed
    (r"So she has \boxed{72} clips.", "72", True, "plain boxed integer"),
    (r"\boxed{\frac{1}{2}}", "0.5", True, "nested braces in boxed; fraction equals decimal exactly"),
    (r"\boxed{\dfrac{3}{4}}", "3/4", True, "\\dfrac is \\frac"),
    (r"\boxed{\tfrac{3}{4}}", "0.75", True, "\\tfrac is \\frac"),
    (r"\boxed{\frac12}", "1/2", True, "\\frac12 shorthand is 1/2"),
    (r"\boxed{-\frac{1}{2}}", "-0.5", True, "sign before \\frac"),
    (r"\boxed{\frac{-1}{2}}", "-1/2", True, "sign inside the numerator"),
    (r"First \boxed{3}, wait, corrected: \boxed{4}", "4", True, "several boxed answers: the last wins"),
    (r"First \boxed{3}, wait, corrected: \boxed{4}", "3", False, "the earlier boxed answer is superseded"),
    (r"\boxed{1{,}234}", "1234", True, "LaTeX thousands separator {,}"),
    (r"\boxed{1,234}", "1234", True, "thousands separator"),
    (r"\boxed{5\text{ cm}}", "5", True, "\\text unit inside the box"),
    (r"\boxed{\text{5 apples}}", "5", True, "number inside \\text with a unit"),
    (r"\boxed{50\%}", "50", True, "LaTeX percent dropped; GSM8K writes percentages as numbers"),
    (r"\boxed{\$18}", "18", True, "LaTeX escaped dollar"),
    (r"\boxed{90^\circ}", "90", True, "degrees dropped"),
    (r"\boxed{x = 5}", "5", True, "assignment inside the box"),
    (r"The total is \boxed{18", "18", True, "unclosed box ignored; last number fallback still finds 18"),
    (r"\boxed{\text{Paris}}", "paris", True, "text answers compared after normalization"),
    (r"\boxed{ 7 }", "7", True, "spaces inside the box"),
    (r"\boxed{7} dollars. Then the text mentions 9 later", "7", True, "a boxed answer beats a later bare number"),
    (r"$\boxed{2.50}$", "2.5", True, "trailing zeros of a decimal"),
    # --- #### (GSM8K)
    ("She sells 16 - 3 - 4 = 9 eggs, so 9 * 2 = 18.\n#### 18", "18", True, "GSM8K #### marker"),
    ("#### 1,234", "1234", True, "#### with thousands separator"),
    ("####72", "72", True, "#### without a space"),
    ("#### $18", "18", True, "#### with currency"),
    ("#### -3", "-3", True, "negative after ####"),
    ("#### Step 1\nShe has 5 apples\n#### Step 2\nso 6", "6", True, "markdown headings are not the #### marker"),
    ("Reasoning...\n#### 18\nextra 99", "18", True, "#### answer beats a later stray number"),
    ("The result is 72.\n#### 72", GSM8K_GOLD, True, "GSM8K-format gold answer"),
    ("The result is 24.\n#### 24", GSM8K_GOLD, False, "intermediate value of the gold solution is not the answer"),
    # --- answer phrases
    ("The answer is 42 apples.", "42", True, "trailing unit words and period"),
    ("The answer is 42.", "42", True, "sentence-final period"),
    ("The answer is 5. Let me double-check: 2 + 3 = 5.", "5", True, "answer cut at the end of its sentence"),
    ("The answer is 3.5.", "7/2", True, "decimal point kept, final period dropped"),
    ("The answer is .5", "1/2", True, "leading-dot decimal"),
    ("The answer is 5.", "5", True, "5. is 5"),
    ("The final answer is $\\boxed{-3}$. I hope it is correct.", "-3", True, "Minerva style"),
    ("The final answer is $12$. I hope it is correct.", "12", True, "math delimiters around the answer"),
    ("**Answer:** 42", "42", True, "markdown bold marker"),
    ("Answer: 17", "17", True, "answer colon"),
    ("answer = 17", "17", True, "answer equals"),
    ("ANSWER IS 17", "17", True, "case-insensitive marker"),
    ("The answer is $1,234.", "1234", True, "currency, thousands separator, period"),
    ("The answer is \\$5.00", "5", True, "LaTeX dollar and cents"),
    ("The answer is 10%", "10", True, "percent sign dropped"),
    ("The answer is 18 dollars per day.", "18", True, "multi-word unit"),
    ("The answer is therefore 18.", "18", True, "one number among plain words"),
    ("The answer is 5 + 3 = 8", "8", True, "the result after the last equals sign"),
    ("The answer is\n42", "42", True, "answer on the next line"),
    ("The answer is −5", "-5", True, "unicode minus"),
    ("The answer is -5", "5", False, "sign matters"),
    ("The answer is 3/4", r"\frac{3}{4}", True, "slash fraction equals \\frac gold"),
    ("The answer is 0.75", "3/4", True, "decimal equals fraction exactly"),
    ("The answer is 0.3333333", "1/3", True, "within the default relative tolerance 1e-6"),
    ("The answer is 0.33", "1/3", False, "rounded too coarsely for rel_tol"),
    ("The answer is 1e3", "1000", True, "scientific notation"),
    ("The answer is x^2", "2", False, "an expression is not its exponent"),
    ("The answer is blue.", "Blue", True, "text answers are case-insensitive"),
    ("The answer is 3 and 4", "4", False, "two numbers: the span is not one number"),
    ("The answer is 10. Earlier I wrote the answer is 7", "7", True, "the last answer phrase wins"),
    # --- no marker: last-number fallback
    ("She has 3 apples and buys 4 more, 7 in total", "7", True, "fallback: last number"),
    ("First 1/2 of it, so 3/4 remain", "0.75", True, "fallback: last fraction"),
    ("So it costs $1,000,000 in total", "1000000", True, "fallback: thousands separators"),
    ("Total: 24 + 48 = 72 clips", "72", True, "fallback: last number of an equation"),
    ("There are 5 apples.", "5", True, "fallback: number before the final period"),
    ("I do not know.", "5", False, "no answer at all"),
    ("", "5", False, "empty generation"),
    ("The cost is 18, not 20", "18", False, "fallback takes the last number, not the first"),
    # --- wrong answers
    (r"\boxed{71}", "72", False, "off by one"),
    ("#### 7.2", "72", False, "decimal point matters"),
    ("The answer is 1,234", "1,235", False, "numbers compared by value"),
    (r"\boxed{\frac{2}{3}}", "0.67", False, "0.67 is not 2/3 within 1e-6"),
    ("The answer is 12 apples", "12 oranges", True, "units are ignored when both are numbers"),
]


@pytest.mark.parametrize(("text", "gold", "expected", "reason"), CASES, ids=[c[3] for c in CASES])
def test_correctness_table(text, gold, expected, reason):
    got = reward_correctness(text, gold)
    assert got == (1.0 if expected else 0.0), (
        f"{reason}: extracted {extract_answer(text)!r} vs gold {extract_gold_answer(gold)!r}"
    )


def test_table_is_large_and_every_case_has_a_reason():
    assert len(CASES) >= 60
    assert all(isinstance(reason, str) and reason.strip() for *_, reason in CASES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        ("The answer is 42 apples.", "42"),
        ("The answer is $1,234.", "1,234"),
        ("#### 72", "72"),
        (r"\boxed{1} then \boxed{2}", "2"),
        ("no numbers here", None),
        ("The answer is blue.", "blue"),
        ("3 then 4", "4"),
        ("The answer is 5.", "5"),
    ],
)
def test_extract_answer_values(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_without_fallback():
    assert extract_answer("so 7 in total", fallback=False) is None
    assert extract_answer("so 7 in total") == "7"
    with pytest.raises(TypeError, match="expects a str"):
        extract_answer(None)


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("1/2", Fraction(1, 2)),
        ("0.5", Fraction(1, 2)),
        (r"\frac{1}{2}", Fraction(1, 2)),
        (r"\dfrac{1}{2}", Fraction(1, 2)),
        ("-3", Fraction(-3)),
        (".5", Fraction(1, 2)),
        ("5.", Fraction(5)),
        ("1,234", Fraction(1234)),
        ("$1,234.50", Fraction(246900, 200)),
        ("50%", Fraction(50)),
        ("42 apples.", Fraction(42)),
        ("x = 5", Fraction(5)),
        ("1/0", None),
        ("1, 2", None),
        ("12,34", None),
        ("abc", None),
        ("5 + 3", None),
        (None, None),
    ],
)
def test_parse_number(answer, value):
    assert parse_number(answer) == value


def test_normalize_answer():
    assert normalize_answer("1,234.0") == "1234"
    assert normalize_answer("0.5") == normalize_answer(r"\frac{1}{2}") == "1/2"
    assert normalize_answer(r"\text{ New York }") == "newyork"
    assert normalize_answer("{x+1}") == "x+1"
    with pytest.raises(TypeError, match="expects a str"):
        normalize_answer(5)


def test_answers_match_tolerance_and_missing():
    assert answers_match("1/3", "0.3333333")
    assert not answers_match("1/3", "0.3333333", rel_tol=0.0)
    assert answers_match("100", "101", rel_tol=0.01)
    assert not answers_match(None, "5")
    assert not answers_match("", "")
    with pytest.raises(ValueError, match="rel_tol"):
        answers_match("1", "1", rel_tol=-1.0)


def test_gold_answer_forms():
    assert extract_gold_answer(GSM8K_GOLD) == "72"
    assert extract_gold_answer(72) == "72"
    assert extract_gold_answer(r"\frac{1}{2}") == r"\frac{1}{2}"  # no marker: used whole
    assert extract_gold_answer("Paris") == "Paris"
    with pytest.raises(ValueError, match="empty"):
        extract_gold_answer("  ")
    with pytest.raises(TypeError, match="gold answer must be"):
        extract_gold_answer(None)
