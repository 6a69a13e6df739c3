"""Online store in Redis: the latest value of each (entity, feature), newest event wins."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import redis

from featurestore.constants import online_feature_key
from featurestore.store.merger import NEWEST
from featurestore.store.online_grid import OnlineGrid, parse_grid

# One hash per entity; a field holds "<event micros>:<value>:<created micros>". A field is
# only overwritten by a newer value under the rule of the latest-values table and the
# training sets (featurestore.store.merger.NEWEST): the later event_timestamp, then the
# later created_at (the row DuckDB wrote last; a redelivered row keeps its first write's),
# then the larger value. So batches applied in any order, or twice, leave DuckDB's newest
# value. A value stored without its created micros (written before the rule) counts as
# older than any other at its event time; one that does not parse is replaced.
# ARGV[i] packs KEYS[i]'s updates as records "field US micros:value:created RS" (US = \x1f,
# RS = \x1e; the part after US is the value stored as is): one string per entity, because
# encoding one argument per field costs more in the client than the script itself. The
# script parses an update's micros, and a stored value's created micros and value, only
# when the field is already stored (and the last two only on an event-time tie), and
# reuses its tables across keys: with a table per record, or the update built from four
# captures, it cost Redis 1.4-1.6x more CPU (README, Benchmarks and Freshness). Records
# "field US micros US value US created RS" (the earlier form, which tests and benchmarks
# build) are taken too.
_SET_IF_NEWER = """
local function newer(update, stored)
  local s_micros = tonumber(string.match(stored, '^(-?%d+):'))
  if not s_micros then return true end
  local micros, value, created = string.match(update, '^(-?%d+):([^:]*):(-?%d+)$')
  micros = tonumber(micros)
  if micros ~= s_micros then return micros > s_micros end
  -- A tie on the event time (rare): only then is the rest of the stored value read.
  local s_value, s_created = string.match(stored, '^-?%d+:([^:]*):?(-?%d*)$')
  s_value, s_created = tonumber(s_value), tonumber(s_created)
  if not (s_value and s_created) then return true end
  created = tonumber(created)
  if created ~= s_created then return created > s_created end
  return tonumber(value) > s_value
end
local changed = 0
local fields, values, updates = {}, {}, {}
for i = 1, #KEYS do
  local n = 0
  for f, v in string.gmatch(ARGV[i], '([^\\31]*)\\31([^\\30]*)\\30') do
    n = n + 1
    if string.find(v, '\\31', 1, true) then v = string.gsub(v, '\\31', ':') end
    fields[n], values[n] = f, v
  end
  local old = redis.call('HMGET', KEYS[i], unpack(fields, 1, n))
  local u = 0
  for j = 1, n do
    if (not old[j]) or newer(values[j], old[j]) then
      updates[u + 1], updates[u + 2] = fields[j], values[j]
      u = u + 2
    end
  end
  if u > 0 then
    redis.call('HSET', KEYS[i], unpack(updates, 1, u))
    changed = changed + u / 2
  end
end
return changed
"""

# The same fields of many hashes in one command: KEYS the hashes, ARGV the field names; one
# HMGET reply (nil where absent) per key. One script call, unlike a pipeline of HMGETs,
# costs the client one command to encode and one reply to parse whatever the number of
# entities. Redis spends more on the script than on the HMGETs, but less than the client
# saves, and the client (the gRPC process) is the one short of CPU (README, Benchmarks:
# Serving). Names go to HMGET 500 at a time so that unpack() stays far below Lua's stack
# limit.
_HMGET_MANY = """
local n, step = #ARGV, 500
local replies = {}
for i = 1, #KEYS do
  if n <= step then
    replies[i] = redis.call('HMGET', KEYS[i], unpack(ARGV))
  else
    local row = {}
    for first = 1, n, step do
      local part = redis.call('HMGET', KEYS[i], unpack(ARGV, first, math.min(first + step - 1, n)))
      for j = 1, #part do row[#row + 1] = part[j] end
    end
    replies[i] = row
  end
end
return replies
"""

_ENTITIES_PER_CALL = 1000
_EPOCH = dt.datetime(1970, 1, 1)
# At most this many fields of one entity per record string: keeps unpack() in the script
# far below Lua's stack limit.
MAX_FIELDS_PER_RECORD = 500


def online_updates_sql(source: str) -> str:
    """SQL giving, for a table of feature rows with their created_at, one (entity_id, updates)
    row per entity chunk: the newest value of each of its features, packed for
    apply_updates."""
    return f"""
    SELECT entity_id,
           string_agg(feature_name || chr(31) || epoch_us(newest.event_timestamp)::VARCHAR
                      || ':' || newest.value::VARCHAR || ':'
                      || epoch_us(newest.created_at)::VARCHAR || chr(30), '') AS updates
    FROM (SELECT entity_id, feature_name, newest,
                 (row_number() OVER (PARTITION BY entity_id ORDER BY feature_name) - 1)
                   // {MAX_FIELDS_PER_RECORD} AS part
          FROM (SELECT entity_id, feature_name,
                       arg_max({{'value': value, 'event_timestamp': event_timestamp,
                                 'created_at': created_at}}, {NEWEST}) AS newest
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
    """One hash field's "<event micros>:<value>[:<created micros>]" as (event micros, value)."""
    # int() and float() take bytes: no decode, cheaper than decode_value on a Predict
    # (README, Benchmarks).
    raw = stored if isinstance(stored, bytes) else stored.encode()
    parts = raw.split(b":", 2)
    return int(parts[0]), float(parts[1])


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

    def fields(
        self, entity_ids: Sequence[str], names: Sequence[str]
    ) -> list[list[bytes | str | None]]:
        """The stored text of the named fields of each entity, in order (None where the
        entity has no such field), in one round trip."""
        keys = [online_feature_key(e) for e in entity_ids]
        if not names:
            return [[] for _ in keys]
        if len(keys) == 1:
            # A plain HMGET: one entity, the most common Predict, costs less than the script.
            return [self.client.hmget(keys[0], names)]
        # EVAL, not EVALSHA: always one round trip, also the first call after Redis started
        # (EVALSHA then fails with NOSCRIPT and needs two more); Redis caches the compiled
        # script by its hash either way.
        replies: list[list[bytes | str | None]] = self.client.eval(
            _HMGET_MANY, len(keys), *keys, *names
        )
        return replies

    def grid(self, entity_ids: Sequence[str], names: Sequence[str]) -> OnlineGrid:
        """The named features of each entity as arrays (see fields), in one round trip."""
        return parse_grid(self.fields(entity_ids, names), len(names))

    def get(self, entity_id: str) -> dict[str, OnlineValue]:
        """Latest values of every feature of one entity (empty when unknown)."""
        raw = self.client.hgetall(online_feature_key(entity_id))
        return {as_text(f): decode_value(as_text(f), stored) for f, stored in raw.items()}
