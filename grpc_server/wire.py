"""Protobuf wire bytes of a response's repeated entity messages, encoded with numpy at once.

A response for many entities is mostly repeated feature messages: UsedFeature (Predict) and
FeatureValue (GetOnlineFeatures) share one wire shape (field 1 a string, 2 a double, 3 a
google.protobuf.Timestamp, 4 a varint). Built as Python messages, 1,000 of them cost about
1 us each. Here every record is a row of fixed-width parts (a tag, a name, 8 bytes of a
double, ...) of which each record uses the first so many bytes; all rows are laid out in
one array, the unused bytes masked out at the end, and the caller parses the response once
from the result (README, Benchmarks: Serving). Fields go in the order 1, 2, 4, 3 and zeros
are written too: valid protobuf, and gRPC serialises the parsed message, not these bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_SHIFTS = np.arange(0, 70, 7, dtype=np.uint64)
_LOW7 = np.uint64(0x7F)
# A varint's byte k is followed by another when the value is at least 2 ** (7 * (k + 1)).
_NEXT = np.array([1 << (7 * (k + 1)) for k in range(9)], dtype=np.uint64)


@dataclass(frozen=True, slots=True)
class Block:
    """Records side by side, one per row: data (rows, width) holds parts of fixed widths;
    part[c] is the part of column c, offset[c] its place in it, lengths (rows, parts) how
    many bytes of each part a record uses."""

    data: np.ndarray
    lengths: np.ndarray
    part: np.ndarray
    offset: np.ndarray

    def used(self) -> np.ndarray:
        """Which bytes of data the records use."""
        return self.offset < self.lengths[:, self.part]

    def sizes(self) -> np.ndarray:
        """Bytes used by each record."""
        sizes: np.ndarray = self.lengths.sum(axis=1)
        return sizes


def varint(value: int) -> bytes:
    """A non-negative int as a protobuf varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(field: int, data: bytes) -> bytes:
    """One length-delimited field (a string, bytes or an embedded message)."""
    return varint(field << 3 | 2) + varint(len(data)) + data


def varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of int64 values (a negative one in ten bytes, two's complement, as
    protobuf writes it): a (len, 10) uint8 array and the length of each."""
    unsigned = np.ascontiguousarray(values, dtype=np.int64).reshape(-1).view(np.uint64)
    groups = ((unsigned[:, None] >> _SHIFTS) & _LOW7).astype(np.uint8)
    more = unsigned[:, None] >= _NEXT
    groups[:, :9] |= more.view(np.uint8) << 7
    return groups, more.sum(axis=1) + 1


def part(data: np.ndarray, lengths: np.ndarray | int) -> Block:
    """One part: record i uses the first lengths[i] bytes of its row (all rows as many when
    lengths is one number)."""
    rows, width = data.shape
    if isinstance(lengths, int):
        used = np.full((rows, 1), lengths, dtype=np.int64)
    else:
        used = lengths.astype(np.int64, copy=False).reshape(rows, 1)
    return Block(data, used, np.zeros(width, dtype=np.intp), np.arange(width))


def constant(data: bytes, rows: int, lengths: np.ndarray | int | None = None) -> Block:
    """The same bytes in every record (of which each uses lengths[i]; all by default)."""
    block = np.empty((rows, len(data)), dtype=np.uint8)
    block[:] = np.frombuffer(data, dtype=np.uint8)
    return part(block, len(data) if lengths is None else lengths)


def texts(values: Sequence[bytes]) -> Block:
    """Records of different bytes, one each."""
    array = np.array(values, dtype=bytes)
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    return part(array.view(np.uint8).reshape(len(values), array.dtype.itemsize), lengths)


def join(blocks: Sequence[Block]) -> Block:
    """The blocks' records side by side, one record per row."""
    shifted, count = [], 0
    for block in blocks:
        shifted.append(block.part + count if count else block.part)
        count += block.lengths.shape[1]
    return Block(
        np.concatenate([b.data for b in blocks], axis=1),
        np.concatenate([b.lengths for b in blocks], axis=1),
        np.concatenate(shifted),
        np.concatenate([b.offset for b in blocks]),
    )


