"""Two metric types prometheus_client lacks: a histogram that takes a whole array of
observations in one call, and a gauge sampled from a function at most every so often."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

log = logging.getLogger(__name__)


class BulkHistogram(Collector):
    """A histogram without labels fed with numpy arrays: observe_many counts a batch's
    thousands of rows with one searchsorted and one bincount, far faster than
    Histogram.observe, which takes a lock per value (README, Benchmarks)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        bounds = np.asarray(buckets, dtype=np.float64)
        if bounds.size == 0 or np.any(np.diff(bounds) <= 0):
            raise ValueError(f"{name}: buckets must be increasing, got {list(buckets)}")
        self.name = name
        self.documentation = documentation
        self._bounds = bounds
        # Bounds written as Histogram writes them (1.0, 0.5), so queries on le match both.
        written: list[str] = [floatToGoString(b) for b in bounds]  # type: ignore[no-untyped-call]
        self._labels = [*written, "+Inf"]
        self._counts = np.zeros(bounds.size + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        """Count every value (NaN ignored); bucket i holds values <= bound i."""
        values = values[~np.isnan(values)]
        if values.size == 0:
            return
        index = np.searchsorted(self._bounds, values, side="left")
        counts = np.bincount(index, minlength=self._counts.size)
        total = float(values.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def _family(self) -> HistogramMetricFamily:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total = self._sum
        buckets = [(le, float(n)) for le, n in zip(self._labels, cumulative, strict=True)]
        return HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=total
        )

    def describe(self) -> Iterator[Metric]:
        """The family's name and type, without samples."""
        yield HistogramMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[Metric]:
        """The cumulative buckets, count and sum."""
        yield self._family()


Samples = Mapping[tuple[str, ...], float]


class SampledGauge(Collector):
    """A gauge whose samples come from a source function, called at scrape time but at most
    once every max_age_s (in between, a scrape gets the last samples). A failing source
    gives no samples and is logged; with no source set, there are none."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        max_age_s: float,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.max_age_s = max_age_s
        self._source: Callable[[], Samples] | None = None
        self._samples: Samples = {}
        self._taken = -float("inf")
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def set_source(self, source: Callable[[], Samples] | None) -> None:
        """Sample from `source` (label values -> value) from now on; None: no samples."""
        with self._lock:
            self._source = source
            self._samples = {}
            self._taken = -float("inf")

    def _current(self) -> Samples:
        with self._lock:
            if self._source is None:
                return {}
            now = time.monotonic()
            if now - self._taken >= self.max_age_s:
                self._taken = now
                try:
                    self._samples = dict(self._source())
                except Exception as exc:  # noqa: BLE001 - a scrape must not fail with it
                    log.warning(
                        "metric_sample_failed metric=%s error=%s", self.name, type(exc).__name__
                    )
                    self._samples = {}
            return self._samples

    def describe(self) -> Iterator[Metric]:
        """The family's name and type, without samples."""
        yield GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        """The latest samples (taken now when older than max_age_s)."""
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in self._current().items():
            family.add_metric(list(labels), value)
        yield family
