"""Online store in Redis: the latest value of each (entity, feature), newest event wins."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

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


def hmget_many(
    pool: redis.ConnectionPool, keys: Sequence[str], names: Sequence[str]
) -> list[list[bytes | str | None]]:
    """HMGET of the same names on every key: the commands packed by hand and sent at once,
    one reply read per key (one round trip)."""
    # Not redis-py's pipeline (0.9-1.0 ms of client CPU for 100 x 10: a command object,
    # packing and a callback each) and not a Lua loop of HMGETs in one EVAL (the client's
    # CPU alike, but Redis spends 0.52 ms on the script against 0.18-0.23 ms on the 100
    # HMGETs, and the server waits for it; README, Benchmarks: Serving).
    tail = b"".join(b"$%d\r\n%b\r\n" % (len(n), n) for n in (x.encode() for x in names))
    head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(names) + 2)
    packed = b"".join(
        [head + b"$%d\r\n%b\r\n" % (len(k), k) + tail for k in (x.encode() for x in keys)]
    )
    conn = pool.get_connection()

    def send() -> list[list[bytes | str | None]]:
        conn.send_packed_command([packed])  # type: ignore[no-untyped-call]
        read = conn.read_response
        return [read() for _ in keys]

    def fail(_error: Exception) -> None:
        conn.disconnect()  # type: ignore[no-untyped-call]

    try:
        return conn.retry.call_with_retry(send, fail)
    except BaseException:
        # Replies left unread (an error reply midway, an interrupt) would be read by the
        # connection's next command.
        conn.disconnect()  # type: ignore[no-untyped-call]
        raise
    finally:
        pool.release(conn)


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
            # A plain HMGET: one entity, the most common Predict, costs less than a pipeline.
            return [self.client.hmget(keys[0], names)]
        if self.client.connection is not None:  # a single-connection client: no pool
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, names)
            return cast(list[list[bytes | str | None]], pipe.execute())
        return hmget_many(self.client.connection_pool, keys, names)

    def grid(self, entity_ids: Sequence[str], names: Sequence[str]) -> OnlineGrid:
        """The named features of each entity as arrays (see fields), in one round trip."""
        return parse_grid(self.fields(entity_ids, names), len(names))

    def get(self, entity_id: str) -> dict[str, OnlineValue]:
        """Latest values of every feature of one entity (empty when unknown)."""
        raw = self.client.hgetall(online_feature_key(entity_id))
        return {as_text(f): decode_value(as_text(f), stored) for f, stored in raw.items()}
