"""Property tests (hypothesis) of number normalisation, against answers computed with Fraction / Decimal."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from gcache.scoring import normalize_number, numbers_match

INTS = st.integers(min_value=-10**15, max_value=10**15)
SETTINGS = settings(max_examples=100, deadline=None)


def _expected_decimal(d: Decimal) -> str:
    """Shortest exact decimal of ``d``, written independently of the code under test."""
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


@SETTINGS
@given(INTS)
def test_integers_in_every_dress_normalise_to_themselves(n):
    for text in (str(n), f"{n:,}", f"{n}.0", f"{n:,}.00", f"\\boxed{{{n}}}", f"{n} apples", f"The answer is {n}."):
        assert normalize_number(text) == str(n), text
    if n >= 0:
        assert normalize_number(f"${n:,}") == normalize_number(f"\\${n}") == str(n)


@SETTINGS
@given(st.integers(min_value=-10**9, max_value=10**9), st.integers(min_value=0, max_value=8))
def test_decimals_are_written_exactly(mantissa, exponent):
    d = Decimal(mantissa).scaleb(-exponent)
    text = format(d, "f")  # e.g. "12.3400": trailing zeros kept as a user would write them
    assert normalize_number(text) == _expected_decimal(d)


@SETTINGS
@given(st.integers(min_value=-10**6, max_value=10**6), st.integers(min_value=1, max_value=10**4))
def test_fractions_read_as_their_value(p, q):
    value = Fraction(p, q)
    for text in (f"{p}/{q}", f"\\frac{{{p}}}{{{q}}}"):
        got = normalize_number(text)
        assert got is not None and numbers_match(got, str(float(value)))
        if _prime_factors(value.denominator) <= {2, 5}:
            assert Fraction(Decimal(got)) == value  # a terminating decimal is exact


def _prime_factors(n: int) -> set[int]:
    out, f = set(), 2
    while f * f <= n:
        while n % f == 0:
            out.add(f)
            n //= f
        f += 1
    return out | ({n} if n > 1 else set())


@SETTINGS
@given(st.text(max_size=40))
def test_normalising_is_idempotent(text):
    once = normalize_number(text)
    if once is not None:
        assert normalize_number(once) == once


@SETTINGS
@given(st.one_of(INTS.map(str), st.fractions(max_denominator=64).map(lambda f: f"{f.numerator}/{f.denominator}")),
       st.one_of(INTS.map(str), st.fractions(max_denominator=64).map(lambda f: f"{f.numerator}/{f.denominator}")))
def test_matching_is_symmetric_and_reflexive(a, b):
    assert numbers_match(a, a)
    assert numbers_match(a, b) == numbers_match(b, a)
