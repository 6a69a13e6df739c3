"""Online store in Redis: the latest value of each (entity, feature), newest event wins."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyarrow as pa
import redis

from featurestore.constants import online_feature_key

# Fields hold "<event_timestamp micros>:<value>"; a write only wins when its timestamp
# is at least as new, so batches applied out of order still leave the newest value.
_SET_IF_NEWER = """
local n = 0
for i = 1, #KEYS do
  local base = (i - 1) * 3
  local field, ts, value = ARGV[base + 1], tonumber(ARGV[base + 2]), ARGV[base + 3]
  local old = redis.call('HGET', KEYS[i], field)
  if (not old) or tonumber(string.match(old, '^(-?%d+):')) <= ts then
    redis.call('HSET', KEYS[i], field, ARGV[base + 2] .. ':' .. value)
    n = n + 1
  end
end
return n
"""

_CHUNK = 2000


def as_text(value: bytes | str) -> str:
    """A Redis reply as text (clients may or may not decode responses)."""
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class OnlineValue:
    """The latest value of one feature of one entity."""

    feature_name: str
    value: float
    event_timestamp: dt.datetime


class OnlineStore:
    """Latest feature values per entity, kept in Redis hashes."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._script = client.register_script(_SET_IF_NEWER)

    def apply_latest(self, latest: pa.Table) -> int:
        """Apply rows (entity_id, feature_name, value, event_timestamp), one per pair."""
        entities = latest.column("entity_id").to_pylist()
        features = latest.column("feature_name").to_pylist()
        values = latest.column("value").to_pylist()
        micros = latest.column("event_timestamp").cast(pa.int64()).to_pylist()
        changed = 0
        for start in range(0, len(entities), _CHUNK):
            stop = start + _CHUNK
            keys = [online_feature_key(e) for e in entities[start:stop]]
            args: list[str | int | float] = []
            for feature, ts, value in zip(
                features[start:stop], micros[start:stop], values[start:stop], strict=True
            ):
                args.extend((feature, ts, repr(value)))
            changed += int(self._script(keys=keys, args=args))
        return changed

    def get(self, entity_id: str) -> dict[str, OnlineValue]:
        """Latest values of every feature of one entity (empty when unknown)."""
        raw = self.client.hgetall(online_feature_key(entity_id))
        result: dict[str, OnlineValue] = {}
        for field, stored in raw.items():
            ts_text, _, value_text = as_text(stored).partition(":")
            name = as_text(field)
            result[name] = OnlineValue(
                feature_name=name,
                value=float(value_text),
                event_timestamp=dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=int(ts_text)),
            )
        return result
