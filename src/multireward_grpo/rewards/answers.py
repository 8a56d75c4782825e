"""Answer extraction and comparison for math completions.

:func:`extract_answer`, :func:`parse_number`, :func:`normalize_answer` and
:func:`answers_match` are documented on each function.
"""

from __future__ import annotations

import math
import numbers
import re
from fractions import Fraction
from typing import Any

from multireward_grpo.rewards.protocol import _short

# Extraction works on what models write: LaTeX (\boxed, \frac, \text, \$),
# markdown emphasis, currency, thousands separators, units, sentence endings.

_NUM = r"[+-]?(?:\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?"
_TEX_FRAC = rf"([+-]?)\\frac\{{\s*({_NUM})\s*\}}\{{\s*({_NUM})\s*\}}"
_TEX_FRAC_SHORT = r"([+-]?)\\frac(\d)(\d)"  # \frac12 is valid LaTeX for 1/2
_SLASH_FRAC = rf"({_NUM})\s*/\s*({_NUM})"
# Units after a number: words (letters, spaces, periods, hyphens, slashes,
# an optional power such as m^2) or a percent sign.
_UNITS = r"(?:\s*(?:%|[A-Za-z][A-Za-z .\-/]*(?:\^\{?\d\}?)?))?"
# No leading or trailing \s*: _simplify strips the ends, and a \s* after the
# units (which may hold spaces) would make failed matches quadratic.
_NUMBER_RE = re.compile(rf"(?P<num>{_TEX_FRAC}|{_TEX_FRAC_SHORT}|{_SLASH_FRAC}|{_NUM}){_UNITS}")
_TOKEN_RE = re.compile(rf"{_TEX_FRAC}|{_TEX_FRAC_SHORT}|{_SLASH_FRAC}|{_NUM}")

_TEX_WRAPPERS = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|boxed|operatorname)\s*\{([^{}]*)\}")
_TEX_NOISE = (
    ("\u2212", "-"),  # unicode minus
    ("\\dfrac", "\\frac"),
    ("\\tfrac", "\\frac"),
    ("\\left", ""),
    ("\\right", ""),
    ("\\displaystyle", ""),
    ("{,}", ","),  # LaTeX thousands separator 1{,}234
    ("\\!", ""),
    ("\\,", ""),
    ("\\;", ""),
    ("\\:", ""),
    ("\\ ", " "),
    ("\\$", ""),
    ("$", ""),
    ("\\%", "%"),
    ("^{\\circ}", ""),
    ("^\\circ", ""),
    ("\\circ", ""),
    ("°", ""),
)
_ASSIGNMENT = re.compile(r"^[A-Za-z][A-Za-z_]*\s*=\s*")  # "x = 5"


def _simplify(text: str) -> str:
    """Drop typesetting that does not change an answer's value."""
    for old, new in _TEX_NOISE:
        text = text.replace(old, new)
    previous = None
    while previous != text:  # unwrap nested \text{\textbf{...}}
        previous, text = text, _TEX_WRAPPERS.sub(r" \1 ", text)
    text = _ASSIGNMENT.sub("", text.strip())
    return text.strip().rstrip(".").strip()


def _number_value(core: str) -> Fraction | None:
    """Exact value of a number written as ``_NUMBER_RE`` matched it."""
    match = re.fullmatch(_TEX_FRAC, core) or re.fullmatch(_TEX_FRAC_SHORT, core)
    if match:
        sign, num, den = match.groups()
        return _ratio(num, den, negative=sign == "-")
    match = re.fullmatch(_SLASH_FRAC, core)
    if match:
        return _ratio(*match.groups())
    return Fraction(core.replace(",", ""))


def _ratio(num: str, den: str, *, negative: bool = False) -> Fraction | None:
    denominator = Fraction(den.replace(",", ""))
    if denominator == 0:
        return None
    value = Fraction(num.replace(",", "")) / denominator
    return -value if negative else value


def _numeric_core(answer: str) -> str | None:
    """The number in ``answer`` when the answer is one number (plus units)."""
    match = _NUMBER_RE.fullmatch(_simplify(answer))
    if match is None:
        return None
    core = match.group("num")
    return core if _number_value(core) is not None else None


