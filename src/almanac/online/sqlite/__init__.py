"""The SQLite online store (the embedded default): one file, no server."""

from almanac.online.sqlite.store import SqliteOnlineStore

__all__ = ["SqliteOnlineStore"]