def field_header(field: int, sizes: np.ndarray) -> Block:
    """Tag and length of a length-delimited field whose body is sizes[i] bytes long (below
    2 MiB, far above any record here: its varint has three bytes at most)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    two, three = sizes >= 1 << 7, sizes >= 1 << 14
    data = np.empty((len(sizes), 4), dtype=np.uint8)
    data[:, 0] = field << 3 | 2
    data[:, 1] = (sizes & 0x7F) | (two << 7)
    data[:, 2] = ((sizes >> 7) & 0x7F) | (three << 7)
    data[:, 3] = sizes >> 14
    return part(data, 2 + two + three)


def string_field(field: int, values: Sequence[str]) -> Block:
    """String field `field`, one value per record."""
    text = texts([v.encode() for v in values])
    return join([field_header(field, text.sizes()), text])


def records(field: int, body: Block, keep: np.ndarray | None = None) -> Block:
    """Each record of `body` as length-delimited field `field`; a record outside `keep` is
    left out whole."""
    header = field_header(field, body.sizes())
    if keep is not None:
        header = Block(header.data, header.lengths * keep[:, None], header.part, header.offset)
    return join([header, body])


def per_row(cells: Block, rows: int) -> Block:
    """Records of a grid (row-major cells) as one run of records per row of the grid."""
    per = cells.data.shape[0] // rows if rows else 0
    parts = cells.lengths.shape[1]
    return Block(
        cells.data.reshape(rows, -1),
        cells.lengths.reshape(rows, -1),
        (cells.part[None, :] + parts * np.arange(per)[:, None]).reshape(-1),
        np.tile(cells.offset, per),
    )


def encode(block: Block) -> bytes:
    """The used bytes of every record, in record order."""
    return bytes(block.data[block.used()].tobytes())


def feature_cells(
    names: Sequence[str],
    values: np.ndarray,
    codes: np.ndarray,
    event_micros: np.ndarray,
    stamped: np.ndarray,
    listed: np.ndarray | None = None,
) -> Block:
    """The bodies of a grid of feature messages (row-major cells): name names[j], value
    values[i, j], code codes[i, j] (below 128) as field 4 and, where stamped, the Timestamp
    of event_micros[i, j] (microseconds since the epoch); cells outside `listed` empty."""
    rows, width = values.shape
    cells = rows * width
    keep = np.ones(cells, dtype=np.int64) if listed is None else listed.reshape(-1).astype(np.int64)
    names_block = texts([length_delimited(1, name.encode()) for name in names])
    column = np.tile(np.arange(width), rows)
    body = np.empty((cells, 11), dtype=np.uint8)
    body[:, 0] = 2 << 3 | 1
    body[:, 1:9] = np.ascontiguousarray(values, dtype="<f8").reshape(-1, 1).view(np.uint8)
    body[:, 9] = 4 << 3
    body[:, 10] = codes.reshape(-1)
    # Timestamps: one per distinct event time (the features of one event share it).
    times, which = np.unique(np.asarray(event_micros, dtype=np.int64), return_inverse=True)
    stamps = _timestamps(times)
    stamp = stamped.reshape(-1).astype(np.int64) * keep
    which = which.reshape(-1)
    stamp_block = Block(
        stamps.data[which], stamps.lengths[which] * stamp[:, None], stamps.part, stamps.offset
    )
    return join(
        [
            part(names_block.data[column], names_block.lengths[column, 0] * keep),
            part(body, 11 * keep),
            stamp_block,
        ]
    )


def _timestamps(micros: np.ndarray) -> Block:
    """Field 3 holding a google.protobuf.Timestamp {1: seconds, 2: nanos} for each time."""
    seconds, rest = np.divmod(micros, 1_000_000)
    second_bytes, second_sizes = varints(seconds)
    nano_bytes, nano_sizes = varints(rest * 1000)
    head = np.empty((len(micros), 3), dtype=np.uint8)
    head[:, 0] = 3 << 3 | 2
    head[:, 1] = 2 + second_sizes + nano_sizes
    head[:, 2] = 1 << 3
    nano_tag = np.full((len(micros), 1), 2 << 3, dtype=np.uint8)
    return join(
        [
            part(head, 3),
            part(second_bytes, second_sizes),
            part(nano_tag, 1),
            part(nano_bytes[:, :5], nano_sizes),  # nanos < 2 ** 35: five bytes at most
        ]
    )


def output_part(name: str, rows: np.ndarray) -> Block:
    """Per row of a (rows, k) float64 array, the body of a message {1: name, 2: packed
    doubles}: ModelOutput's shape for numbers."""
    count, width = rows.shape
    head = length_delimited(1, name.encode())
    if width:
        head += varint(2 << 3 | 2) + varint(8 * width)
    data = np.empty((count, len(head) + 8 * width), dtype=np.uint8)
    data[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    data[:, len(head) :] = np.ascontiguousarray(rows, dtype="<f8").view(np.uint8).reshape(count, -1)
    return part(data, len(head) + 8 * width)