def parse_number(answer: str | None) -> Fraction | None:
    """The exact value of an answer that is a single number, else None.

    Accepted: integers and decimals (``-3``, ``.5``, ``5.``, ``2.50``,
    ``1e3``), thousands separators (``1,234``, LaTeX ``1{,}234``), fractions
    ``a/b``, ``\\frac{a}{b}``, ``\\dfrac``, ``\\tfrac`` and ``\\frac12``, a
    leading ``$`` or ``\\$``, math delimiters ``$...$``, ``\\text{...}`` and
    trailing unit words (``42 apples``, ``5\\text{ cm}``), ``%`` (dropped:
    ``50%`` is 50, as GSM8K writes percentages), degrees, trailing periods,
    and a leading assignment (``x = 5``). A zero denominator is not a number.

    Returns
    -------
    fractions.Fraction or None
        Exact, so ``0.5``, ``1/2`` and ``\\frac{1}{2}`` are equal.
    """
    if answer is None:
        return None
    core = _numeric_core(str(answer))
    return None if core is None else _number_value(core)


def _normalize_text(answer: str) -> str:
    text = _simplify(answer).lower()
    text = re.sub(r"\s+", "", text)
    while len(text) > 1 and text[0] == "{" and text[-1] == "}":
        text = text[1:-1]
    return text.rstrip(".")


def normalize_answer(answer: str) -> str:
    """Canonical form of an answer, for comparisons and logging.

    A number (see :func:`parse_number`) becomes its exact value written as an
    integer or a reduced fraction: ``"1,234.0"`` -> ``"1234"``, ``"0.5"`` and
    ``"\\frac{1}{2}"`` -> ``"1/2"``. Anything else is lower-cased with LaTeX
    wrappers (``\\text``, ``\\boxed``, ``$``, ``\\left``...), all whitespace,
    outer braces and trailing periods removed.
    """
    if not isinstance(answer, str):
        raise TypeError(f"normalize_answer expects a str, got {type(answer).__name__}: {_short(answer)}")
    value = parse_number(answer)
    return str(value) if value is not None else _normalize_text(answer)


def answers_match(pred: str | None, gold: str | None, *, rel_tol: float = 1e-6) -> bool:
    """Whether a predicted answer equals the gold answer.

    Both are *answers* (see :func:`extract_answer` and
    :func:`extract_gold_answer` for getting them out of full texts). When both
    parse as numbers they are compared as exact fractions, then within
    ``rel_tol`` (``|p - g| <= rel_tol * max(|p|, |g|)``; so ``0.3333333``
    matches ``1/3`` at the default ``1e-6`` but ``0.33`` does not). Otherwise
    their :func:`normalize_answer` strings must be equal. A missing (None or
    empty) answer never matches.
    """
    if not (isinstance(rel_tol, numbers.Real) and math.isfinite(rel_tol) and rel_tol >= 0):
        raise ValueError(f"rel_tol must be a finite number >= 0, got {rel_tol!r}")
    if pred is None or gold is None:
        return False
    p, g = parse_number(pred), parse_number(gold)
    if p is not None and g is not None:
        return p == g or abs(p - g) <= Fraction(rel_tol) * max(abs(p), abs(g))
    p_text, g_text = _normalize_text(str(pred)), _normalize_text(str(gold))
    return bool(p_text) and p_text == g_text


