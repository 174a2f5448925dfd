"""Ingestion: rows sent to Almanac (pushes), validated at the door."""

from almanac.ingest.push import PUSH_TARGETS, push

__all__ = ["PUSH_TARGETS", "push"]
