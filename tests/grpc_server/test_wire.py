"""The numpy-encoded Predict and GetOnlineFeatures responses (grpc_server.wire) equal the
ones built message by message, on generated calls."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from featurestore.serving.results import (
    ORIGINS,
    REQUEST,
    CallArrays,
    EntityPrediction,
    PredictionResult,
    UsedFeature,
    arrays_of,
)
from featurestore.serving.service import OnlineFeatures
from featurestore.store.online_grid import OnlineGrid
from grpc_server import convert, wire, wire_grid
from grpc_server.generated import featurestore_pb2 as pb

NAMES = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=150)
# Event times from before 1970 to far beyond 2100, every varint length of seconds and nanos.
MICROS = st.integers(min_value=-(10**16), max_value=10**17) | st.sampled_from([0, -1, 1, 999_999])
DOUBLES = st.floats(allow_nan=False) | st.sampled_from([0.0, -0.0, float("inf")])


@st.composite
def calls(draw: st.DrawFn) -> PredictionResult:
    """A Predict result with its arrays: any origins, outputs of numbers and of text."""
    n = draw(st.integers(min_value=1, max_value=6))
    f = draw(st.integers(min_value=0, max_value=5))
    names = tuple(draw(st.lists(NAMES, min_size=f, max_size=f)))
    values = draw(hnp.arrays(np.float64, (n, f), elements=DOUBLES))
    micros = draw(hnp.arrays(np.int64, (n, f), elements=MICROS))
    origins = draw(hnp.arrays(np.uint8, (n, f), elements=st.sampled_from([0, 1, 2])))
    micros[origins == REQUEST] = 0
    k = draw(st.integers(min_value=0, max_value=3))
    outputs = {
        "probabilities": draw(hnp.arrays(np.float64, (n, k), elements=DOUBLES)),
        "label": np.array(
            [[draw(st.sampled_from(["yes", "no", ""]))] for _ in range(n)], dtype=object
        ),
    }
    arrays = CallArrays(names, values, micros, origins, outputs)
    listed = {name: rows.tolist() for name, rows in outputs.items()}
    ids = draw(st.lists(NAMES, min_size=n, max_size=n))
    predictions = [
        EntityPrediction(ids[i], {k: v[i] for k, v in listed.items()}, arrays=arrays, row=i)
        for i in range(n)
    ]
    return PredictionResult("model", draw(NAMES), predictions, arrays)


@settings(max_examples=200, deadline=None)
@given(calls(), NAMES)
def test_predict_response_in_one_pass_equals_message_by_message(
    result: PredictionResult, request_id: str
) -> None:
    arrays = arrays_of(result)
    expected = convert._predict_messages(result, arrays, request_id)
    encoded = pb.PredictResponse.FromString(wire_predict(result, request_id).SerializeToString())
    assert encoded == expected
    assert len(encoded.predictions) == len(result.predictions)


def wire_predict(result: PredictionResult, request_id: str) -> pb.PredictResponse:
    """The numpy path whatever the size of the call."""
    limit = convert.NUMPY_FROM_VALUES
    convert.NUMPY_FROM_VALUES = 0
    try:
        return convert.predict_response(result, request_id)
    finally:
        convert.NUMPY_FROM_VALUES = limit


@st.composite
def lookups(draw: st.DrawFn) -> OnlineFeatures:
    """A GetOnlineFeatures answer: cells absent or present, all listed or some."""
    n = draw(st.integers(min_value=1, max_value=6))
    f = draw(st.integers(min_value=0, max_value=5))
    names = draw(st.lists(NAMES, min_size=f, max_size=f))
    present = draw(hnp.arrays(np.bool_, (n, f)))
    # Absent cells hold 0, as parse_grid leaves them.
    values = np.where(present, draw(hnp.arrays(np.float64, (n, f), elements=DOUBLES)), 0.0)
    micros = np.where(present, draw(hnp.arrays(np.int64, (n, f), elements=MICROS)), 0)
    grid = OnlineGrid(values, micros, present, bool(present.all()))
    listed = present.copy() if draw(st.booleans()) else None
    return OnlineFeatures(draw(st.lists(NAMES, min_size=n, max_size=n)), names, grid, listed)


@settings(max_examples=200, deadline=None)
@given(lookups())
def test_online_response_in_one_pass_equals_message_by_message(found: OnlineFeatures) -> None:
    expected = convert._online_messages(found)
    limit = convert.NUMPY_FROM_VALUES
    convert.NUMPY_FROM_VALUES = 0
    try:
        encoded = convert.online_response(found)
    finally:
        convert.NUMPY_FROM_VALUES = limit
    assert encoded == expected
    if len(found.entity_ids) == 1:
        assert encoded.entity_id == found.entity_ids[0]
        assert list(encoded.features) == list(encoded.results[0].features)
    else:
        assert not encoded.entity_id and not encoded.features


def test_a_hand_built_result_gets_its_arrays_from_its_features() -> None:
    at = np.datetime64("2024-05-01T12:00:00.000250").astype(object)
    prediction = EntityPrediction(
        "e1",
        {"label": ["yes"], "score": [0.25]},
        [UsedFeature("a", 1.5, at, "online"), UsedFeature("b", -2.0, None, "request")],
    )
    arrays = arrays_of(PredictionResult("m", "1", [prediction]))
    assert arrays.feature_names == ("a", "b")
    assert arrays.values.tolist() == [[1.5, -2.0]]
    assert arrays.event_micros.tolist() == [[1714564800000250, 0]]
    assert [ORIGINS[c] for c in arrays.origins[0].tolist()] == ["online", "request"]
    assert arrays.used(0) == prediction.features


@pytest.mark.parametrize(
    "value", [0, 1, 127, 128, 300, 16383, 16384, 2**31, 2**63 - 1, -1, -(2**63)]
)
def test_varints_are_the_ones_protobuf_writes(value: int) -> None:
    groups, lengths = wire.varints(np.array([value], dtype=np.int64))
    encoded = groups[0, : lengths[0]].tobytes()
    # ArtifactInfo.bytes is int64 field 2: tag 0x10, then the varint (nothing for 0).
    assert pb.ArtifactInfo(bytes=value).SerializeToString() == (b"\x10" + encoded if value else b"")
    if value >= 0:
        assert wire.varint(value) == encoded


# From 1978-07-04 (2 ** 28 s) to 3058 (2 ** 35 s): the times wire_grid lays out at fixed places.
GRID_MICROS = st.integers(min_value=2**28 * 10**6, max_value=2**35 * 10**6 - 1) | st.sampled_from(
    [2**28 * 10**6, 2**35 * 10**6 - 1, 1_767_542_549_000_000]
)


@st.composite
def complete_lookups(draw: st.DrawFn) -> OnlineFeatures:
    """A GetOnlineFeatures answer of several entities with every cell present."""
    n = draw(st.integers(min_value=2, max_value=6))
    f = draw(st.integers(min_value=1, max_value=5))
    names = draw(st.lists(NAMES, min_size=f, max_size=f))
    values = draw(hnp.arrays(np.float64, (n, f), elements=DOUBLES))
    micros = draw(hnp.arrays(np.int64, (n, f), elements=GRID_MICROS))
    grid = OnlineGrid(values, micros, np.ones((n, f), dtype=bool), True)
    return OnlineFeatures(draw(st.lists(NAMES, min_size=n, max_size=n)), names, grid, None)


@settings(max_examples=300, deadline=None)
@given(complete_lookups())
def test_a_complete_grid_at_fixed_places_equals_message_by_message(found: OnlineFeatures) -> None:
    grid = found.grid
    fixed = wire_grid.entity_records(
        3, found.entity_ids, found.names, grid.values, grid.event_micros
    )
    assert fixed is not None
    assert pb.GetOnlineFeaturesResponse.FromString(fixed) == convert._online_messages(found)


@pytest.mark.parametrize("micros", [2**28 * 10**6 - 1, 2**35 * 10**6, 0, -1])
def test_a_time_outside_the_fixed_layout_is_left_to_the_general_one(micros: int) -> None:
    values = np.ones((2, 1))
    times = np.array([[1_767_542_549_000_000], [micros]], dtype=np.int64)
    assert wire_grid.entity_records(3, ["a", "b"], ["f"], values, times) is None
    found = OnlineFeatures(["a", "b"], ["f"], OnlineGrid(values, times, values > 0, True), None)
    limit = convert.NUMPY_FROM_VALUES
    convert.NUMPY_FROM_VALUES = 0
    try:
        assert convert.online_response(found) == convert._online_messages(found)
    finally:
        convert.NUMPY_FROM_VALUES = limit


def test_nanos_in_five_bytes_read_as_the_same_number() -> None:
    # 1 us past a second: nanos 1000, whose minimal varint has two bytes.
    times = np.array([[1_767_542_549_000_001, 1_767_542_549_999_999]], dtype=np.int64)
    fixed = wire_grid.entity_records(1, ["e"], ["a", "b"], np.array([[0.5, -1.0]]), times)
    assert fixed is not None
    entity = pb.EntityFeatures.FromString(fixed[2:])
    stamps = [(f.event_timestamp.seconds, f.event_timestamp.nanos) for f in entity.features]
    assert stamps == [(1_767_542_549, 1000), (1_767_542_549, 999_999_000)]
    assert [f.value for f in entity.features] == [0.5, -1.0]
