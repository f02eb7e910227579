"""Numbers rounded to three decimals, exactly as `round(x, 3)` does, and written as orjson
writes them (their `repr`, in the range of these numbers), at a fraction of the cost: the
access log writes two per request and the signals keep one (milliseconds to the µs, epoch
seconds to the ms).

`round(x, 3)` rounds the exact binary value of `x` to the nearest thousandth (ties to even) by
way of a decimal string, then reads it back; a float's repr is a C call of its own. Here the
nearest integer to `x * 1000` is taken in floating point, which can only differ from the exact
one when the product lies within its rounding error of a half (under 2^-11 below 2^42): those
values are rounded in integers from `x`'s exact ratio (a few in a thousand of real times; in a
benchmark whose clock ticks in 28ths of a ms, one in 28), and any outside (0, 2^42) by
`round` itself.
"""

from __future__ import annotations

import math
from typing import Final

import orjson

LIMIT: Final = float(1 << 42)  # x * 1000 below this: the product is within 2^-11 of exact
MARGIN: Final = 1e-3  # > 2^-11: a fraction this far from a half rounds the same either way
SUFFIXES: Final = [f".{n:03d}".rstrip("0") if n else ".0" for n in range(1000)]
"""The text after the integer part, for each number of thousandths (".5" for 500)."""
SUFFIX_BYTES: Final = [suffix.encode() for suffix in SUFFIXES]


def kept_json(value: object) -> bytes:
    """orjson's JSON text of `value`, copied to its size: for a text kept to be reused (a
    bytes object orjson returns holds the ~4 KB buffer it wrote in: 17 MB for a table of
    4,096 latency samples)."""
    return bytes(memoryview(orjson.dumps(value)))


def thousandths(x: float) -> int:
    """`round(x, 3) * 1000` as an int; -1 when only `round` itself can tell (see above)."""
    scaled = x * 1000.0
    if not 0.0 < scaled < LIMIT:  # (0.0 too: it may be -0.0)
        return -1
    whole = int(scaled)
    fraction = scaled - whole
    if -MARGIN < fraction - 0.5 < MARGIN:
        return _exact(x)
    return whole + 1 if fraction > 0.5 else whole


def _exact(x: float) -> int:
    """The integer nearest to `x` * 1000 (`x` > 0) taken exactly, ties to even, as `round`
    rounds (no decimal string made and read back). `x` is m / 2^k exactly, m an integer below
    2^53, so x * 1000 is m * 125 / 2^(k - 3): in machine integers for the `x` this is asked
    about (2^-11 to 2^49: m * 125 below 2^60), else from the float's exact ratio."""
    mantissa, exponent = math.frexp(x)  # x = mantissa * 2^exponent, 0.5 <= mantissa < 1
    shift = 50 - exponent
    if 0 < shift < 61:
        numerator = int(mantissa * 9007199254740992.0) * 125  # (m: mantissa * 2^53, exact)
        denominator = 1 << shift
    else:
        numerator, denominator = x.as_integer_ratio()  # (the denominator: a power of two)
        numerator *= 1000
    n = numerator // denominator
    twice = 2 * (numerator - n * denominator)
    if twice > denominator or (twice == denominator and n % 2 == 1):
        return n + 1
    return n


def round3(x: float) -> float:
    """`round(x, 3)`."""
    n = thousandths(x)
    if n < 0:
        return round(x, 3)
    # (n is exact as a float, and the division is correctly rounded: the float round() reads
    # back from the decimal; float() first keeps it a machine division when compiled)
    return float(n) / 1000.0


def text3(x: float) -> str:
    """`round(x, 3)` as orjson writes it (its repr, or null for a NaN or an infinity)."""
    n = thousandths(x)
    if n < 0:
        return orjson.dumps(round(x, 3)).decode()
    return str(n // 1000) + SUFFIXES[n % 1000]
