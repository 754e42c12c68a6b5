"""Answer extraction: named pipelines that turn a model's text into a canonical answer.

Modelled on lm-eval's ``filters/extraction.py``: each pipeline is a function ``text -> str | None``
registered under a name, and :func:`extract_answer` runs a list of them, first hit wins.
Numeric pipelines return canonical numbers from :func:`normalize_number` (``"18"``, ``"0.75"``,
``"-3"``), so two equal answers written differently compare equal as strings.

>>> extract_answer("She pays 2 * 9 = $18.\\n#### 18")
'18'
>>> extract_answer("so the total is \\\\boxed{\\\\$1,000}")
'1000'
>>> extract_answer("3 apples and then 5 more")
'5'
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction
from typing import Callable

__all__ = [
    "DEFAULT_PIPELINES",
    "extract_answer",
    "extract_boxed",
    "extract_code",
    "get_pipeline",
    "list_pipelines",
    "normalize_number",
    "numbers_match",
    "register_pipeline",
]

Pipeline = Callable[[str], "str | None"]

# Filled only at import time by @register_pipeline (read-only afterwards), like lm-eval's registry.
_PIPELINES: dict[str, Pipeline] = {}

#: Pipelines run by :func:`extract_answer` for each answer kind, in order.
DEFAULT_PIPELINES: dict[str, tuple[str, ...]] = {
    "number": ("strict", "flexible"),
    "code": ("code_block",),
}

# A number as written in text: optional sign, thousands groups or plain digits, decimals,
# exponent. The minus only counts when it is not a binary operator ("5-3" holds 5 and 3).
_NUMBER = r"(?:(?<![\w)])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d+)?|(?:(?<![\w)])-)?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
_FRACTION_RE = re.compile(rf"({_NUMBER})\s*/\s*(\d+(?:\.\d+)?)(?![\d.,/])")
_LATEX_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]*?)\s*\}\s*\{\s*([^{}]*?)\s*\}")
_LATEX_TEXT_RE = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{[^{}]*\}")


def register_pipeline(name: str) -> Callable[[Pipeline], Pipeline]:
    """Register an extraction pipeline under ``name`` (decorator).

    Args:
        name (str): Name used in :func:`extract_answer` ``pipelines=``.

    Returns:
        Callable: The decorator, which returns the function unchanged.

    Raises:
        ValueError: If ``name`` is already registered.
    """

    def decorator(fn: Pipeline) -> Pipeline:
        if name in _PIPELINES:
            raise ValueError(f"extraction pipeline {name!r} is already registered")
        _PIPELINES[name] = fn
        return fn

    return decorator


def get_pipeline(name: str) -> Pipeline:
    """Return the pipeline registered as ``name``.

    Raises:
        ValueError: If no pipeline has that name (the message lists the valid ones).
    """
    try:
        return _PIPELINES[name]
    except KeyError:
        raise ValueError(f"unknown extraction pipeline {name!r}; valid: {list_pipelines()}") from None


def list_pipelines() -> list[str]:
    """Names of all registered extraction pipelines, sorted."""
    return sorted(_PIPELINES)


def extract_answer(text: str | None, kind: str = "number", pipelines: tuple[str, ...] | None = None) -> str | None:
    """Run extraction pipelines in order and return the first answer found.

    Args:
        text (str | None): The model's output.
        kind (str): ``"number"`` (math; returns a canonical number string) or ``"code"``
            (returns a code block). Default is ``"number"``.
        pipelines (tuple[str, ...] | None): Pipeline names to run instead of
            ``DEFAULT_PIPELINES[kind]``. Default is None.

    Returns:
        str | None: The first pipeline's non-None result, or None if every pipeline misses.

    Raises:
        ValueError: If ``kind`` or a pipeline name is unknown.
    """
    if kind not in DEFAULT_PIPELINES:
        raise ValueError(f"unknown answer kind {kind!r}; valid: {sorted(DEFAULT_PIPELINES)}")
    if not text:
        return None
    for name in pipelines if pipelines is not None else DEFAULT_PIPELINES[kind]:
        answer = get_pipeline(name)(text)
        if answer is not None:
            return answer
    return None


# --------------------------------------------------------------------------- numbers


def extract_boxed(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``, with nested braces kept.

    >>> extract_boxed(r"\\boxed{\\frac{3}{4}} or \\boxed{2}")
    ['\\\\frac{3}{4}', '2']
    """
    found = []
    for match in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                found.append(text[start:i])
                break
    return found