# --------------------------------------------------------------------------- markers

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*(\{)?")
_HASH_RE = re.compile(r"####[ \t]*([^\n]*)")
_PHRASE_RE = re.compile(r"\banswer\s*(?:\*\*)?\s*(?:is\s*:?|:|=)", re.IGNORECASE)
# End of the answer after "The answer is": a period that ends a sentence, a
# comma or semicolon followed by a space, or the end of the line.
_SENTENCE_END = re.compile(r"(?<=\S)\.(?=\s|$)|[;,](?=\s)|\n")


def _balanced(text: str, start: int) -> str | None:
    """Text from ``start`` up to the brace that closes an already-open ``{``."""
    depth, i = 1, start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2  # \{ and \} are literal braces
            continue
        depth += char == "{"
        depth -= char == "}"
        if depth == 0:
            return text[start:i]
        i += 1
    return None  # truncated generation: no closing brace


def _last_boxed(text: str) -> tuple[str, int] | None:
    found = None
    for match in _BOXED_RE.finditer(text):
        if match.group(1):
            content = _balanced(text, match.end())
        else:  # "\boxed 5"
            bare = re.match(r"\s*([^\s$]+)", text[match.end() :])
            content = bare.group(1) if bare else None
        if content is not None and content.strip():
            found = (content.strip(), match.start())
    return found


def _last_hash(text: str) -> tuple[str, int] | None:
    found = None
    for match in _HASH_RE.finditer(text):
        content = _clean(match.group(1))
        # "#### Step 1" is a markdown heading, not GSM8K's answer marker
        if content and not content[0].isalpha() and re.search(r"\d", content):
            found = (match.group(1), match.start())
    return found


def _last_phrase(text: str) -> tuple[str, int] | None:
    found = None
    for match in _PHRASE_RE.finditer(text):
        rest = text[match.end() :].lstrip()
        end = _SENTENCE_END.search(rest)
        span = rest[: end.start()] if end else rest
        if _clean(span):
            found = (span, match.start())
    return found


def _clean(span: str) -> str:
    """Strip delimiters around an answer: markdown emphasis, $, \\( \\), periods."""
    text = span.strip()
    for _ in range(3):  # "**$5$**." needs a few rounds
        text = text.strip("*_ \t").rstrip(".").strip()
        for left, right in (("\\(", "\\)"), ("\\[", "\\]"), ("$$", "$$"), ("$", "$")):
            if text.startswith(left) and text.endswith(right) and len(text) >= len(left) + len(right):
                text = text[len(left) : len(text) - len(right)].strip()
    return text


def _find_marked(text: str) -> tuple[str, int] | None:
    """The explicitly marked final answer and where its marker starts."""
    for finder in (_last_boxed, _last_hash, _last_phrase):
        found = finder(text)
        if found is not None:
            return found
    return None


def _tidy(span: str) -> str:
    """The answer inside a marked span: its number when it is one, else the text."""
    text = _clean(span)
    if "=" in text:  # "5 + 3 = 8": the result is after the last "="
        text = _clean(text.rsplit("=", 1)[1]) or text
    core = _numeric_core(text)
    if core is not None:
        return core
    simple = _simplify(text)
    tokens = [m.group(0) for m in _TOKEN_RE.finditer(simple)]
    # One number among plain words ("therefore 18") is the answer; with
    # symbols around it ("x^2", "2x + 1") the span is an expression.
    if len(tokens) == 1 and re.fullmatch(r"[A-Za-z\s.,:;'!?]*", simple.replace(tokens[0], " ", 1)):
        return tokens[0].rstrip(".")
    return text


def _last_number(text: str) -> str | None:
    tokens = [m.group(0) for m in _TOKEN_RE.finditer(_simplify(text))]
    return tokens[-1].rstrip(".") if tokens else None


def extract_answer(text: str, *, fallback: bool = True) -> str | None:
    r"""The final answer in a model's output, or None.

    Markers are tried in this order, and within a kind the **last** one wins
    (a model that revises itself ends with its final answer):

    1. ``\boxed{...}`` (or ``\fbox{...}``, or ``\boxed 5``), with nested
       braces (``\boxed{\frac{1}{2}}``); an unclosed box is ignored.
    2. ``#### N`` (GSM8K), up to the end of its line.
    3. A phrase "answer is N", "answer: N", "answer = N" (any case, e.g. "The
       final answer is", "**Answer:**"), up to the end of the sentence
       (a period followed by a space or the end, ``, ``, ``;``, a new line).
    4. With ``fallback=True`` (the default, as GSM8K evaluations do), the
       last number in the text (integers, decimals, ``a/b``, ``\frac``).

    Inside a marked span, ``$``/``\(...\)`` delimiters, markdown emphasis and
    trailing periods are dropped; with an ``=``, the part after the last
    ``=`` is kept; when the span is one number with words around it
    (``42 apples``, ``$1,234``, ``5\text{ cm}``, ``therefore 18``) the number
    is returned as written (``"42"``, ``"1,234"``, ``"5"``, ``"18"``).
    Otherwise the cleaned span is returned.

    Parameters
    ----------
    text : str
        The model's output.
    fallback : bool, keyword-only
        Use the last number when no marker is present.

    Returns
    -------
    str or None
        None when nothing was found.
    """
    if not isinstance(text, str):
        raise TypeError(f"extract_answer expects a str, got {type(text).__name__}: {_short(text)}")
    found = _find_marked(text)
    if found is not None:
        return _tidy(found[0])
    return _last_number(text) if fallback else None


def extract_gold_answer(gold: Any) -> str:
    """The final answer of a gold string.

    A GSM8K solution (``"... #### 72"``) or any text with a marker (see
    :func:`extract_answer`) gives the marked answer; a bare answer
    (``"72"``, ``"\\frac{1}{2}"``, ``"Paris"``) is used whole. Numbers (int,
    float, Fraction) are accepted and converted with ``str``.
    """
    if isinstance(gold, bool) or not isinstance(gold, (str, numbers.Real)):
        raise TypeError(f"the gold answer must be a str or a number, got {type(gold).__name__}: {_short(gold)}")
    text = str(gold)
    found = _find_marked(text)
    answer = _tidy(found[0]) if found is not None else _clean(text)
    if not answer:
        raise ValueError(f"the gold answer is empty: {_short(gold)}")
    return answer
