"""Progress of long work: a bar on a terminal, a log line every few seconds otherwise."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType

from tqdm import tqdm

log = logging.getLogger(__name__)


class Progress:
    """Counts units of work toward a total and shows it."""

    def __init__(self, label: str, total: int | None, unit: str = "rows", every_s: float = 2.0):
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self.done = 0
        self._bar = (
            tqdm(total=total, unit=unit, desc=label, file=sys.stderr, mininterval=0.5)
            if sys.stderr.isatty()
            else None
        )
        self._began = self._last = time.monotonic()

    def update(self, n: int) -> None:
        """Add n finished units."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._log(now)

    def _log(self, now: float) -> None:
        rate = self.done / max(now - self._began, 1e-9)
        log.info(
            "progress task=%s done=%d total=%s unit=%s rate_per_s=%.0f",
            self.label,
            self.done,
            self.total if self.total is not None else "-",
            self.unit,
            rate,
        )

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            self._log(time.monotonic())
