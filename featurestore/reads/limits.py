"""The bounds of one read: a deadline, rows and bytes of its result (README, "Reads").

The DuckDB service enforces them itself: a read past its deadline is interrupted inside
DuckDB (featurestore.store.watchdog), rows and bytes are counted while the result is
fetched, so a huge result is never built, and the encoded result is measured before it is
sent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from featurestore.errors import QueryTimeoutError, ReadLimitError
from featurestore.reads import result_format
from featurestore.settings import Settings


@dataclass(frozen=True)
class ReadLimits:
    """What one read may take: seconds at most, rows and bytes of its result."""

    seconds: float
    max_rows: int
    max_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadLimits:
        """The limits the settings give (read_time_limit_s, read_max_rows, read_max_bytes)."""
        return cls(settings.read_time_limit_s, settings.read_max_rows, settings.read_max_bytes)

    def times(self, reads: int) -> ReadLimits:
        """The limits of one statement that runs `reads` reads together."""
        return ReadLimits(self.seconds, self.max_rows * reads, self.max_bytes * reads)

    def too_many_rows(self) -> ReadLimitError:
        """The error of a result past the row limit."""
        return ReadLimitError(
            f"the result has more than {self.max_rows:,} rows, the read path's limit "
            "(FSTORE_READ_MAX_ROWS); ask for fewer rows, or build a training set instead"
        )

    def too_many_bytes(self) -> ReadLimitError:
        """The error of a result past the byte limit."""
        return ReadLimitError(
            f"the result is larger than {self.max_bytes:,} bytes, the read path's limit "
            "(FSTORE_READ_MAX_BYTES); ask for fewer rows or columns"
        )

    def encode(self, result: result_format.Result) -> bytes:
        """The result's bytes (reads.result_format); ReadLimitError past the byte limit."""
        payload = result_format.encode(result)
        if len(payload) > self.max_bytes:
            raise self.too_many_bytes()
        return payload


# For reads in-process without limits of their own (tools, tests).
UNBOUNDED = ReadLimits(seconds=24 * 3600.0, max_rows=2**62, max_bytes=2**62)


@dataclass(frozen=True)
class Deadline:
    """When a read must have ended (time.monotonic), and the limit that set it."""

    at: float
    seconds: float
    by_caller: bool

    @classmethod
    def for_read(cls, caller_deadline: float | None, limit_s: float) -> Deadline:
        """The earlier of the caller's deadline (wall-clock, time.time()) and limit_s from
        now. A caller's deadline already past gives a deadline that has passed."""
        now = time.monotonic()
        if caller_deadline is not None:
            left = caller_deadline - time.time()
            if left < limit_s:
                return cls(now + left, left, by_caller=True)
        return cls(now + limit_s, limit_s, by_caller=False)

    def passed(self) -> bool:
        """Whether the deadline has passed."""
        return time.monotonic() >= self.at

    def error(self) -> QueryTimeoutError:
        """The error of a read stopped at this deadline."""
        if not self.by_caller:
            return QueryTimeoutError(
                f"the read was stopped in the DuckDB service at its time limit of "
                f"{self.seconds:.3g} s (FSTORE_READ_TIME_LIMIT_S)"
            )
        if self.seconds <= 0:
            return QueryTimeoutError(
                "the read's deadline passed before the DuckDB service started it "
                f"({-self.seconds:.3g} s ago: it waited in the queue)"
            )
        return QueryTimeoutError(
            "the read was stopped in the DuckDB service at its caller's deadline "
            f"({self.seconds:.3g} s after the service took it)"
        )
