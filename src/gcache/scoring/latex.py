"""Normalising and comparing LaTeX answers (MATH-500).

The MATH benchmark (Hendrycks et al., 2021) scores a boxed answer by string equality after normalisation; the
same idea is followed here, written from its description: spacing and sizing commands, ``\\text{units}``,
degree signs, dollar and percent signs and a leading ``x =`` are removed; ``\\dfrac``/``\\tfrac`` become
``\\frac``; ``\\frac12`` becomes ``\\frac{1}{2}`` and ``\\sqrt3`` becomes ``\\sqrt{3}``; ``0.5`` and ``.5`` are
equal. Answers that are plain numbers (or ``\\frac{a}{b}`` of numbers) are also compared as numbers.

>>> normalize_math("x = \\\\dfrac{1}{2}\\\\text{ cm}")
'\\\\frac{1}{2}'
>>> math_equal("\\\\frac12", "0.5")
True
"""

from __future__ import annotations

import re

__all__ = ["math_equal", "normalize_math"]

_REMOVE = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\displaystyle", "\\$", "$", "\\%", "%", "^{\\circ}",
           "^\\circ", "\\circ", "\\quad", "\\qquad")
_UNITS_RE = re.compile(r"\\(?:text|mbox|mathrm)\s*\{\s*[a-zA-Z ]*\}\s*$")
_TEXT_RE = re.compile(r"\\(?:text|textbf|mbox|mathrm)\s*\{([^{}]*)\}")
_LHS_RE = re.compile(r"^\s*[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(?!.*=)")  # "x =", "y_1 =" (but not "x = y = 3")
_FRAC_SHORT_RE = re.compile(r"\\frac\s*(\d)\s*(\d)")
_FRAC_HALF_RE = re.compile(r"\\frac\s*\{([^{}]*)\}\s*(\d)")
_SQRT_SHORT_RE = re.compile(r"\\sqrt\s*(\w)")
_LEADING_DOT_RE = re.compile(r"(?<![\d}])\.(\d)")
_TRAILING_ZEROS_RE = re.compile(r"^(-?\d+)\.0+$")


def normalize_math(answer: str) -> str:
    """Canonical string of a LaTeX answer (see the module docstring).

    Args:
        answer (str): The answer as written, e.g. ``"x = \\\\dfrac{1}{2}"``.

    Returns:
        str: Its normal form, e.g. ``"\\\\frac{1}{2}"``.
    """
    s = answer.strip().replace("\n", " ")
    s = _UNITS_RE.sub("", s)
    s = _TEXT_RE.sub(r"\1", s)
    for token in _REMOVE:
        s = s.replace(token, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("^{\\prime}", "'")
    s = _LHS_RE.sub("", s)
    s = s.replace(" ", "").rstrip(".")
    s = _FRAC_SHORT_RE.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_HALF_RE.sub(r"\\frac{\1}{\2}", s)
    s = _SQRT_SHORT_RE.sub(r"\\sqrt{\1}", s)
    s = _LEADING_DOT_RE.sub(r"0.\1", s)
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    s = _TRAILING_ZEROS_RE.sub(r"\1", s)
    if re.fullmatch(r"\d+/\d+", s):
        num, den = s.split("/")
        s = f"\\frac{{{num}}}{{{den}}}"
    return s


def _as_number(s: str) -> float | None:
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(\d+(?:\.\d+)?)\}", s)
    try:
        if m:
            value = float(m.group(2)) / float(m.group(3))
            return -value if m.group(1) else value
        return float(s) if re.fullmatch(r"-?\d+(?:\.\d+)?", s) else None
    except (ValueError, ZeroDivisionError):
        return None


def math_equal(pred: str | None, gold: str, rel_tol: float = 1e-6) -> bool:
    """Whether two LaTeX answers are the same after :func:`normalize_math` (numbers within ``rel_tol``).

    Args:
        pred (str | None): Predicted answer; None never matches.
        gold (str): Gold answer.
        rel_tol (float): Relative tolerance for numeric answers. Default is 1e-6.

    Returns:
        bool: True if equal.
    """
    if pred is None:
        return False
    p, g = normalize_math(pred), normalize_math(gold)
    if p == g:
        return True
    a, b = _as_number(p), _as_number(g)
    return a is not None and b is not None and abs(a - b) <= rel_tol * max(abs(a), abs(b), 1e-12)
