"""The columnar parse of stored online values (parse_grid) against the field-by-field parse,
on generated values and on a real Redis."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.constants import online_feature_key
from featurestore.services import ManagedService
from featurestore.settings import Settings
from featurestore.store.online import OnlineStore, parse_stored
from featurestore.store.online_grid import parse_grid, to_micros

MICROS = st.integers(min_value=-(2**62), max_value=2**62)
NUMBERS = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def stored(draw: st.DrawFn) -> bytes | str | None:
    """A hash field as the store writes it: three parts, the two of a value written before
    the created time was kept, absent, or text from a client that decodes replies."""
    micros, value = draw(MICROS), draw(NUMBERS)
    text = draw(st.sampled_from([repr(value), str(value), f"{value:.6g}", f"{value:e}"]))
    form = draw(st.sampled_from(["three", "two", "absent"]))
    if form == "absent":
        return None
    field = f"{micros}:{text}" + (f":{draw(MICROS)}" if form == "three" else "")
    return field if draw(st.booleans()) else field.encode()


def _reference(replies: list[list[bytes | str | None]]) -> list[list[tuple[int, float] | None]]:
    return [[None if f is None else parse_stored(f) for f in row] for row in replies]


def _same(left: float, right: float) -> bool:
    return (math.isnan(left) and math.isnan(right)) or left == right


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=6), st.data())
def test_grid_equals_the_field_by_field_parse(width: int, data: st.DataObject) -> None:
    replies = data.draw(st.lists(st.lists(stored(), min_size=width, max_size=width), max_size=8))
    grid = parse_grid(replies, width)
    assert grid.values.shape == grid.event_micros.shape == grid.present.shape
    assert grid.values.shape == (len(replies), width)
    expected = _reference(replies)
    assert grid.complete == all(cell is not None for row in expected for cell in row)
    for i, row in enumerate(expected):
        for j, cell in enumerate(row):
            assert bool(grid.present[i, j]) == (cell is not None)
            micros, value = cell if cell is not None else (0, 0.0)
            assert int(grid.event_micros[i, j]) == micros
            assert _same(float(grid.values[i, j]), value)


def test_values_keep_every_bit_of_a_double() -> None:
    values = [0.1, 1 / 3, -2.5e-308, 5e-324, 1.7976931348623157e308, -0.0, 123456789.0]
    replies: list[list[bytes | str | None]] = [[f"1:{v!r}:2".encode() for v in values]]
    grid = parse_grid(replies, len(values))
    assert grid.values[0].tolist() == values
    assert math.copysign(1.0, grid.values[0, 5]) == -1.0


def test_text_that_is_not_a_stored_value_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_grid([[b"12:abc:3"]], 1)
    with pytest.raises(ValueError, match="stored fields"):
        parse_grid([[b"1:2:3"]], 2)


def test_micros_of_naive_and_aware_datetimes() -> None:
    naive = dt.datetime(2024, 5, 1, 12, 0, 0, 250)
    assert to_micros(naive) == 1714564800000250
    assert to_micros(naive.replace(tzinfo=dt.UTC)) == 1714564800000250
    east = dt.timezone(dt.timedelta(hours=2))
    assert to_micros(dt.datetime(2024, 5, 1, 14, 0, 0, 250, tzinfo=east)) == 1714564800000250
    assert to_micros(dt.datetime(1969, 12, 31, 23, 59, 59, 999999)) == -1


@pytest.fixture
def client(settings: Settings, redis_service: ManagedService) -> Iterator[redis.Redis]:
    """A client of the session's Redis."""
    with redis.Redis.from_url(settings.redis_url) as c:
        yield c


def test_grid_from_real_redis_with_gaps_and_old_values(client: redis.Redis) -> None:
    names = ["a", "b", "c"]
    full, old, none = (f"g_{uuid.uuid4().hex[:8]}" for _ in range(3))
    client.hset(online_feature_key(full), mapping={"a": "10:1.5:11", "b": "20:-2:21", "c": "5:0:5"})
    # "b" as stored before the created time was kept; "c" absent.
    client.hset(online_feature_key(old), mapping={"a": "30:0.25:31", "b": "40:7.0"})
    grid = OnlineStore(client).grid([full, old, none, full], names)
    assert grid.present.tolist() == [
        [True, True, True],
        [True, True, False],
        [False, False, False],
        [True, True, True],
    ]
    assert grid.values.tolist() == [[1.5, -2.0, 0.0], [0.25, 7.0, 0.0], [0.0] * 3, [1.5, -2.0, 0.0]]
    assert grid.event_micros.tolist() == [[10, 20, 5], [30, 40, 0], [0] * 3, [10, 20, 5]]
    assert not grid.complete
    one = OnlineStore(client).grid([full], names)
    assert one.complete
    np.testing.assert_array_equal(one.values, grid.values[:1])
