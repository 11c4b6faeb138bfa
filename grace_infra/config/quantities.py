"""Kubernetes resource quantities: parse them exactly and format the ones the program writes.

Parsing follows the API's quantity grammar (apimachinery `resource.Quantity`): a signed decimal number
with an optional binary suffix (Ki Mi Gi Ti Pi Ei), decimal suffix (n u m k M G T P E) or exponent
(`1e3`). Values are `Decimal` so `0.1 + 0.2` CPU sums and 1.2 x request comparisons are exact.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["GI", "QuantityError", "cpu_quantity", "gib_quantity", "parse_quantity"]

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
}  # fmt: skip
_QUANTITY = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+|[numkMGTPE]?)$"
)
GI = 2**30  # bytes in a GiB


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity; the message names the value."""


def parse_quantity(value: str | int | float) -> Decimal:
    """The quantity's value in base units (cores, bytes, GPUs) as an exact Decimal."""
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY.fullmatch(value.strip())
    if not match:
        raise QuantityError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 4, 24Gi, 1e3)")
    number, suffix = match.groups()
    try:
        base = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid decimals
        raise QuantityError(f"{value!r} is not a Kubernetes quantity") from exc
    if suffix in _BINARY:
        return base * _BINARY[suffix]
    if suffix[:1] in {"e", "E"}:
        return base * Decimal(10) ** int(suffix[1:])
    return base * _DECIMAL[suffix]


def cpu_quantity(cores: float | Decimal) -> str:
    """CPU as the API writes it: whole cores as `4`, otherwise millicores (`4800m`)."""
    millicores = (Decimal(str(cores)) * 1000).quantize(Decimal(1))
    if millicores % 1000 == 0:
        return str(int(millicores // 1000))
    return f"{int(millicores)}m"


def gib_quantity(gib: float | Decimal) -> str:
    """Memory in GiB as `24Gi`, or in MiB when not a whole number of GiB (`29491Mi`, rounded down)."""
    value = Decimal(str(gib))
    if value == value.to_integral_value():
        return f"{int(value)}Gi"
    return f"{int(value * 1024)}Mi"
