from __future__ import annotations

import math
import random

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core.services.analytics import percentile_sql


def nearest_rank(values: list[int], p: int) -> int:
    return sorted(values)[math.ceil(p * len(values) / 100) - 1]


CASES = [
    [7],
    [3, 1],
    [5, 5, 5],
    list(range(1, 21)),
    list(range(1, 101)),
    [0, 0, 900, 3600, 5400, 7200],
]
CASES += [[random.Random(n).randint(0, 50) for _ in range(n)] for n in (19, 20, 21, 199, 200, 1001)]


@pytest.mark.parametrize("values", CASES, ids=lambda v: f"n{len(v)}")
def test_portable_percentiles_are_nearest_rank_and_match_percentile_disc(
    engine: Engine, values: list[int]
) -> None:
    literal = ", ".join(f"({v})" for v in values)
    rows = f"SELECT column1 AS x FROM (VALUES {literal}) AS v"  # noqa: S608  (integers we made)
    with engine.connect() as conn:
        got = conn.execute(sa.text(percentile_sql(rows, percents=(50, 95)))).one()
        assert tuple(got) == (nearest_rank(values, 50), nearest_rank(values, 95))
        if engine.dialect.name == "postgresql":
            disc = conn.execute(
                sa.text(
                    "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY x),"  # noqa: S608
                    f" percentile_disc(0.95) WITHIN GROUP (ORDER BY x) FROM ({rows}) AS w"
                )
            ).one()
            assert tuple(disc) == tuple(got)


def test_no_values_is_null(engine: Engine) -> None:
    with engine.connect() as conn:
        empty = "SELECT 1 AS x WHERE 1 = 0"
        assert tuple(conn.execute(sa.text(percentile_sql(empty, percents=(95,)))).one()) == (None,)
