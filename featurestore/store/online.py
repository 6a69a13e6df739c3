"""Online store in Redis: the latest value of each (entity, feature), newest event wins."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyarrow as pa
import redis

from featurestore.constants import online_feature_key

# One hash per entity; a field holds "<event_timestamp micros>:<value>". A field is only
# overwritten by a value at least as new, so batches applied out of order (or twice)
# still leave the newest value. ARGV[i] packs KEYS[i]'s updates as records
# "field US micros US value RS" (US = \x1f, RS = \x1e): one string per entity, because
# encoding one argument per field costs more in the client than the script itself.
_SET_IF_NEWER = """
local changed = 0
for i = 1, #KEYS do
  local fields, micros, values = {}, {}, {}
  for f, m, v in string.gmatch(ARGV[i], '([^\\31]*)\\31(%-?%d+)\\31([^\\30]*)\\30') do
    fields[#fields + 1] = f
    micros[#micros + 1] = tonumber(m)
    values[#values + 1] = m .. ':' .. v
  end
  local old = redis.call('HMGET', KEYS[i], unpack(fields))
  local updates = {}
  for j = 1, #fields do
    local stored = old[j]
    if (not stored) or tonumber(string.match(stored, '^(-?%d+):')) <= micros[j] then
      updates[#updates + 1] = fields[j]
      updates[#updates + 1] = values[j]
    end
  end
  if #updates > 0 then
    redis.call('HSET', KEYS[i], unpack(updates))
    changed = changed + #updates / 2
  end
end
return changed
"""

_ENTITIES_PER_CALL = 1000
_EPOCH = dt.datetime(1970, 1, 1)
# At most this many fields of one entity per record string: keeps unpack() in the script
# far below Lua's stack limit.
MAX_FIELDS_PER_RECORD = 500


def online_updates_sql(source: str) -> str:
    """SQL giving, for a table of feature rows, one (entity_id, updates) row per entity
    chunk: the newest value of each of its features, packed for apply_updates."""
    return f"""
    SELECT entity_id,
           string_agg(feature_name || chr(31) || micros::VARCHAR || chr(31) || value::VARCHAR
                      || chr(30), '') AS updates
    FROM (SELECT entity_id, feature_name, value, epoch_us(ts) AS micros,
                 (row_number() OVER (PARTITION BY entity_id ORDER BY feature_name) - 1)
                   // {MAX_FIELDS_PER_RECORD} AS part
          FROM (SELECT entity_id, feature_name, arg_max(value, (event_timestamp, value)) AS value,
                       max(event_timestamp) AS ts
                FROM {source} GROUP BY entity_id, feature_name))
    GROUP BY entity_id, part
    """


def as_text(value: bytes | str) -> str:
    """A Redis reply as text (clients may or may not decode responses)."""
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class OnlineValue:
    """The latest value of one feature of one entity."""

    feature_name: str
    value: float
    event_timestamp: dt.datetime


def parse_stored(stored: bytes | str) -> tuple[int, float]:
    """One hash field's "<event micros>:<value>" as (event micros, value)."""
    # int() and float() take bytes: no decode (half the cost of decode_value on a Predict).
    raw = stored if isinstance(stored, bytes) else stored.encode()
    micros, _, value = raw.partition(b":")
    return int(micros), float(value)


def from_micros(micros: int) -> dt.datetime:
    """A stored event time (microseconds since the epoch) as a naive UTC datetime."""
    return _EPOCH + dt.timedelta(microseconds=micros)


def decode_value(feature_name: str, stored: bytes | str) -> OnlineValue:
    """One hash field's "<event micros>:<value>" as an OnlineValue."""
    micros, value = parse_stored(stored)
    return OnlineValue(feature_name=feature_name, value=value, event_timestamp=from_micros(micros))


class OnlineStore:
    """Latest feature values per entity, kept in Redis hashes."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._script = client.register_script(_SET_IF_NEWER)

    def apply_updates(self, updates_table: pa.Table) -> int:
        """Apply rows (entity_id, updates) where updates packs the entity's newest values
        as the script reads them (see online_updates_sql); returns fields written."""
        entities = updates_table.column("entity_id").to_pylist()
        updates = updates_table.column("updates").to_pylist()
        changed = 0
        for start in range(0, len(entities), _ENTITIES_PER_CALL):
            stop = start + _ENTITIES_PER_CALL
            keys = [online_feature_key(e) for e in entities[start:stop]]
            changed += int(self._script(keys=keys, args=updates[start:stop]))
        return changed

    def get(self, entity_id: str) -> dict[str, OnlineValue]:
        """Latest values of every feature of one entity (empty when unknown)."""
        raw = self.client.hgetall(online_feature_key(entity_id))
        return {as_text(f): decode_value(as_text(f), stored) for f, stored in raw.items()}
