"""BulkHistogram counts as Histogram does; SampledGauge samples at most every max_age_s."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from featurestore.collectors import BulkHistogram, SampledGauge

BUCKETS = (0.5, 1.0, 2.0, 10.0)


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    """(sample name, le) -> value of one family, _created samples left out."""
    return {
        (s.name, s.labels.get("le", "")): s.value
        for family in registry.collect()
        if family.name == name
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_bulk_histogram_counts_as_histogram_does() -> None:
    values = np.array([0.1, 0.5, 0.500001, 1.0, 1.5, 2.0, 9.9, 10.0, 11.0, 1e9, 0.0])
    bulk_registry, plain_registry = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("fstore_age_seconds", "age", BUCKETS, registry=bulk_registry)
    plain = Histogram("fstore_age_seconds", "age", buckets=BUCKETS, registry=plain_registry)
    bulk.observe_many(values[:4])
    bulk.observe_many(values[4:])
    for value in values:
        plain.observe(float(value))
    expected = samples(plain_registry, "fstore_age_seconds")
    assert samples(bulk_registry, "fstore_age_seconds") == pytest.approx(expected)
    assert expected[("fstore_age_seconds_bucket", "0.5")] == 3  # a bound is inside its bucket


def test_bulk_histogram_ignores_nan_and_empty_arrays() -> None:
    registry = CollectorRegistry()
    bulk = BulkHistogram("fstore_age_seconds", "age", BUCKETS, registry=registry)
    bulk.observe_many(np.array([np.nan, 3.0]))
    bulk.observe_many(np.array([], dtype=np.float64))
    got = samples(registry, "fstore_age_seconds")
    assert got[("fstore_age_seconds_count", "")] == 1
    assert got[("fstore_age_seconds_sum", "")] == 3.0
    assert got[("fstore_age_seconds_bucket", "2.0")] == 0
    assert got[("fstore_age_seconds_bucket", "10.0")] == 1


def test_bulk_histogram_refuses_buckets_out_of_order() -> None:
    with pytest.raises(ValueError, match=r"fstore_x_seconds: buckets must be increasing"):
        BulkHistogram("fstore_x_seconds", "x", (1.0, 0.5), registry=None)


def test_sampled_gauge_calls_its_source_at_most_every_max_age() -> None:
    registry = CollectorRegistry()
    gauge = SampledGauge("fstore_rows", "rows", ["table"], max_age_s=3600, registry=registry)
    assert samples(registry, "fstore_rows") == {}  # no source yet
    calls: list[int] = []

    def source() -> dict[tuple[str, ...], float]:
        calls.append(1)
        return {("features",): float(len(calls)), ("models",): 2.0}

    gauge.set_source(source)
    for _ in range(3):
        assert registry.get_sample_value("fstore_rows", {"table": "features"}) == 1.0
    assert registry.get_sample_value("fstore_rows", {"table": "models"}) == 2.0
    assert len(calls) == 1
    gauge.max_age_s = 0
    assert registry.get_sample_value("fstore_rows", {"table": "features"}) == 2.0
    gauge.set_source(None)
    assert registry.get_sample_value("fstore_rows", {"table": "features"}) is None


def test_a_failing_source_gives_no_samples_and_is_asked_again_later() -> None:
    registry = CollectorRegistry()
    gauge = SampledGauge("fstore_rows", "rows", ["table"], max_age_s=0, registry=registry)
    answers: list[dict[tuple[str, ...], float] | None] = [None, {("t",): 5.0}]

    def source() -> dict[tuple[str, ...], float]:
        answer = answers.pop(0)
        if answer is None:
            raise OSError("database closed")
        return answer

    gauge.set_source(source)
    assert registry.get_sample_value("fstore_rows", {"table": "t"}) is None
    assert registry.get_sample_value("fstore_rows", {"table": "t"}) == 5.0
