"""Kubernetes quantities, parsed exactly (the quota and limit rules compare them)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from grace_infra.config.quantities import QuantityError, cpu_quantity, gib_quantity, parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("200", Decimal(200)),
        ("4800m", Decimal("4.8")),
        ("0.5", Decimal("0.5")),
        (".5", Decimal("0.5")),
        ("800Gi", Decimal(800 * 2**30)),
        ("1228Mi", Decimal(1228 * 2**20)),
        ("1G", Decimal(10**9)),
        ("1k", Decimal(1000)),
        ("1e3", Decimal(1000)),
        ("1E-3", Decimal("0.001")),
        ("250u", Decimal("0.00025")),
        ("2Ti", Decimal(2 * 2**40)),
        (15, Decimal(15)),
    ],
)
def test_parse_quantity(text: str | int, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "Gi", "12 Gi", "1.2.3", "10gi", "1iB", "abc"])
def test_not_a_quantity(text: str) -> None:
    with pytest.raises(QuantityError, match="is not a Kubernetes quantity"):
        parse_quantity(text)


def test_cpu_and_memory_formatting_round_trip() -> None:
    assert cpu_quantity(4) == "4"
    assert cpu_quantity(4 * 1.2) == "4800m"
    assert cpu_quantity(0.25) == "250m"
    assert gib_quantity(24) == "24Gi"
    assert gib_quantity(1.5) == "1536Mi"
    for cores in (1, 2.5, 9.6, 19.2):
        assert parse_quantity(cpu_quantity(cores)) == Decimal(str(cores))
