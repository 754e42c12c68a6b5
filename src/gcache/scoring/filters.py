"""Answer extraction: registered extractors combined into named ``strict`` / ``flexible`` pipelines.

Modelled on lm-eval's filters (``filters/extraction.py``): an *extractor* is a function
``(text, example) -> answer | None`` registered under a name; a :class:`FilterPipeline` tries its extractors in
order, the first answer wins, and a miss gives the pipeline's ``fallback`` (None: no answer). Every task declares
two pipelines (see :data:`PIPELINES`):

* ``strict``: only an answer given in an explicit answer format (``\\boxed{18}``, ``#### 18``, "The answer is
  (B)", "Final answer: 18", a fenced code block defining the function);
* ``flexible``: the strict answer when there is one, else the answer found anywhere (the last number, the last
  option letter or option text, any code block or the whole text). This is the fused extraction of the LatentMAS
  reference (``utils.py``: ``\\boxed{}``, else the last number); lm-eval's ``flexible-extract`` takes the last
  number even when a marked answer came earlier.

So a flexible score is never below the strict one. Numeric answers are canonical numbers from
:func:`normalize_number` (``"18"``, ``"0.75"``, ``"-3"``), so equal answers written differently compare equal.

>>> PIPELINES["number"]["strict"]("She pays 2 * 9 = $18.\\n#### 18")
'18'
>>> PIPELINES["number"]["flexible"]("3 apples and then 5 more")
'5'
>>> PIPELINES["letter"]["strict"]("... so the answer is (B).")
'B'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, Callable, Mapping

from gcache.scoring.latex import normalize_math

__all__ = [
    "ANSWER_KINDS",
    "FilterPipeline",
    "PIPELINES",
    "extract_answer",
    "extract_boxed",
    "extract_code",
    "defines_function",
    "get_extractor",
    "letters_match",
    "list_extractors",
    "normalize_number",
    "numbers_match",
    "option_letters",
    "register_extractor",
]

#: ``(text, example) -> answer | None``. ``example`` (a :class:`gcache.tasks.Example` or None) gives the options
#: of a multiple-choice question and the entry point of a coding one; None when there is no question at hand
#: (majority voting).
Extractor = Callable[[str, Any], "str | None"]

# Filled only at import time by @register_extractor (read-only afterwards), like lm-eval's registry.
_EXTRACTORS: dict[str, Extractor] = {}

# A number as written in text: optional sign, thousands groups or plain digits, decimals,
# exponent. The minus only counts when it is not a binary operator ("5-3" holds 5 and 3).
_NUMBER = r"(?:(?<![\w)])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d+)?|(?:(?<![\w)])-)?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
_FRACTION_RE = re.compile(rf"({_NUMBER})\s*/\s*(\d+(?:\.\d+)?)(?![\d.,/])")
_LATEX_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]*?)\s*\}\s*\{\s*([^{}]*?)\s*\}")
_LATEX_TEXT_RE = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{[^{}]*\}")


def register_extractor(name: str) -> Callable[[Extractor], Extractor]:
    """Register an extractor under ``name`` (decorator).

    Args:
        name (str): Name used in :class:`FilterPipeline` ``extractors``.

    Returns:
        Callable: The decorator, which returns the function unchanged.

    Raises:
        ValueError: If ``name`` is already registered.
    """

    def decorator(fn: Extractor) -> Extractor:
        if name in _EXTRACTORS:
            raise ValueError(f"extractor {name!r} is already registered")
        _EXTRACTORS[name] = fn
        return fn

    return decorator


def get_extractor(name: str) -> Extractor:
    """Return the extractor registered as ``name``.

    Raises:
        ValueError: If no extractor has that name (the message lists the valid ones).
    """
    try:
        return _EXTRACTORS[name]
    except KeyError:
        raise ValueError(f"unknown extractor {name!r}; valid: {list_extractors()}") from None


def list_extractors() -> list[str]:
    """Names of all registered extractors, sorted."""
    return sorted(_EXTRACTORS)


@dataclass(frozen=True)
class FilterPipeline:
    """A named extraction pipeline: extractors tried in order, the first answer wins.

    Args:
        name (str): ``"strict"`` or ``"flexible"`` (the key scores are reported under).
        extractors (tuple[str, ...]): Registered extractor names.
        fallback (str | None): Answer when every extractor misses. Default is None (no answer).
    """

    name: str
    extractors: tuple[str, ...]
    fallback: str | None = None

    def __post_init__(self) -> None:
        if not self.extractors:
            raise ValueError(f"pipeline {self.name!r} needs at least one extractor")
        for extractor in self.extractors:
            get_extractor(extractor)  # fail at declaration, not at the first answer

    def __call__(self, text: str | None, example: Any = None) -> str | None:
        if text:
            for name in self.extractors:
                answer = _EXTRACTORS[name](text, example)
                if answer is not None:
                    return answer
        return self.fallback


def extract_answer(text: str | None, kind: str = "number", pipeline: str = "flexible", example: Any = None) -> str | None:
    """Run the ``pipeline`` of answer ``kind`` on ``text``.

    Args:
        text (str | None): The model's output.
        kind (str): A key of :data:`PIPELINES`: ``number``, ``letter``, ``math`` or ``code``. Default is ``number``.
        pipeline (str): ``strict`` or ``flexible``. Default is ``flexible``.
        example: The question (options, entry point), or None. Default is None.

    Returns:
        str | None: The answer, or None.

    Raises:
        ValueError: If ``kind`` or ``pipeline`` is unknown.
    """
    if kind not in PIPELINES:
        raise ValueError(f"unknown answer kind {kind!r}; valid: {sorted(PIPELINES)}")
    if pipeline not in PIPELINES[kind]:
        raise ValueError(f"unknown pipeline {pipeline!r}; valid: {sorted(PIPELINES[kind])}")
    return PIPELINES[kind][pipeline](text, example)


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


@register_extractor("number_strict")
def strict_number(text: str, example: Any = None) -> str | None:
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


@register_extractor("last_number")
def last_number(text: str, example: Any = None) -> str | None:
    """The last number anywhere in the text (lm-eval's "flexible-extract")."""
    cleaned = text.replace("\u2212", "-")
    matches = _NUMBER_RE.findall(cleaned)
    return normalize_number(matches[-1]) if matches else None


# --------------------------------------------------------------------------- option letters

_ALL_LETTERS = "ABCDEFGHIJ"
_WRAPPERS_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")


def option_letters(example: Any) -> str:
    """The option letters of a multiple-choice question (``"ABCD"``); A-J when there is no question at hand."""
    choices = getattr(example, "meta", {}).get("choices") if example is not None else None
    return _ALL_LETTERS[: len(choices)] if choices else _ALL_LETTERS


def letters_match(pred: str | None, gold: str) -> bool:
    """Whether a predicted option letter is the gold one (case-insensitive)."""
    return pred is not None and pred.strip().upper() == gold.strip().upper()


def _letter_at_start(raw: str, letters: str) -> str | None:
    """The option letter that ``raw`` begins with: ``B``, ``(B)``, ``B.``, ``B) text``, ``**B**``, ``(b)``; not
    ``Bob``, and a lower-case letter only in brackets or alone (so "a bit" is no answer)."""
    raw = _WRAPPERS_RE.sub(r"\1", raw)
    low = letters.lower()
    m = re.match(rf"[\s*$\\(\[{{:]*(?:([{letters}])(?![A-Za-z])|\(([{low}])\)|([{low}])\)|([{low}])[\s.*]*$)", raw)
    return next(g for g in m.groups() if g).upper() if m else None


_LETTER_MARKERS = (
    re.compile(r"(?i)\banswer\s*(?:is|:|=)\s*(?:option|choice)?\s*([^\n]*)"),
    re.compile(r"####\s*([^\n]*)"),
)


@register_extractor("letter_strict")
def strict_letter(text: str, example: Any = None) -> str | None:
    """An option letter in an answer format: ``\\boxed{B}`` first, then "The answer is (B)" / "Answer: B" /
    "Final answer: B", then ``#### B`` (the last occurrence of a format wins)."""
    letters = option_letters(example)
    groups = [extract_boxed(text), *([m.group(1) for m in p.finditer(text)] for p in _LETTER_MARKERS)]
    for found in groups:
        for raw in reversed(found):
            letter = _letter_at_start(raw, letters)
            if letter is not None:
                return letter
    return None


@register_extractor("last_letter")
def last_letter(text: str, example: Any = None) -> str | None:
    """The last option letter written as an option: ``(B)``, ``**B**``, "option B", ``B.``/``B)`` opening a line,
    or a reply that is only a letter."""
    letters = option_letters(example)
    pattern = re.compile(
        rf"\(([{letters}])\)|\*\*([{letters}])\*\*|(?i:\b(?:option|choice)\s+)([{letters}])\b"
        rf"|(?m:^\s*([{letters}])[.):](?=\s|$))|^\W*([{letters}])\W*$")
    found = [next(g for g in m.groups() if g) for m in pattern.finditer(text.strip())]
    return found[-1] if found else None


@register_extractor("option_text")
def option_text(text: str, example: Any = None) -> str | None:
    """The option whose text the reply mentions last (for replies that name the answer instead of its letter).

    Numeric options (AQuA) match the reply's last number; other options match their text (at least 3 characters,
    case-insensitive)."""
    choices = getattr(example, "meta", {}).get("choices") if example is not None else None
    if not choices:
        return None
    numbers = [normalize_number(c) for c in choices]
    if all(n is not None and _NUMBER_RE.fullmatch(c.strip().replace("$", "")) for n, c in zip(numbers, choices)):
        last = last_number(text)
        hits = [i for i, n in enumerate(numbers) if last is not None and n == last]
        return _ALL_LETTERS[hits[0]] if len(hits) == 1 else None
    lowered = text.casefold()
    best, best_pos = None, -1
    for i, choice in enumerate(choices):
        needle = choice.strip().casefold()
        pos = lowered.rfind(needle) if len(needle) >= 3 else -1
        if pos > best_pos:
            best, best_pos = _ALL_LETTERS[i], pos
    return best


# --------------------------------------------------------------------------- math expressions (MATH-500)

_MATH_PHRASE_RE = re.compile(r"(?i)\b(?:the\s+)?final\s+answer\s*(?:is|:)\s*([^\n]*)|\bthe\s+answer\s+is\s*:?\s*([^\n]*)")
_INLINE_MATH_RE = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|\$([^$]+)\$", re.DOTALL)


def _clean_phrase(raw: str) -> str | None:
    raw = raw.strip()
    m = _INLINE_MATH_RE.search(raw)
    if m:
        raw = next(g for g in m.groups() if g)
    raw = raw.strip().rstrip(".").strip()
    return raw or None


@register_extractor("math_strict")
def strict_math(text: str, example: Any = None) -> str | None:
    """The last ``\\boxed{...}``, else the expression after "The final answer is" (normalised LaTeX)."""
    boxed = extract_boxed(text)
    if boxed:
        return normalize_math(boxed[-1])
    for m in reversed(list(_MATH_PHRASE_RE.finditer(text))):
        raw = _clean_phrase(m.group(1) or m.group(2) or "")
        if raw:
            return normalize_math(raw)
    return None


@register_extractor("last_math")
def last_math(text: str, example: Any = None) -> str | None:
    """The last inline math (``$...$``, ``\\(...\\)``), else the last number (normalised LaTeX)."""
    found = [next(g for g in m.groups() if g) for m in _INLINE_MATH_RE.finditer(text)]
    if found:
        return normalize_math(found[-1])
    number = last_number(text)
    return normalize_math(number) if number is not None else None

# --------------------------------------------------------------------------- code

_FENCE_RE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CLOSED_FENCE_RE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def defines_function(code: str, name: str) -> bool:
    """Whether ``code`` defines function ``name`` (a ``def`` at the start of a line)."""
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None


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
        for _, body in blocks:
            if defines_function(body, entry_point):
                return body
    tagged = [body for lang, body in blocks if lang]
    return (tagged or [blocks[0][1]])[0]



@register_extractor("code_fenced")
def fenced_code(text: str, example: Any = None) -> str | None:
    """A closed Python code fence (```` ```python ```` / ```` ```py ````) that defines the function the tests call
    (any closed Python fence when no function name is known)."""
    entry_point = getattr(example, "meta", {}).get("entry_point") if example is not None else None
    blocks = [body for lang, body in _CLOSED_FENCE_RE.findall(text) if lang.lower() in ("python", "py", "python3")]
    if entry_point is None:
        return blocks[0] if blocks else None
    return next((b for b in blocks if defines_function(b, entry_point)), None)


@register_extractor("code_any")
def any_code(text: str, example: Any = None) -> str | None:
    """Code from :func:`extract_code`: any Python or bare fence (an unclosed last one too), else the whole text."""
    entry_point = getattr(example, "meta", {}).get("entry_point") if example is not None else None
    code = extract_code(text, entry_point)
    return code if code.strip() else None


# --------------------------------------------------------------------------- the pipelines of each answer kind


def _pipelines(strict: tuple[str, ...], anywhere: tuple[str, ...]) -> Mapping[str, FilterPipeline]:
    return {"strict": FilterPipeline("strict", strict), "flexible": FilterPipeline("flexible", strict + anywhere)}


#: ``PIPELINES[kind][name]``: the strict and flexible pipeline of each answer kind.
PIPELINES: Mapping[str, Mapping[str, FilterPipeline]] = {
    "number": _pipelines(("number_strict",), ("last_number",)),
    "letter": _pipelines(("letter_strict",), ("last_letter", "option_text")),
    "math": _pipelines(("math_strict",), ("last_math",)),
    "code": _pipelines(("code_fenced",), ("code_any",)),
}
#: The answer kinds.
ANSWER_KINDS = tuple(PIPELINES)
