"""CPU limits sit exactly at NRP's 1.2 x request, never a millicore under or over it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from grace_infra import constants as c
from grace_infra.planning.sizing import cpu_limit_within


@pytest.mark.parametrize(
    ("request_cores", "expected"),
    [(1, 1.2), (6, 7.2), (0.5, 0.6), (16, 19.2), (7, 8.4), (3.3, 3.96), (0.001, 0.001)],
)
def test_cpu_limit_is_the_largest_millicore_value_within_ratio(
    request_cores: float, expected: float
) -> None:
    limit = cpu_limit_within(request_cores, c.NRP_LIMIT_TO_REQUEST_MAX_RATIO)
    assert limit == expected
    # exact decimal arithmetic: within the ratio, and one more millicore would break it
    allowed = Decimal(str(request_cores)) * Decimal(str(c.NRP_LIMIT_TO_REQUEST_MAX_RATIO))
    assert Decimal(str(limit)) <= allowed < Decimal(str(limit)) + Decimal("0.001")