def _canonical(value: Fraction) -> str:
    """``Fraction`` -> shortest exact decimal string (``18``, ``0.75``, ``-3``)."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den == 1:  # terminating decimal: exact, no float rounding
        text = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
        return text.rstrip("0").rstrip(".")
    return repr(float(value))


def normalize_number(s: str | float | int | None) -> str | None:
    """Canonical string of the first number in ``s``, or None if there is none.

    Strips ``$``/``\\$``, thousands commas, ``\\boxed{}``, LaTeX spacing and ``\\text{units}``,
    trailing dots and units; reads ``3/4`` and ``\\frac{3}{4}`` as 0.75; writes integers without
    a decimal part (``18.0`` -> ``18``) and decimals exactly (``0.50`` -> ``0.5``).

    Args:
        s (str | float | int | None): An answer as written, or a number.

    Returns:
        str | None: The canonical number, e.g. ``"1000"``, ``"-3"``, ``"0.75"``.

    >>> [normalize_number(x) for x in ["$1,000.00", "18.0", "-3 apples", r"\\frac{3}{4}", "none"]]
    ['1000', '18', '-3', '0.75', None]
    """
    if s is None or isinstance(s, bool):
        return None
    if isinstance(s, (int, float)):
        return _canonical(Fraction(s)) if math.isfinite(s) else None
    text = str(s)
    boxed = extract_boxed(text)
    if boxed:
        text = boxed[-1]
    text = text.replace("\u2212", "-").replace("{,}", ",").replace("\\!", "").replace("\\,", "")
    text = text.replace("\\$", "").replace("$", "").replace("\\%", "%")
    text = _LATEX_TEXT_RE.sub(" ", text)
    text = _LATEX_FRAC_RE.sub(r"(\1)/(\2)", text).replace("(", "").replace(")", "")
    # A fraction counts only where it starts the first number ("3/4 cup" but not "2 of 3/4").
    first = _NUMBER_RE.search(text)
    if first is None:
        return None
    frac = _FRACTION_RE.match(text, first.start())
    try:
        if frac is not None:
            den = Fraction(frac.group(2))
            if den == 0:
                return None
            return _canonical(Fraction(frac.group(1).replace(",", "")) / den)
        return _canonical(Fraction(first.group(0).replace(",", "")))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def numbers_match(pred: str | None, gold: str, rel_tol: float = 1e-6) -> bool:
    """Whether ``pred`` and ``gold`` are the same number.

    Args:
        pred (str | None): Predicted answer (raw or normalized); None never matches.
        gold (str): Gold answer.
        rel_tol (float): Relative tolerance for non-identical values. Default is 1e-6.

    Returns:
        bool: True if both normalize to numbers that agree within ``rel_tol``.
    """
    p, g = normalize_number(pred), normalize_number(gold)
    if p is None or g is None:
        return False
    return p == g or math.isclose(float(p), float(g), rel_tol=rel_tol)


# Phrase markers only count when a number follows at once ("the answer is not 3" is no answer).
_LEADS_WITH_NUMBER = re.compile(r"[\s$*\\(\[{]*(?:-|\.?\d|\\[dt]?frac|\\boxed|\\\$)")
_STRICT_PATTERNS = (
    re.compile(r"####\s*([^\n]*)"),
    re.compile(r"(?i)\bthe\s+(?:final\s+)?answer\s+is\s*[:*]*\s*([^\n]*)"),
    re.compile(r"(?i)\bfinal\s+answer\s*[:*]+\s*([^\n]*)"),
)


@register_pipeline("strict")
def strict_number(text: str) -> str | None:
    """Number from an explicit answer marker: ``#### 18``, ``\\boxed{18}``, "The answer is 18",
    "Final answer: 18" (tried in that order; the last occurrence of a marker wins)."""
    phrases = [[m.group(1) for m in p.finditer(text)] for p in _STRICT_PATTERNS[1:]]
    candidates = [
        [m.group(1) for m in _STRICT_PATTERNS[0].finditer(text)],
        extract_boxed(text),
        *([raw for raw in found if _LEADS_WITH_NUMBER.match(raw)] for found in phrases),
    ]
    for found in candidates:
        for raw in reversed(found):
            number = normalize_number(raw)
            if number is not None:
                return number
    return None


@register_pipeline("flexible")
def last_number(text: str) -> str | None:
    """The last number anywhere in the text (lm-eval's "flexible-extract")."""
    cleaned = text.replace("\u2212", "-")
    matches = _NUMBER_RE.findall(cleaned)
    return normalize_number(matches[-1]) if matches else None


# --------------------------------------------------------------------------- code

_FENCE_RE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(text: str, entry_point: str | None = None) -> str:
    """Python code in a model's answer.

    Takes the fenced blocks (```` ```python ````, ```` ```py ```` or bare ```` ``` ````; an
    unclosed last fence runs to the end, as when generation is cut off). Prefers the first block
    that defines ``entry_point``, else the first Python block; with no fence, returns ``text``.

    Args:
        text (str): The model's output.
        entry_point (str | None): Function name to look for. Default is None.

    Returns:
        str: The code.
    """
    blocks = [(lang.lower(), body) for lang, body in _FENCE_RE.findall(text)]
    blocks = [(lang, body) for lang, body in blocks if lang in ("", "python", "py", "python3")]
    if not blocks:
        return text
    if entry_point is not None:
        pattern = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)
        for _, body in blocks:
            if pattern.search(body):
                return body
    tagged = [body for lang, body in blocks if lang]
    return (tagged or [blocks[0][1]])[0]


@register_pipeline("code_block")
def code_block(text: str) -> str | None:
    """The first Python code block, or the whole text if it has no fence; None if blank."""
    code = extract_code(text)
    return code if code.strip() else None
