"""The test servers themselves answer (a failure here explains every integration failure)."""

import psycopg
import redis


def test_redis_server_answers(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("k", "v")
    assert client.get("k") == b"v"


def test_postgres_server_answers(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT 1 + 1").fetchone() == (2,)
