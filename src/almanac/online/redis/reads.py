"""What a Redis read asks for per view, and how the HMGET replies decode into rows.

A read sends one HMGET per entity row covering every requested view of that entity
(`RedisOnlineStore._read_commands` packs them); each view's fields are its event time
then its features (`ReadSpec`). `decode_read` turns the replies, in the order sent, back
into one `ViewRows` per request. Both stores (one node, cluster) decode with it.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from almanac.online.codec import Decoder, redis_decoder
from almanac.online.redis.wire import feature_field, ts_field
from almanac.ports.online import ViewRead, ViewRows


class ReadSpec:
    """Per (view, join keys, features, dtypes): fields to ask for and how to decode."""

    __slots__ = ("decoders", "fields", "group_key", "width")

    def __init__(self, request: ViewRead) -> None:
        self.fields = [ts_field(request.view)] + [
            feature_field(request.view, f) for f in request.features
        ]
        self.decoders: list[Decoder] = [redis_decoder(d) for d in request.dtypes]
        self.width = len(request.features)
        self.group_key = tuple(sorted(request.join_keys))


# How to decode a read's replies: per group of requests sharing one HMGET per entity row,
# its members (request index, spec; their fields in this order) and its number of rows.
ReadLayout: TypeAlias = list[tuple[list[tuple[int, ReadSpec]], int]]


def decode_read(replies: list[Any], layout: ReadLayout, size: int) -> list[ViewRows]:
    """One `ViewRows` per request (`size` of them) from the HMGET replies in sent order."""
    out: list[ViewRows | None] = [None] * size
    start = 0
    for members, count in layout:
        group_replies = replies[start : start + count]
        start += count
        offset = 0
        for index, spec in members:
            out[index] = _decode_view(group_replies, offset, spec)
            offset += spec.width + 1
    return out  # type: ignore[return-value]


def _decode_view(replies: list[list[bytes | None]], offset: int, spec: ReadSpec) -> ViewRows:
    """One view's slice of the HMGET replies (event time at `offset`, then features)."""
    if len(replies) == 1:  # the common single-entity request, without per-column loops
        reply = replies[0]
        stamp = reply[offset]
        if stamp is None:
            return ViewRows([None], [[None] for _ in spec.decoders])
        raws = reply[offset + 1 : offset + 1 + spec.width]
        pairs = zip(spec.decoders, raws, strict=True)
        return ViewRows(
            [int(stamp)], [[None if raw is None else decode(raw)] for decode, raw in pairs]
        )
    times = [None if (raw := reply[offset]) is None else int(raw) for reply in replies]
    columns = []
    for index, decode in enumerate(spec.decoders, offset + 1):
        column = [reply[index] for reply in replies]
        columns.append([None if raw is None else decode(raw) for raw in column])
    return ViewRows(times, columns)
