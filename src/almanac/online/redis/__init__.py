"""The Redis online store: one hash per entity and view, Lua scripts for monotonic writes."""

from almanac.online.redis.store import RedisOnlineStore

__all__ = ["RedisOnlineStore"]
